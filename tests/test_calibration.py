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
    calibrate,
    read_reviewed_pairs,
    read_weight_preset,
    write_weight_preset,
)
from tests.helpers import run_command

JUDGES = ["vqa", "clip", "aesthetic"]
HIDDEN = {"vqa": 0.6, "clip": 0.3, "aesthetic": 0.1}
"""The weights people really use, on the judges' raw scores."""
SPREADS = {"vqa": 15.0, "clip": 6.0, "aesthetic": 3.0}
"""Judges' scores vary on different scales, as the real ones do."""


def simulated_rows(pairs: int, seed: int = 0, noise: float = 3.0) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for index in range(pairs):
        scores = {judge: list(50 + rng.normal(0, SPREADS[judge], 2)) for judge in JUDGES}
        utility = [sum(HIDDEN[j] * scores[j][image] for j in JUDGES) for image in (0, 1)]
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
    assert result.distinguishable and "clear of both intervals" in result.verdict
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
    read = read_reviewed_pairs(rows, JUDGES)
    assert len(read.pairs) == 9
    assert read.ignored == {"no verdict": 1, "unresolved votes": 1, "tie or no label": 1}
    assert read.pairs[0].prefers_0 is False  # rows[2]: people preferred jpg_1
    with pytest.raises(ConfigurationError, match="needs at least 10"):
        calibrate(read_reviewed_pairs(rows[:8], JUDGES))


def test_the_weight_preset_round_trips_with_its_provenance(tmp_path: Path) -> None:
    result = calibrate(read_reviewed_pairs(simulated_rows(200), JUDGES))
    path = tmp_path / "weights.yaml"
    write_weight_preset(result, path, source="reviewed-run")
    preset = read_weight_preset(path)
    assert preset.weights == pytest.approx(result.fitted)
    assert "calibrated on reviewed-run, 200 reviewed pairs, held-out agreement" in (
        preset.description
    )
    (tmp_path / "bad.yaml").write_text("weights: {vqa: -1}\n")
    with pytest.raises(ConfigurationError, match="non-negative"):
        read_weight_preset(tmp_path / "bad.yaml")


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
    assert "**Weights**: weights from clip-only.yaml (calibrated on a test" in card
