"""`agfsync.review.calibration` against simulated annotators: synthetic per-image judge scores,
a hidden true weight vector, and people who choose with logistic noise."""

import json
import math
from pathlib import Path

import datasets
import numpy as np
import pytest

from agfsync.errors import ConfigurationError
from agfsync.review.calibration import (
    SHOWN_AI_CHOICE,
    Agreement,
    Difference,
    ReviewedPair,
    calibrate,
    fit_standardized,
    folds_by_prompt,
    outcome_of,
    read_reviewed_pairs,
    read_weight_preset,
    read_weights_for,
    write_weight_preset,
)
from tests.helpers import run_command

JUDGES = ["vqa", "clip", "aesthetic"]
HIDDEN = {"vqa": 0.6, "clip": 0.3, "aesthetic": 0.1}
"""The weights people really use, on the judges' raw scores."""
SPREADS = {"vqa": 15.0, "clip": 6.0, "aesthetic": 3.0}
"""Judges' scores vary on different scales, as the real ones do."""


def simulated_rows(
    pairs: int, seed: int = 0, noise: float = 3.0, hidden: dict[str, float] = HIDDEN
) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for index in range(pairs):
        scores = {judge: list(50 + rng.normal(0, SPREADS[judge], 2)) for judge in JUDGES}
        utility = [sum(hidden[j] * scores[j][image] for j in JUDGES) for image in (0, 1)]
        prefers_0 = rng.random() < 1 / (1 + math.exp(-(utility[0] - utility[1]) / noise))
        rows.append(
            {
                "prompt_id": f"p{index}",
                "category": ["animals", "places"][index % 2],
                "chosen_index": 0,
                "rejected_index": 1,
                "label_0": 1.0 if prefers_0 else 0.0,
                **{f"{j}_scores": scores[j] for j in JUDGES},
                "weighted_scores": [0.0, 0.0],
            }
        )
    return rows


def oracle_agreement(rows: list[dict]) -> float:
    hits = [
        (sum(HIDDEN[j] * (row[f"{j}_scores"][0] - row[f"{j}_scores"][1]) for j in JUDGES) > 0)
        == (row["label_0"] == 1.0)
        for row in rows
    ]
    return sum(hits) / len(hits)


def cosine(a: dict[str, float], b: dict[str, float]) -> float:
    x, y = np.array([a[j] for j in JUDGES]), np.array([b[j] for j in JUDGES])
    return float(x @ y / np.linalg.norm(x) / np.linalg.norm(y))


def test_fitted_weights_recover_the_hidden_direction_and_agree_like_the_oracle() -> None:
    rows = simulated_rows(2000)
    # A hand-picked mix that leans on the judge people care least about.
    hand_picked = {"vqa": 0.05, "clip": 0.05, "aesthetic": 0.9}
    result = calibrate(read_reviewed_pairs(rows, JUDGES), current=hand_picked, seed=1)
    assert cosine(result.fitted, HIDDEN) >= 0.95, result.fitted
    fitted = result.mixes[-1]
    assert fitted.name == "fitted weights" and fitted.overall.pairs == 2000
    assert abs(fitted.overall.agreement - oracle_agreement(rows)) <= 0.02
    current = next(mix for mix in result.mixes if mix.name == "current weights")
    assert fitted.overall.agreement > current.overall.agreement
    assert result.distinguishable and "The fitted weights are better" in result.verdict
    assert result.recommended and result.rival == "current weights"
    gain = result.differences["current weights"]
    assert gain.low > 0 and gain.low <= gain.points <= gain.high
    assert gain.points == pytest.approx(
        fitted.overall.agreement - current.overall.agreement, abs=1e-9
    )
    assert set(fitted.by_category) == {"animals", "places"}
    assert sum(value.pairs for value in fitted.by_category.values()) == 2000


def test_thirty_pairs_cannot_tell_the_mixes_apart() -> None:
    result = calibrate(
        read_reviewed_pairs(simulated_rows(30, seed=3), JUDGES), current={j: 1 / 3 for j in JUDGES}
    )
    assert not result.distinguishable
    assert "cannot tell these mixes apart" in result.verdict


def test_reviewed_rows_count_only_resolved_human_verdicts() -> None:
    rows = simulated_rows(12)
    rows[0] |= {"label_source": "ai", "human_votes": {"image_a": 0, "both_good": 0}}
    rows[1] |= {"label_source": "ai", "human_votes": {"both_bad": 1, "toxic": 1}}
    rows[2] |= {"label_source": "human", "human_votes": {"image_b": 2}, "label_0": 0.0}
    rows[3] |= {"label_0": 0.5}
    rows[4] |= {"label_source": "human", "human_votes": {"image_a": 2}, "ai_choice_shown": True}
    read = read_reviewed_pairs(rows, JUDGES)
    assert len(read.pairs) == 8
    assert read.ignored == {
        "no verdict": 1,
        "unresolved votes": 1,
        "tie or no label": 1,
        SHOWN_AI_CHOICE: 1,
    }
    assert read.pairs[0].prefers_0 is False  # rows[2]: people preferred jpg_1
    with pytest.raises(ConfigurationError, match="needs at least 10"):
        calibrate(read_reviewed_pairs(rows[:8], JUDGES))


def test_pick_a_pic_rows_need_no_indices_and_group_by_caption() -> None:
    rows = simulated_rows(12)
    for row in rows:
        del row["chosen_index"], row["rejected_index"], row["prompt_id"]
        row["caption"] = "same prompt" if row is rows[0] or row is rows[1] else str(id(row))
    read = read_reviewed_pairs(rows, JUDGES)
    assert len(read.pairs) == 12 and read.ignored == {}
    assert read.pairs[0].prompt_id == read.pairs[1].prompt_id == "same prompt"
    assert read.pairs[0].differences["vqa"] == rows[0]["vqa_scores"][0] - rows[0]["vqa_scores"][1]
    # Without indices, more than two scores per judge cannot be matched to jpg_0/jpg_1.
    rows[5]["vqa_scores"] = [1.0, 2.0, 3.0]
    assert read_reviewed_pairs(rows, JUDGES).ignored == {"a judge score missing": 1}


def test_folds_keep_each_prompt_whole() -> None:
    pairs = [ReviewedPair(f"p{i % 7}", "c", {"vqa": 1.0}, True) for i in range(40)]
    folds = folds_by_prompt(pairs, 5, seed=0)
    assert sorted(i for fold in folds for i in fold) == list(range(40))
    for fold in folds:
        inside = {pairs[i].prompt_id for i in fold}
        outside = {pairs[i].prompt_id for other in folds if other is not fold for i in other}
        assert inside and not inside & outside
    # Three prompts can make three folds at most, however many pairs they hold.
    rows = simulated_rows(30)
    for index, row in enumerate(rows):
        row["prompt_id"] = f"p{index % 3}"
    assert calibrate(read_reviewed_pairs(rows, JUDGES), folds=5).folds == 3


def test_each_gain_lies_in_its_interval_when_prompts_have_several_pairs() -> None:
    rows = simulated_rows(300, seed=8)
    for index, row in enumerate(rows):
        row["prompt_id"] = f"p{index % 40}"  # 40 prompts, 7-8 pairs each
    result = calibrate(read_reviewed_pairs(rows, JUDGES), current={j: 1 / 3 for j in JUDGES})
    for difference in result.differences.values():
        assert difference.low <= difference.points <= difference.high


@pytest.mark.parametrize(
    ("difference", "fitted", "outcome"),
    [
        (Difference(0.05, 0.02, 0.08), Agreement(500, 0.80, 0.76, 0.83), "better"),
        # Paired test above zero, Wilson intervals overlapping: not told apart.
        (Difference(0.03, 0.01, 0.05), Agreement(500, 0.73, 0.69, 0.77), "unclear"),
        # Paired test below zero though the intervals overlap: worse, no preset.
        (Difference(-0.03, -0.05, -0.01), Agreement(500, 0.67, 0.63, 0.71), "worse"),
        (Difference(-0.01, -0.04, 0.02), Agreement(500, 0.69, 0.65, 0.73), "unclear"),
    ],
)
def test_the_verdict_needs_both_comparisons_to_call_the_fit_better(
    difference: Difference, fitted: Agreement, outcome: str
) -> None:
    rival = Agreement(500, 0.70, 0.66, 0.74)
    assert outcome_of(fitted, rival, difference) == outcome


def test_the_fit_does_not_depend_on_a_judges_scale() -> None:
    rows = simulated_rows(300, seed=4)
    scaled = [row | {"clip_scores": [100 * s for s in row["clip_scores"]]} for row in rows]
    plain = calibrate(read_reviewed_pairs(rows, JUDGES))
    rescaled = calibrate(read_reviewed_pairs(scaled, JUDGES))
    expected = {j: w / (100 if j == "clip" else 1) for j, w in plain.fitted.items()}
    total = sum(expected.values())
    assert rescaled.fitted == pytest.approx({j: w / total for j, w in expected.items()}, rel=1e-6)
    assert [m.overall.agreement for m in rescaled.mixes] == [
        m.overall.agreement for m in plain.mixes
    ]


def test_a_judge_people_disagree_with_gets_weight_zero() -> None:
    rows = simulated_rows(1500, seed=5, hidden={"vqa": 0.6, "clip": 0.3, "aesthetic": -0.8})
    result = calibrate(read_reviewed_pairs(rows, JUDGES))
    assert result.fitted["aesthetic"] == 0.0
    assert result.fitted["vqa"] > 0 and result.fitted["clip"] > 0


def test_l2_shrinks_the_standardized_weights() -> None:
    rng = np.random.default_rng(6)
    z = rng.normal(size=(400, 3))
    y = np.where(z @ np.array([2.0, 1.0, 0.5]) + rng.logistic(size=400) > 0, 1.0, -1.0)
    norms = [np.linalg.norm(fit_standardized(z, y, l2)) for l2 in (0.0, 0.01, 1.0, 10.0)]
    assert norms == sorted(norms, reverse=True) and norms[-1] < norms[0] / 5


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"folds": 1}, "at least 2 folds"),
        ({"l2": -1.0}, "must be a number >= 0"),
        ({"l2": math.nan}, "must be a number >= 0"),
        ({"one_prompt": True}, "come from one prompt"),
    ],
)
def test_settings_and_data_that_cannot_be_cross_validated_are_refused(
    change: dict, message: str
) -> None:
    rows = simulated_rows(40)
    if change.pop("one_prompt", False):
        rows = [row | {"prompt_id": "only"} for row in rows]
    with pytest.raises(ConfigurationError, match=message):
        calibrate(read_reviewed_pairs(rows, JUDGES), **change)


def test_choices_no_judge_predicts_give_no_preset() -> None:
    rows = [row | {"label_0": 1.0 - row["label_0"]} for row in simulated_rows(500, noise=0.5)]
    result = calibrate(read_reviewed_pairs(rows, JUDGES), current={j: 1 / 3 for j in JUDGES})
    assert not any(result.fitted.values())
    assert not result.recommended and "no weight preset was written" in result.verdict


def test_the_weight_preset_round_trips_with_its_provenance(tmp_path: Path) -> None:
    result = calibrate(read_reviewed_pairs(simulated_rows(200), JUDGES))
    path = tmp_path / "weights.yaml"
    write_weight_preset(result, path, source="reviewed-run")
    preset = read_weight_preset(path)
    assert preset.weights == pytest.approx(result.fitted)
    assert preset.info.fitted and preset.info.pairs == 200
    assert preset.info.verdict == result.verdict
    assert preset.description.startswith(
        "fitted with agfsync calibrate to 200 human-reviewed pairs of reviewed-run "
        "(weights.yaml); held-out agreement with people"
    )
    (tmp_path / "hand.yaml").write_text("weights: {vqa: 1, clip: 0, aesthetic: 0}\n")
    hand = read_weight_preset(tmp_path / "hand.yaml")
    assert not hand.info.fitted and hand.info.pairs is None
    assert hand.description == "from hand.yaml, written by hand (not fitted to human reviews)"


def test_weights_for_other_judges_are_refused(tmp_path: Path) -> None:
    (tmp_path / "w.yaml").write_text("weights: {vqa: 1, clip: 1}\n")
    assert read_weights_for(tmp_path / "w.yaml", ["clip", "vqa"], "judged by").weights
    with pytest.raises(ConfigurationError, match=r"weighs \['clip', 'vqa'\], judged by \["):
        read_weights_for(tmp_path / "w.yaml", ["vqa", "clip", "aesthetic"], "judged by")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("weights: {vqa: -1}", "non-negative"),
        ("weights: {vqa: .inf}", "non-negative"),
        ("weights: {vqa: true}", "non-negative"),
        ("weights: {vqa: 0, clip: 0}", "not all"),
        ("- vqa", "YAML mapping"),
        ("weights: {vqa: 1}\nheld_out_agreement: high\ninterval_95: [0.1, 0.2]\npairs: 3",
         "held_out_agreement"),
        ("weights: {vqa: 1}\nheld_out_agreement: 0.7\ninterval_95: [0.7]\npairs: 3",
         "interval_95"),
        ("weights: {vqa: 1}\nfitted_by: agfsync calibrate\nheld_out_agreement: 0.7\n"
         "interval_95: [0.6, 0.8]", "pairs"),
    ],
)  # fmt: skip
def test_malformed_weight_presets_are_refused_naming_the_field(
    tmp_path: Path, text: str, message: str
) -> None:
    (tmp_path / "w.yaml").write_text(text + "\n")
    with pytest.raises(ConfigurationError, match=message):
        read_weight_preset(tmp_path / "w.yaml")


def _write_rows(folder: Path, rows: list[dict]) -> Path:
    folder.mkdir()
    datasets.Dataset.from_list(rows).to_parquet(folder / "data.parquet")
    return folder


def test_calibrate_command_on_a_pick_a_pic_style_dataset(tmp_path: Path) -> None:
    rows = simulated_rows(30, seed=3)
    for row in rows:
        row["caption"] = row.pop("prompt_id")
        del row["chosen_index"], row["rejected_index"]
    _write_rows(tmp_path / "reviewed", rows)
    result = run_command(["agfsync", "calibrate", "reviewed", "-o", "cal"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "30 reviewed pairs" in result.stdout
    assert "cannot tell these mixes apart" in result.stdout
    assert "fitted minus this" in result.stdout and "animals" in result.stdout
    assert "Use them: agfsync generate --weights cal/weights.yaml" in result.stdout
    preset = read_weight_preset(tmp_path / "cal" / "weights.yaml")
    assert preset.info.source == "the local folder reviewed" and preset.info.pairs == 30
    report = (tmp_path / "cal" / "README.md").read_text()
    assert "| category | pairs | vqa alone | clip alone | aesthetic alone | fitted weights |" in (
        report
    )

    # `agfsync report` renders the calibration; calibrating again replaces only its own files.
    result = run_command(["agfsync", "report", "cal"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    page = (tmp_path / "cal" / "report" / "index.html").read_text()
    assert '<table id="mixes">' in page and '<table id="categories">' in page
    assert "fitted minus this" in page and "cannot tell these mixes apart" in page
    result = run_command(["agfsync", "calibrate", "reviewed", "-o", "cal"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "cal" / "report" / "index.html").read_text() == page

    inverted = [row | {"label_0": 1.0 - row["label_0"]} for row in simulated_rows(200, noise=0.5)]
    _write_rows(tmp_path / "inverted", inverted)
    result = run_command(["agfsync", "calibrate", "inverted", "-o", "cal2"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "no weight preset was written" in result.stdout and "Use them" not in result.stdout
    assert not (tmp_path / "cal2" / "weights.yaml").exists()


@pytest.mark.slow
def test_reselect_picks_pairs_from_recorded_scores_without_rendering_or_judging(
    offline_run: Path, tmp_path: Path
) -> None:
    weights = tmp_path / "clip-only.yaml"
    weights.write_text("weights: {vqa: 0.0, clip: 1.0, aesthetic: 0.0}\nsource: a test\n")
    before = {path: path.stat().st_mtime_ns for path in (offline_run / "artifacts").rglob("*")}
    result = run_command(
        ["agfsync", "reselect", str(offline_run), "--weights", str(weights), "-o", "clip"],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "distilabel" not in result.stderr  # no pipeline ran: nothing rendered or judged
    assert {p: p.stat().st_mtime_ns for p in (offline_run / "artifacts").rglob("*")} == before
    new = datasets.load_dataset(str(tmp_path / "clip"), split="train")
    for row in new:
        clip = row["clip_scores"]
        assert row["weighted_scores"] == pytest.approx(clip)
        assert row["chosen_index"] == int(np.argmax(clip))
        image = tmp_path / "clip" / "artifacts" / row["image_paths"][row["chosen_index"]]
        assert row["jpg_0"] == image.read_bytes()
    run = json.loads((tmp_path / "clip" / "run.json").read_text())
    assert [judge["weight"] for judge in run["judges"]] == [0.0, 1.0, 0.0]
    card = (tmp_path / "clip" / "README.md").read_text()
    assert "**Weights**: from clip-only.yaml, written by hand (not fitted" in card
    assert f"re-selected with them from the recorded scores of {offline_run.name}" in card
    assert run["weights"]["file"] == "clip-only.yaml" and run["weights"]["fitted"] is False


@pytest.mark.slow
def test_a_dataset_labelled_by_its_judges_is_not_calibrated_on(
    offline_run: Path, tmp_path: Path
) -> None:
    result = run_command(["agfsync", "calibrate", str(offline_run), "-o", "cal"], tmp_path)
    assert result.returncode == 2
    assert "label_0 is the judges' choice, not people's" in result.stderr
    assert not (tmp_path / "cal").exists()
