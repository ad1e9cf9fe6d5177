"""The walking skeleton end to end: both entry points on the offline preset."""

import json
import os
import re
import shlex
import shutil
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import pytest

from tests.helpers import REPO_ROOT, run_command

pytestmark = pytest.mark.slow  # `make test-fast` skips this module

CONTRACT_COLUMNS = {
    "prompt_id": datasets.Value("string"),
    "prompt": datasets.Value("string"),
    "category": datasets.Value("string"),
    "prompt_model": datasets.Value("string"),
    "image_model": datasets.Value("string"),
    "caption": datasets.Value("string"),
    "label_0": datasets.Value("float64"),
    "chosen_index": datasets.Value("int64"),
    "rejected_index": datasets.Value("int64"),
    "chosen_score": datasets.Value("float64"),
    "rejected_score": datasets.Value("float64"),
    "score_margin": datasets.Value("float64"),
}
LIST_COLUMNS = [
    "qa_pairs",
    "image_paths",
    "image_seeds",
    "noise_sigmas",
    "vqa_scores",
    "vqa_answers",
    "clip_scores",
    "clip_truncated",
    "aesthetic_scores",
    "weighted_scores",
    "judging_errors",
]
IMAGE_COLUMNS = ["jpg_0", "jpg_1"]
SAMPLE_SIZE = 24


@pytest.fixture(scope="module")
def offline_dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("run") / "offline"
    result = run_command(
        ["agfsync", "generate", "--preset", "offline", "-o", str(output)], cwd=output.parent
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "meaningless by design" in result.stdout
    assert f"({SAMPLE_SIZE} preference pairs" in result.stdout
    return output


def assert_reproduce_command_matches(card: str, run: dict) -> None:
    """The card's `agfsync generate` command carries exactly the run's recorded options."""
    from agfsync.dataset.run_info import GenerateOptions

    (command,) = re.findall(r"^agfsync generate .*$", card, re.MULTILINE)
    words, given = shlex.split(command)[2:], {}
    while words:
        flag = words.pop(0)
        given[flag] = words.pop(0) if words and not words[0].startswith("-") else True
    expected = {
        "--preset": run["preset"],
        **dict(GenerateOptions.model_validate(run["options"]).flags()),
        "--seed": str(run["seed"]),
        "-o": "my-dataset",
    }
    if run["min_margin"]:
        expected["--min-margin"] = f"{run['min_margin']:g}"
    if run["keep_ties"]:
        expected["--keep-ties"] = True
    assert given == expected


class TestAgfsyncGenerate:
    def test_dataset_loads_with_contract_columns_and_types(self, offline_dataset_dir: Path) -> None:
        dataset = datasets.load_dataset(str(offline_dataset_dir), split="train")
        assert dataset.num_rows == SAMPLE_SIZE
        for name, feature in CONTRACT_COLUMNS.items():
            assert dataset.features[name] == feature, name
        for name in LIST_COLUMNS:
            assert isinstance(dataset.features[name], datasets.List), name
        for name in IMAGE_COLUMNS:  # Pick-a-Pic's raw bytes, once per row
            assert dataset.features[name] == datasets.Value("binary"), name
        assert "chosen" not in dataset.column_names and "rejected" not in dataset.column_names
        with_images = datasets.load_dataset(str(offline_dataset_dir), "images", split="train")
        for name in IMAGE_COLUMNS:
            assert isinstance(with_images.features[name], datasets.Image), name

    def test_pairs_point_at_the_best_and_worst_candidate(self, offline_dataset_dir: Path) -> None:
        dataset = datasets.load_dataset(str(offline_dataset_dir), split="train")
        for row in dataset:
            scores = row["weighted_scores"]
            assert row["chosen_score"] == max(scores)
            assert row["rejected_score"] == min(scores)
            assert row["chosen_index"] != row["rejected_index"]
            assert row["label_0"] == 1.0
            assert row["caption"] == row["prompt"]
            chosen_file = (
                offline_dataset_dir / "artifacts" / row["image_paths"][row["chosen_index"]]
            )
            assert row["jpg_0"] == chosen_file.read_bytes()

    def test_candidates_have_distinct_recorded_seeds(self, offline_dataset_dir: Path) -> None:
        dataset = datasets.load_dataset(str(offline_dataset_dir), split="train")
        seeds = [seed for row in dataset for seed in row["image_seeds"]]
        assert len(seeds) == len(set(seeds)) == SAMPLE_SIZE * 4
        assert all(row["noise_sigmas"][0] == 0.0 for row in dataset)
        assert all(sigma > 0 for row in dataset for sigma in row["noise_sigmas"][1:])

    def test_scores_vary_so_pairs_are_not_all_ties(self, offline_dataset_dir: Path) -> None:
        dataset = datasets.load_dataset(str(offline_dataset_dir), split="train")
        assert sum(margin > 0 for margin in dataset["score_margin"]) > SAMPLE_SIZE // 2

    def test_every_image_has_all_three_scores(self, offline_dataset_dir: Path) -> None:
        dataset = datasets.load_dataset(str(offline_dataset_dir), split="train")
        for row in dataset:
            for name in ("vqa_scores", "clip_scores", "aesthetic_scores"):
                assert len(row[name]) == 4
                assert all(0 <= score <= 100 for score in row[name]), name
            valid = sum(pair["valid"] for pair in row["qa_pairs"])
            assert [len(answers) for answers in row["vqa_answers"]] == [valid] * 4
            expected = [
                (v + c + a) / 3
                for v, c, a in zip(
                    row["vqa_scores"], row["clip_scores"], row["aesthetic_scores"], strict=True
                )
            ]
            assert row["weighted_scores"] == pytest.approx(expected)

    def test_folder_has_card_pipeline_and_artifacts(self, offline_dataset_dir: Path) -> None:
        card = (offline_dataset_dir / "README.md").read_text()
        assert card.startswith("---\n") and "task_categories:" in card
        assert "meaningless by design" in card
        assert (offline_dataset_dir / "pipeline.yaml").is_file()
        run = json.loads((offline_dataset_dir / "run.json").read_text())
        assert run["preset"] == "offline" and run["unpaired"] == []
        assert [judge["name"] for judge in run["judges"]] == ["vqa", "clip", "aesthetic"]
        for figure in ("score_distributions", "score_margins", "categories"):
            assert f"assets/{figure}.png" in card
            assert (offline_dataset_dir / "assets" / f"{figure}.png").is_file()
        images = list((offline_dataset_dir / "artifacts").rglob("*.png"))
        assert len(images) == SAMPLE_SIZE * 4

    def test_candidates_are_not_a_second_copy_on_disk(self, offline_dataset_dir: Path) -> None:
        """The dataset folder's candidates are hard links to the run cache's images (one
        copy on disk); the other files of artifacts/ are copies of their own."""
        artifacts = offline_dataset_dir / "artifacts"
        cache = Path(os.environ["DISTILABEL_CACHE_DIR"])
        cached = {path.stat().st_ino for path in cache.rglob("*.png")}
        images = list(artifacts.rglob("*.png"))
        assert images and all(path.stat().st_ino in cached for path in images)
        others = [path for path in artifacts.rglob("*") if path.is_file() and path.suffix != ".png"]
        assert others and all(path.stat().st_nlink == 1 for path in others)

    def test_card_claims_match_run_json_and_the_data(self, offline_dataset_dir: Path) -> None:
        """Every fact the card states about the run is the one run.json and the rows hold."""
        from huggingface_hub import DatasetCard

        from agfsync.dataset.card import markdown_text

        card = DatasetCard.load(offline_dataset_dir / "README.md")
        run = json.loads((offline_dataset_dir / "run.json").read_text())
        rows = datasets.load_dataset(str(offline_dataset_dir), split="train")
        table = dict(re.findall(r"^\| ([^|]+?) \| ([^|]+?) \|$", card.text, re.MULTILINE))
        assert table["preset"] == f"`{run['preset']}`"
        assert table["run seed"] == str(run["seed"])
        for judge in run["judges"]:  # the judges table: name, model, weight
            assert f"| {judge['name']} | {judge['model']} | {judge['weight']:g} |" in card.text
        assert table["candidates per prompt (N)"] == str(len(rows[0]["image_paths"]))
        assert table["preference pairs"] == str(len(rows))
        # Prompts came from a file, not an LLM: the card says so, and nothing else.
        assert run["llm_models"] == {} and run["prompt_file"]
        assert f"prompts read from a file ({markdown_text(run['prompt_file'])})" in card.text
        assert "written by an LLM" not in card.text
        assert "pip install agfsync" not in card.text
        data = card.data.to_dict()
        assert data["license"] == "apache-2.0"  # tiny models built by agfsync: its license
        assert data["size_categories"] == ["n<1K"]
        features = {f["name"] for f in data["dataset_info"][0]["features"]}
        assert {"jpg_0", "jpg_1", "label_0", "caption", "clip_truncated"} <= features
        for column in ("clip_truncated", "generation_error", "judging_errors", "pair_error"):
            assert f"`{column}`" in card.text
        assert "|  |  |" not in card.text  # every table has a header
        assert_reproduce_command_matches(card.text, run)
        assert table["minimum score margin (--min-margin)"] == f"{run['min_margin']:g}"
        assert table["ties (best and worst candidate scored alike)"] == "0 left without a pair"

    def test_same_seed_gives_bit_identical_images_and_scores(
        self, offline_dataset_dir: Path, tmp_path: Path, isolated_caches: dict[str, str]
    ) -> None:
        fresh_cache = {"DISTILABEL_CACHE_DIR": str(tmp_path / "fresh-distilabel-cache")}
        # A new process (its own hash seed and imports) against the fixture's forked run.
        result = run_command(
            ["agfsync", "generate", "-o", str(tmp_path / "again"), "--no-use-cache"],
            cwd=tmp_path,
            env=fresh_cache,
            fresh_process=True,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        first = pq.read_table(next((offline_dataset_dir / "data").glob("*.parquet")))
        second = pq.read_table(next((tmp_path / "again" / "data").glob("*.parquet")))
        for column in ["jpg_0", "jpg_1", "clip_scores", "image_seeds", "chosen_index"]:
            assert first.column(column).to_pylist() == second.column(column).to_pylist(), column

    def test_a_change_after_the_image_step_reuses_its_images(
        self, offline_dataset_dir: Path, tmp_path: Path
    ) -> None:
        """distilabel reuses the cached image step in the new execution a later
        change creates; its images must come along (agfsync/run/artifacts.py)."""
        output = tmp_path / "wider-margin"
        result = run_command(
            ["agfsync", "generate", "-o", str(output), "--min-margin", "4"], tmp_path
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert "prompts had no pair" in result.stdout
        first = datasets.load_dataset(str(offline_dataset_dir), split="train")
        kept = datasets.load_dataset(str(output), split="train")
        assert 0 < len(kept) < len(first)
        assert all(margin >= 4 for margin in kept["score_margin"])
        by_id = {row["prompt_id"]: row for row in first}
        for row in kept:
            assert row["jpg_0"] == by_id[row["prompt_id"]]["jpg_0"]
        run = json.loads((output / "run.json").read_text())
        assert len(run["unpaired"]) == len(first) - len(kept)
        assert all("margin" in item["reason"] for item in run["unpaired"])
        assert run["min_margin"] == 4
        assert_reproduce_command_matches((output / "README.md").read_text(), run)

    def test_regenerating_in_place_loads_the_new_rows(self, tmp_path: Path) -> None:
        output = tmp_path / "same-folder"
        seeds, sizes = [], []
        for seed, resolution in (("1", []), ("2", ["--resolution", "48"])):
            result = run_command(
                [
                    "agfsync",
                    "generate",
                    "-o",
                    str(output),
                    "--seed",
                    seed,
                    "--num-prompts",
                    "1",
                    *resolution,
                ],
                cwd=tmp_path,
            )
            assert result.returncode == 0, result.stderr[-3000:]
            row = datasets.load_dataset(str(output), "images", split="train")[0]
            seeds.append(row["image_seeds"])
            sizes.append((row["jpg_0"].size, row["jpg_1"].size))
        assert seeds[0] != seeds[1]
        assert sizes == [((32, 32), (32, 32)), ((48, 48), (48, 48))]  # the model's, then asked

    def test_another_seed_changes_the_images(
        self, offline_dataset_dir: Path, tmp_path: Path
    ) -> None:
        result = run_command(
            [
                "agfsync",
                "generate",
                "-o",
                str(tmp_path / "seed1"),
                "--seed",
                "1",
                "--num-prompts",
                "2",
            ],
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        first = pq.read_table(next((offline_dataset_dir / "data").glob("*.parquet")))
        other = pq.read_table(next((tmp_path / "seed1" / "data").glob("*.parquet")))
        assert other.num_rows == 2
        assert (
            first.column("image_seeds").to_pylist()[:2] != other.column("image_seeds").to_pylist()
        )
        assert first.column("jpg_1").to_pylist()[:2] != other.column("jpg_1").to_pylist()


class TestDistilabelCommand:
    def test_pipeline_run_with_the_committed_yaml(self, tmp_path: Path) -> None:
        cache = tmp_path / "distilabel-cache"
        shutil.copy(REPO_ROOT / "pipelines" / "offline.yaml", tmp_path / "offline.yaml")
        result = run_command(
            ["distilabel", "pipeline", "run", "--config", "offline.yaml"],
            cwd=tmp_path,
            env={"DISTILABEL_CACHE_DIR": str(cache)},
        )
        assert result.returncode == 0, result.stderr[-3000:]
        outputs = list(cache.rglob("steps_outputs/export_pairs/*.parquet"))
        assert outputs, "distilabel wrote no output for the leaf step"
        rows = [row for path in outputs for row in pq.read_table(path).to_pylist()]
        assert len(rows) == SAMPLE_SIZE
        # the pair config beside it (see tests/test_publish.py for its push)
        pairs = list(cache.rglob("steps_outputs/default/*.parquet"))
        paired = [row["prompt_id"] for row in rows if row["chosen_index"] is not None]
        assert sum(pq.read_metadata(path).num_rows for path in pairs) == len(paired) > 0
        images = list(cache.rglob("steps_artifacts/generate_images/images/*/*.png"))
        assert len(images) == SAMPLE_SIZE * 4
