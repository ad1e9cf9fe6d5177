import math

import pytest

from agfsync.pairs import DREAMSYNC_THRESHOLDS, NoPairError, reason_kind, select_preference_pair
from agfsync.scoring import weighted_scores
from agfsync.steps import PreferencePairSelection


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

    def test_a_tie_is_not_a_preference(self) -> None:
        with pytest.raises(NoPairError, match="tie: the best and worst candidates scored"):
            select_preference_pair([4.0, 4.0, 4.0])

    def test_a_kept_tie_gives_the_first_two_with_zero_margin(self) -> None:
        pair = select_preference_pair([4.0, 4.0, 4.0], keep_ties=True)
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


class TestPairFilters:
    def test_margin_below_the_minimum_refuses_the_pair(self) -> None:
        with pytest.raises(NoPairError, match=r"margin 0\.5 is below the minimum of 1"):
            select_preference_pair([2.0, 2.5], min_margin=1.0)
        assert select_preference_pair([2.0, 3.0], min_margin=1.0).score_margin == 1.0

    def test_only_allowed_images_can_be_chosen(self) -> None:
        pair = select_preference_pair([9.0, 5.0, 1.0], may_be_chosen=[False, True, True])
        assert (pair.chosen_index, pair.rejected_index) == (1, 2)

    def test_the_chosen_image_must_outscore_the_rejected_one(self) -> None:
        pair = select_preference_pair([1.0, 5.0, 0.5], may_be_chosen=[True, False, True])
        assert (pair.chosen_index, pair.rejected_index) == (0, 2)
        with pytest.raises(NoPairError, match="below the minimum of 0"):
            select_preference_pair([1.0, 5.0], may_be_chosen=[True, False])

    def test_no_allowed_image_refuses_the_pair(self) -> None:
        with pytest.raises(NoPairError, match="no candidate passes"):
            select_preference_pair([1.0, 2.0], may_be_chosen=[False, False])


class TestPreferencePairSelectionStep:
    def _select(self, rows: list[dict], **options: object) -> list[dict]:
        step = PreferencePairSelection(name="select_pairs", **options)
        return next(step.process([dict(row) for row in rows]))

    def test_dreamsync_thresholds_decide_the_conversion_rate(self) -> None:
        rows = [
            {
                "weighted_scores": [80.0, 40.0],
                "vqa_scores": [95.0, 50.0],
                "aesthetic_scores": [65.0, 30.0],
            },
            {
                "weighted_scores": [70.0, 60.0],
                "vqa_scores": [85.0, 99.0],
                "aesthetic_scores": [70.0, 50.0],
            },
        ]
        agfsync = self._select(rows)
        dreamsync = self._select(rows, chosen_thresholds=DREAMSYNC_THRESHOLDS)
        assert [row["pair_error"] for row in agfsync] == [None, None]
        assert dreamsync[0]["chosen_index"] == 0 and dreamsync[0]["pair_error"] is None
        assert dreamsync[1]["chosen_index"] is None
        assert "no candidate passes" in dreamsync[1]["pair_error"]

    def test_declares_the_score_columns_its_thresholds_read(self) -> None:
        step = PreferencePairSelection(name="select_pairs", chosen_thresholds={"vqa": 90.0})
        assert step.inputs == ["weighted_scores", "vqa_scores"]


def test_reasons_count_together_by_kind() -> None:
    """A summary counts `24 x score margin below --min-margin 1000`, not one line per
    margin; other reasons are kept as they are."""
    reasons = []
    for scores in ([0.0, 3.208], [1.0, 8.423], [2.0, 2.0], [math.nan, 1.0]):
        with pytest.raises(NoPairError) as error:
            select_preference_pair(scores, min_margin=1000)
        reasons.append(reason_kind(str(error.value)))
    assert reasons == [
        "score margin below --min-margin 1000",
        "score margin below --min-margin 1000",
        "tie: the best and worst candidates scored the same",
        "fewer than 2 of 2 candidates have a score",
    ]
    assert reason_kind("no candidate passes the thresholds") == "no candidate passes the thresholds"
