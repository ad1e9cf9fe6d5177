"""Win rates, Wilson intervals and paired bootstrap intervals, against independent
computations: hand counts, the Wilson interval found as the roots of its score test
by bisection, and the coverage of a known difference over many synthetic samples."""

import math
import random

import numpy as np
import pytest

from agfsync.evaluation.metrics import (
    ALL,
    Observation,
    bootstrap_mean_difference,
    compare,
    wilson_interval,
    win_rate,
)

Z_95 = 1.959963984540054


def wilson_by_bisection(successes: float, count: int) -> tuple[float, float]:
    """The Wilson interval is the set of p whose score test accepts the observed share:
    |share - p| <= z * sqrt(p (1 - p) / n). Its ends are found by bisection on each side
    of the share, without the closed form."""
    share = successes / count

    def outside(p: float) -> bool:
        return abs(share - p) > Z_95 * math.sqrt(p * (1 - p) / count)

    def boundary(inside: float, out: float) -> float:
        for _ in range(200):
            middle = (inside + out) / 2
            if outside(middle):
                out = middle
            else:
                inside = middle
        return (inside + out) / 2

    low = 0.0 if not outside(0.0) else boundary(share, 0.0)
    high = 1.0 if not outside(1.0) else boundary(share, 1.0)
    return low, high


class TestWinRate:
    def test_counts_ties_as_half(self) -> None:
        base = [1.0, 2.0, 3.0, 4.0, 5.0]
        tuned = [2.0, 2.0, 1.0, 5.0, 9.0]  # win, tie, loss, win, win
        result = win_rate(base, tuned)
        assert (result.wins, result.ties, result.losses) == (3, 1, 1)
        assert result.rate == pytest.approx(3.5 / 5)

    @pytest.mark.parametrize(("successes", "count"), [(8, 10), (3.5, 5), (0, 7), (20, 20), (1, 3)])
    def test_wilson_interval_matches_the_score_test_roots(
        self, successes: float, count: int
    ) -> None:
        interval = wilson_interval(successes, count)
        low, high = wilson_by_bisection(successes, count)
        assert interval.low == pytest.approx(low, abs=1e-9)
        assert interval.high == pytest.approx(high, abs=1e-9)

    def test_wilson_interval_hand_value(self) -> None:
        # 8 of 10: the textbook Wilson 95% interval is (0.490, 0.943).
        interval = wilson_interval(8, 10)
        assert (round(interval.low, 3), round(interval.high, 3)) == (0.49, 0.943)

    def test_all_ties_is_one_half_with_a_symmetric_interval(self) -> None:
        result = win_rate([1.0] * 12, [1.0] * 12)
        assert result.rate == 0.5
        assert result.interval.low == pytest.approx(1 - result.interval.high)

    def test_refuses_unpaired_values(self) -> None:
        with pytest.raises(ValueError, match="Unpaired"):
            win_rate([1.0, 2.0], [1.0])


class TestBootstrap:
    def test_same_seed_same_interval_other_seed_other_interval(self) -> None:
        generator = random.Random(3)
        base = [generator.gauss(50, 10) for _ in range(40)]
        tuned = [value + generator.gauss(1, 5) for value in base]
        first = bootstrap_mean_difference(base, tuned, seed=7)
        assert bootstrap_mean_difference(base, tuned, seed=7) == first
        assert bootstrap_mean_difference(base, tuned, seed=8) != first
        mean = sum(t - b for b, t in zip(base, tuned, strict=True)) / len(base)
        assert first.low < mean < first.high

    def test_covers_the_true_difference_about_95_percent_of_the_time(self) -> None:
        true_difference = 1.5
        generator = np.random.default_rng(2024)
        trials = 300
        covered = 0
        for trial in range(trials):
            base = generator.normal(60, 8, size=60)
            tuned = base + generator.normal(true_difference, 4, size=60)
            interval = bootstrap_mean_difference(
                base.tolist(), tuned.tolist(), seed=trial, resamples=1000
            )
            covered += interval.low <= true_difference <= interval.high
        # Binomial(300, 0.95) lies in [0.91, 0.98] with probability > 0.999; percentile
        # bootstrap intervals run slightly narrow at n = 60.
        assert 0.91 <= covered / trials <= 0.98

    def test_matches_the_normal_approximation_on_a_large_sample(self) -> None:
        generator = np.random.default_rng(0)
        base = generator.normal(0, 1, size=400)
        tuned = base + generator.normal(0.2, 1, size=400)
        differences = tuned - base
        interval = bootstrap_mean_difference(base.tolist(), tuned.tolist(), resamples=4000)
        half_width = Z_95 * differences.std() / math.sqrt(differences.size)
        assert interval.low == pytest.approx(differences.mean() - half_width, abs=0.006)
        assert interval.high == pytest.approx(differences.mean() + half_width, abs=0.006)


class TestCompare:
    def test_pairs_units_across_models_and_averages_their_images(self) -> None:
        observations = [
            # prompt a: two images each; tuned mean 3 > base mean 2.
            Observation("s", "clip", ALL, "a", "base", 1.0),
            Observation("s", "clip", ALL, "a", "base", 3.0),
            Observation("s", "clip", ALL, "a", "tuned", 2.0),
            Observation("s", "clip", ALL, "a", "tuned", 4.0),
            # prompt b: a tie.
            Observation("s", "clip", ALL, "b", "base", 5.0),
            Observation("s", "clip", ALL, "b", "tuned", 5.0),
            # prompt c: only the base image was measured, so it is left out.
            Observation("s", "clip", ALL, "c", "base", 9.0),
            # NaN (nothing to measure) is dropped.
            Observation("s", "clip", ALL, "b", "tuned", math.nan),
            Observation("s", "clip", "anime", "a", "base", 1.0),
            Observation("s", "clip", "anime", "a", "tuned", 0.0),
        ]
        overall, anime = compare(observations)
        assert (overall.group, overall.units) == (ALL, 2)
        assert overall.base_mean == pytest.approx((2 + 5) / 2)
        assert overall.tuned_mean == pytest.approx((3 + 5) / 2)
        assert overall.difference == pytest.approx(0.5)
        assert (overall.win_rate.wins, overall.win_rate.ties, overall.win_rate.losses) == (1, 1, 0)
        assert (anime.group, anime.win_rate.losses, anime.difference) == ("anime", 1, -1.0)
