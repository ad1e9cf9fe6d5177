import math

import pytest

from agfsync.pairs import NoPairError, select_preference_pair
from agfsync.scoring import weighted_scores


class TestSelectPreferencePair:
    def test_picks_argmax_and_argmin(self) -> None:
        pair = select_preference_pair([3.0, 9.0, 1.0, 5.0])
        assert (pair.chosen_index, pair.rejected_index) == (1, 2)
        assert (pair.chosen_score, pair.rejected_score) == (9.0, 1.0)
        assert pair.score_margin == 8.0

    def test_tie_for_best_prefers_lowest_index(self) -> None:
        pair = select_preference_pair([2.0, 7.0, 7.0, 1.0])
        assert pair.chosen_index == 1

    def test_tie_for_worst_prefers_lowest_index(self) -> None:
        pair = select_preference_pair([5.0, 1.0, 9.0, 1.0])
        assert pair.rejected_index == 1

    def test_all_equal_gives_first_two_with_zero_margin(self) -> None:
        pair = select_preference_pair([4.0, 4.0, 4.0])
        assert (pair.chosen_index, pair.rejected_index) == (0, 1)
        assert pair.score_margin == 0.0

    def test_two_candidates(self) -> None:
        pair = select_preference_pair([1.0, 2.0])
        assert (pair.chosen_index, pair.rejected_index) == (1, 0)

    def test_nan_scores_are_left_out(self) -> None:
        pair = select_preference_pair([math.nan, 3.0, 8.0, math.nan, 0.5])
        assert (pair.chosen_index, pair.rejected_index) == (2, 4)

    def test_fewer_than_two_scorable_raises_with_reason(self) -> None:
        with pytest.raises(NoPairError, match="only 1 of 3 candidates have a score"):
            select_preference_pair([math.nan, 2.0, math.nan])


class TestWeightedScores:
    def test_weighted_sum_per_image(self) -> None:
        combined = weighted_scores(
            {"clip": [30.0, 20.0], "aesthetic": [60.0, 80.0]}, {"clip": 0.85, "aesthetic": 0.15}
        )
        assert combined == pytest.approx([0.85 * 30 + 0.15 * 60, 0.85 * 20 + 0.15 * 80])

    def test_nan_from_any_judge_makes_nan(self) -> None:
        combined = weighted_scores({"a": [1.0, math.nan], "b": [1.0, 1.0]}, {"a": 1, "b": 1})
        assert combined[0] == 2.0
        assert math.isnan(combined[1])

    def test_judges_must_score_the_same_images(self) -> None:
        with pytest.raises(ValueError, match="different numbers of images"):
            weighted_scores({"a": [1.0], "b": [1.0, 2.0]}, {"a": 1, "b": 1})
