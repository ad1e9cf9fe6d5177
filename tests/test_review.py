"""Review logic without a server: vote resolution, agreement, sampling, pair order."""

import math

import pytest

from agfsync.review.verdicts import (
    agreement,
    apply_verdict,
    bucket_label,
    margin_buckets,
    resolve_votes,
    sample_rows,
    shows_rejected_first,
)


class TestResolveVotes:
    @pytest.mark.parametrize(
        ("answers", "preferred"),
        [
            (["image_a", "image_a", "image_b"], "a"),
            (["image_b"], "b"),
            (["image_a", "image_b"], None),  # tie: unresolved
            (["both_good", "image_b"], "b"),  # both_good votes for each image
            (["both_good", "both_good"], None),
            (["both_bad", "toxic"], None),  # votes for neither image
            (["image_a", "toxic", "toxic"], None),  # "neither" outvotes image A
            (["image_a", "both_bad"], None),  # the winner must beat "neither" too
            (["image_b", "image_b", "both_bad"], "b"),
            ([], None),
        ],
    )
    def test_majority_with_the_image_preferences_binarization(
        self, answers: list[str], preferred: str | None
    ) -> None:
        assert resolve_votes(answers).preferred == preferred

    def test_counts_every_reviewer(self) -> None:
        verdict = resolve_votes(["toxic", "image_a", "image_a"])
        assert verdict.votes == {"toxic": 1, "image_a": 2}
        assert verdict.num_reviewers == 3


ROW = {"label_0": 1.0, "jpg_0": "C", "jpg_1": "R"}
ROWS = [{"category": c} for c in ["x"] * 8 + ["y"] * 3 + ["z"]]


class TestApplyVerdict:
    def test_humans_who_prefer_the_other_image_flip_the_label(self) -> None:
        # the AI's chosen image was shown as B; the reviewers prefer A (the rejected one)
        row = apply_verdict(ROW, resolve_votes(["image_a"]), rejected_first=True)
        assert row["label_0"] == 0.0
        assert (row["jpg_0"], row["jpg_1"]) == ("C", "R")  # jpg_0 stays the AI's choice
        assert row["label_source"] == "human"

    def test_agreeing_humans_keep_the_label(self) -> None:
        row = apply_verdict(ROW, resolve_votes(["image_b"]), rejected_first=True)
        assert (row["label_0"], row["jpg_0"], row["label_source"]) == (1.0, "C", "human")

    def test_a_kept_tie_gets_the_human_choice_either_way(self) -> None:
        tie = ROW | {"label_0": 0.5}
        for shown, expected in (("image_a", 1.0), ("image_b", 0.0)):
            row = apply_verdict(tie, resolve_votes([shown]), rejected_first=False)
            assert (row["label_0"], row["label_source"]) == (expected, "human")
        unresolved = apply_verdict(tie, resolve_votes([]), rejected_first=False)
        assert (unresolved["label_0"], unresolved["label_source"]) == (0.5, "ai")

    def test_unresolved_pairs_keep_the_ai_label(self) -> None:
        row = apply_verdict(ROW, resolve_votes(["image_a", "image_b"]), rejected_first=False)
        assert (row["label_0"], row["label_source"]) == (1.0, "ai")
        assert row["human_votes"]["image_a"] == row["human_votes"]["image_b"] == 1


class TestAgreement:
    def test_cohens_kappa_on_a_textbook_table(self) -> None:
        # 50 items: both "a" 20, both "b" 15, AI a / human b 5, AI b / human a 10.
        pairs = [("a", "a")] * 20 + [("b", "b")] * 15 + [("a", "b")] * 5 + [("b", "a")] * 10
        result = agreement(pairs)  # type: ignore[arg-type]
        p_o = 35 / 50
        p_e = (25 / 50) * (30 / 50) + (25 / 50) * (20 / 50)
        assert result.count == 50
        assert result.raw == pytest.approx(p_o)
        assert result.kappa == pytest.approx((p_o - p_e) / (1 - p_e))
        assert result.kappa == pytest.approx(0.4)

    def test_kappa_is_nan_when_chance_agreement_is_certain(self) -> None:
        result = agreement([("a", "a"), ("a", "a")])
        assert result.raw == 1.0 and math.isnan(result.kappa)

    def test_no_pairs(self) -> None:
        assert agreement([]).count == 0


class TestSampling:
    def test_stratified_sample_covers_small_categories(self) -> None:
        picked = sample_rows(ROWS, 3, by="category", seed=1)
        assert len(picked) == 3 and len(set(picked)) == 3
        assert {ROWS[i]["category"] for i in picked} == {"x", "y", "z"}

    def test_sample_is_seeded_and_ordered(self) -> None:
        assert sample_rows(ROWS, 5, by=None, seed=3) == sample_rows(ROWS, 5, by=None, seed=3)
        assert sample_rows(ROWS, 5, by=None, seed=3) == sorted(
            sample_rows(ROWS, 5, by=None, seed=3)
        )
        assert sample_rows(ROWS, None, by=None, seed=0) == list(range(12))


def test_pair_order_is_stable_per_record_and_balanced() -> None:
    ids = [f"prompt-{i}" for i in range(400)]
    orders = [shows_rejected_first(i, 0) for i in ids]
    assert orders == [shows_rejected_first(i, 0) for i in ids]
    assert 150 < sum(orders) < 250
    assert orders != [shows_rejected_first(i, 1) for i in ids]


def test_margin_buckets_split_into_equal_groups() -> None:
    edges = margin_buckets([float(m) for m in range(1, 10)])
    assert edges[-1] == math.inf
    labels = [bucket_label(float(m), edges) for m in range(1, 10)]
    assert [labels.count(label) for label in dict.fromkeys(labels)] == [3, 3, 3]
