"""The pair config the pipeline writes for `distilabel pipeline run --repo-id`."""

from pathlib import Path
from typing import Any

import datasets
from PIL import Image

from agfsync.run.failures import row_failures
from agfsync.steps import PreferenceDatasetExport


def candidate_rows(artifacts: Path) -> list[dict[str, Any]]:
    rows = []
    for number, color in enumerate(("red", "blue", "green")):
        prompt_id = f"p{number}"
        paths = []
        for index in range(2):
            relative = f"generate_images/images/{prompt_id}/{index}.png"
            (artifacts / relative).parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8), color if index else "white").save(artifacts / relative)
            paths.append(relative)
        paired = number != 2
        rows.append(
            {
                "prompt_id": prompt_id,
                "prompt": f"a {color} cube",
                "category": "color",
                "qa_pairs": [
                    {
                        "question": f"is the cube {color}?",
                        "answer": "yes",
                        "element_type": "color",
                        "element": color,
                        "valid": True,
                    }
                ],
                "image_paths": paths,
                "image_seeds": [None, None] if number == 1 else [7, 8],  # 1: a remote model
                "noise_sigmas": [0.0, 0.1],
                "image_model": "tiny",
                "clip_scores": [20.0, 30.0],
                "weighted_scores": [0.2, 0.3],
                "chosen_index": 1 if paired else None,
                "rejected_index": 0 if paired else None,
                "chosen_score": 0.3 if paired else None,
                "rejected_score": 0.2 if paired else None,
                "score_margin": 0.1 if paired else None,
                "pair_error": None if paired else "margin below 0.5",
            }
        )
    return rows


def export(data_dir: Path, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    step = PreferenceDatasetExport(name="export_pairs")
    step.set_pipeline_artifacts_path(data_dir / "steps_artifacts")
    step.load()
    return next(step.process([dict(row) for row in rows]))


def shards(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "steps_outputs" / "default").glob("*"))


class TestPreferenceDatasetExport:
    def test_writes_the_pairs_with_image_bytes_and_passes_every_row_on(
        self, tmp_path: Path
    ) -> None:
        rows = candidate_rows(tmp_path / "steps_artifacts")
        out = export(tmp_path, rows)
        assert [row["prompt_id"] for row in out] == ["p0", "p1", "p2"]
        assert [row["export_error"] for row in out] == [None] * 3
        assert out[2]["pair_error"] == "margin below 0.5"

        (shard,) = shards(tmp_path)
        int(shard.stem)  # distilabel sorts a config's files by int(stem)
        # No declared features: the loader must find them in the file, as distilabel's does.
        pairs = datasets.load_dataset("parquet", data_files=[str(shard)], split="train")
        assert pairs["prompt_id"] == ["p0", "p1"]
        for column in ("jpg_0", "jpg_1"):  # the Pick-a-Pic layout, as the dataset folder
            assert pairs.features[column] == datasets.Value("binary")
        assert "chosen" not in pairs.column_names
        first = pairs[0]
        artifacts = tmp_path / "steps_artifacts"
        assert first["jpg_0"] == (artifacts / rows[0]["image_paths"][1]).read_bytes()
        assert first["jpg_1"] == (artifacts / rows[0]["image_paths"][0]).read_bytes()
        assert (first["caption"], first["label_0"]) == ("a red cube", 1.0)
        assert first["qa_pairs"][0]["element"] == "red"
        assert pairs[1]["image_seeds"] == [None, None]
        assert pairs.features["image_seeds"] == datasets.List(datasets.Value("int64"))
        assert first["clip_scores"] == [20.0, 30.0] and first["score_margin"] == 0.1
        assert "image_model" not in pairs.column_names  # the leaf config keeps every column

    def test_the_same_batch_sent_again_replaces_its_shard(self, tmp_path: Path) -> None:
        rows = candidate_rows(tmp_path / "steps_artifacts")
        export(tmp_path, rows)
        first = shards(tmp_path)
        export(tmp_path, rows)
        assert shards(tmp_path) == first
        export(tmp_path, rows[1:])
        assert len(shards(tmp_path)) == 2
        assert not list((tmp_path / "agfsync-journal").glob("*.partial"))

    def test_a_missing_image_is_recorded_on_the_batch_rows_and_retried(
        self, tmp_path: Path
    ) -> None:
        rows = candidate_rows(tmp_path / "steps_artifacts")
        (tmp_path / "steps_artifacts" / rows[1]["image_paths"][0]).unlink()
        out = export(tmp_path, rows)
        assert shards(tmp_path) == []
        assert "p1" in out[0]["export_error"] and "is missing" in out[0]["export_error"]
        assert out[0]["export_error"] == out[1]["export_error"]
        assert out[2]["export_error"] is None  # no pair, nothing to write
        assert [failure.column for failure in row_failures(out[0])] == ["export_error"]
