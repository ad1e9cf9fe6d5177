"""Paired comparison of the tuned model with the base: win rates and mean differences.

Every measurement is an `Observation`: a value of one metric for one unit (a
prompt, or a prompt's question) and one model, in a group (all, a style, a
category, a question type). Units are paired across the two models, since both
rendered the same prompts with the same seeds; a unit's value is the mean over its
images. For every (metric, group):

- **win rate** of tuned over base: the share of units where tuned scores higher,
  ties counting half, with a **Wilson score 95% interval** on that share over the
  n units (with ties, the plug-in Wilson interval of the half-counted share).
  Wins, ties and losses are reported too, so the rate without ties can be read off.
- **mean difference** tuned - base, with a **paired bootstrap 95% interval**
  (percentile, resampling units with replacement, seeded: the same inputs give the
  same interval).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from statistics import NormalDist, fmean
from typing import Any, Literal

import numpy as np

ModelRole = Literal["base", "tuned"]
CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000
ALL = "all"
"""The group of every unit of a suite."""
STATISTICS_NOTE = (
    "Units (prompts, or a prompt's questions for breakdowns by question type) are paired "
    "across the two models, which rendered the same prompts with the same seeds; a unit's "
    "value is the mean over its images. Win rate: share of units where tuned scores higher "
    "than base, ties counting half, with a Wilson score 95% interval over the n units. "
    "Mean difference tuned - base: paired percentile bootstrap 95% interval "
    f"({BOOTSTRAP_RESAMPLES} resamples, seeded). VLM judge: each question asked with the "
    "tuned image first and with the base image first; each order is one vote, the pair is "
    "won by the model with more votes and tied otherwise."
)


@dataclass(frozen=True)
class Observation:
    suite: str
    metric: str
    group: str
    unit: str
    model: ModelRole
    value: float


@dataclass(frozen=True)
class Interval:
    low: float
    high: float


@dataclass(frozen=True)
class WinRate:
    wins: int
    ties: int
    losses: int
    rate: float
    """(wins + ties / 2) / n."""
    interval: Interval

    @property
    def count(self) -> int:
        return self.wins + self.ties + self.losses


@dataclass(frozen=True)
class Comparison:
    """Tuned against base on one metric, over the paired units of one group."""

    suite: str
    metric: str
    group: str
    units: int
    base_mean: float
    tuned_mean: float
    difference: float
    difference_interval: Interval
    win_rate: WinRate

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def z_value(confidence: float = CONFIDENCE) -> float:
    """The standard normal quantile of a two-sided `confidence` interval (1.96 for 95%)."""
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson_interval(successes: float, count: int, confidence: float = CONFIDENCE) -> Interval:
    """Wilson score interval of a proportion `successes / count`."""
    if count == 0:
        return Interval(math.nan, math.nan)
    z = z_value(confidence)
    share = successes / count
    denominator = 1 + z * z / count
    centre = (share + z * z / (2 * count)) / denominator
    half_width = z * math.sqrt(share * (1 - share) / count + z * z / (4 * count * count))
    half_width /= denominator
    return Interval(max(0.0, centre - half_width), min(1.0, centre + half_width))


def win_rate(
    base: Sequence[float], tuned: Sequence[float], confidence: float = CONFIDENCE
) -> WinRate:
    """How often `tuned[i]` beats `base[i]`; equal values are ties and count half."""
    if len(base) != len(tuned):
        raise ValueError(f"Unpaired values: {len(base)} base, {len(tuned)} tuned.")
    wins = sum(t > b for b, t in zip(base, tuned, strict=True))
    losses = sum(t < b for b, t in zip(base, tuned, strict=True))
    ties = len(base) - wins - losses
    successes = wins + ties / 2
    rate = successes / len(base) if base else math.nan
    return WinRate(wins, ties, losses, rate, wilson_interval(successes, len(base), confidence))


def bootstrap_mean_difference(
    base: Sequence[float],
    tuned: Sequence[float],
    *,
    seed: int = 0,
    resamples: int = BOOTSTRAP_RESAMPLES,
    confidence: float = CONFIDENCE,
) -> Interval:
    """Percentile bootstrap interval of mean(tuned - base) over paired units."""
    differences = np.asarray(tuned, dtype=float) - np.asarray(base, dtype=float)
    if differences.size == 0:
        return Interval(math.nan, math.nan)
    generator = np.random.default_rng(seed)
    picks = generator.integers(0, differences.size, size=(resamples, differences.size))
    means = differences[picks].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return Interval(float(low), float(high))


def compare(observations: Iterable[Observation], *, seed: int = 0) -> list[Comparison]:
    """One `Comparison` per (suite, metric, group), in first-seen order.

    Units measured for only one model (e.g. an image that failed) are left out of
    their group, and a group without any paired unit is left out; NaN values (nothing
    to measure) are dropped before averaging.
    """
    values: dict[tuple[str, str, str], dict[str, dict[ModelRole, list[float]]]] = defaultdict(
        lambda: defaultdict(lambda: {"base": [], "tuned": []})
    )
    for item in observations:
        if not math.isnan(item.value):
            values[(item.suite, item.metric, item.group)][item.unit][item.model].append(item.value)
    comparisons = []
    for (suite, metric, group), units in values.items():
        paired = [
            (fmean(by_model["base"]), fmean(by_model["tuned"]))
            for by_model in units.values()
            if by_model["base"] and by_model["tuned"]
        ]
        if not paired:
            continue
        base = [b for b, _ in paired]
        tuned = [t for _, t in paired]
        comparisons.append(
            Comparison(
                suite=suite,
                metric=metric,
                group=group,
                units=len(paired),
                base_mean=fmean(base),
                tuned_mean=fmean(tuned),
                difference=fmean(tuned) - fmean(base),
                difference_interval=bootstrap_mean_difference(base, tuned, seed=seed),
                win_rate=win_rate(base, tuned),
            )
        )
    return comparisons
