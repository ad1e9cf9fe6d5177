"""The preference dataset's card and report on fabricated datasets: ties, the minimum
margin, the command that reproduces the run, licenses, size categories and the
per-category table (no pipeline runs, except the one `--keep-ties` command on the
shared `offline_run`)."""

import json
import re
import shutil
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from huggingface_hub import DatasetCard

from agfsync.dataset.card import (
    CardAssets,
    dataset_license,
    model_family_tags,
    render_dataset_card,
    size_category,
    text_license,
)
from agfsync.dataset.folder import TIE_LABEL, build_preference_dataset
from agfsync.dataset.plots import bar_chart
from agfsync.dataset.run_info import GenerateOptions, RunInfo, UnpairedPrompt
from agfsync.dataset.statistics import dataset_statistics
from agfsync.model_facts import KNOWN_MODELS
from agfsync.pairs import TIE
from agfsync.pipelines import build_preset
from agfsync.run.preset import RunOptions, RunOutcome, StepFailures, _run_info
from tests.helpers import run_command
from tests.test_preference_export import candidate_rows

TIE_REASON = f"{TIE} (50)"


def tie_run_rows(artifacts: Path) -> list[dict[str, Any]]:
    """`candidate_rows` with p1 a tie kept as a pair (margin 0) and p2 unpaired."""
    rows = candidate_rows(artifacts)
    rows[1].update(weighted_scores=[0.3, 0.3], chosen_score=0.3, rejected_score=0.3)
    rows[1].update(score_margin=0.0, chosen_index=0, rejected_index=1)
    return rows


@pytest.fixture
def tie_pairs(tmp_path: Path) -> datasets.Dataset:
    rows = tie_run_rows(tmp_path / "artifacts")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    pairs, _ = build_preference_dataset(
        datasets.Dataset.from_list(rows), tmp_path / "artifacts", scratch
    )
    return pairs


def unpaired(category: str, reason: str, number: int = 0) -> UnpairedPrompt:
    return UnpairedPrompt(
        prompt_id=f"u{category}{number}", prompt="a cube", category=category, reason=reason
    )


def card_text(dataset: datasets.Dataset, run: RunInfo) -> str:
    stats = dataset_statistics(dataset, run)
    return render_dataset_card(
        stats,
        run,
        CardAssets(figures={}, samples=[]),
        features=dataset.features,
        load_path="org/pairs",
        data_files={"train": ["data/train.parquet"]},
    )


def two_column_table(card: str) -> dict[str, str]:
    return dict(re.findall(r"^\| ([^|]+?) \| ([^|]+?) \|$", card, re.MULTILINE))


class TestTies:
    def test_a_zero_margin_pair_is_exported_with_the_tie_label(
        self, tie_pairs: datasets.Dataset
    ) -> None:
        assert dict(zip(tie_pairs["prompt_id"], tie_pairs["label_0"], strict=True)) == {
            "p0": 1.0,
            "p1": TIE_LABEL,
        }

    def test_kept_ties_and_the_minimum_margin_are_on_the_card(
        self, tie_pairs: datasets.Dataset
    ) -> None:
        run = RunInfo(preset="offline", seed=0, keep_ties=True, min_margin=0.05)
        stats = dataset_statistics(tie_pairs, run)
        assert stats.num_ties == 1
        card = card_text(tie_pairs, run)
        table = two_column_table(card)
        ties = table["ties (best and worst candidate scored alike)"]
        assert ties == "1 kept as pairs with label_0 = 0.5 (--keep-ties)"
        assert table["minimum score margin (--min-margin)"] == "0.05"
        assert "Every prompt produced a pair (1 of them ties, kept with `label_0 = 0.5`)." in card
        assert "**Ties kept: 1.** Their rows have `label_0 = 0.5`" in card
        assert "holds no ties" not in card

    def test_ties_left_out_are_counted_and_none_claimed_in_the_data(
        self, tie_pairs: datasets.Dataset
    ) -> None:
        without_tie = tie_pairs.filter(lambda row: row["label_0"] != TIE_LABEL)
        run = RunInfo(preset="offline", seed=0, unpaired=[unpaired("color", TIE_REASON)])
        card = card_text(without_tie, run)
        assert two_column_table(card)["ties (best and worst candidate scored alike)"] == (
            "1 left without a pair"
        )
        assert two_column_table(card)["minimum score margin (--min-margin)"] == "0"
        assert "This dataset holds no ties (`label_0 = 0.5`)." in card
        assert "Every prompt produced a pair" not in card


class TestCardTables:
    def test_the_two_column_tables_have_headers(self, tie_pairs: datasets.Dataset) -> None:
        card = card_text(tie_pairs, RunInfo(preset="offline", seed=0))
        assert "|  |  |" not in card
        assert "| setting | value |" in card and "| statistic | value |" in card

    def test_a_category_without_pairs_says_why(self, tie_pairs: datasets.Dataset) -> None:
        run = RunInfo(
            preset="offline",
            seed=0,
            unpaired=[
                unpaired("plants", TIE_REASON, 0),
                unpaired("plants", TIE_REASON, 1),
                unpaired("plants", "score margin 0.1 is below the minimum of 4", 2),
            ],
        )
        stats = dataset_statistics(tie_pairs, run)
        assert stats.unpaired_per_category == {
            "plants": {"tie": 2, "score margin N is below the minimum of N": 1}
        }
        card = card_text(tie_pairs, run)
        assert "| category | prompts | pairs | no pair (why) |" in card
        assert "| plants | 3 | 0 | tie (2); score margin N is below the minimum of N (1) |" in card


class TestRunRecord:
    @staticmethod
    def run_info(options: RunOptions, tmp_path: Path) -> RunInfo:
        """The run.json `agfsync generate` would write for the offline preset with
        `options` (the pipeline is built, not run)."""
        pipeline = build_preset("offline")
        outcome = RunOutcome(
            preset="offline",
            pipeline=pipeline,
            options=options,
            rows=None,
            output_dir=tmp_path,
            extra_files={},
            artifacts_dir=None,
            started=0.0,
            expected_prompts=0,
            failures=StepFailures(pipeline),
        )
        return _run_info(outcome, [])

    def test_generate_records_keep_ties_the_margin_and_its_options(self, tmp_path: Path) -> None:
        options = RunOptions(
            prompts_file=Path("/home/me/prompts/my.jsonl"),
            num_images=3,
            min_margin=0.5,
            keep_ties=True,
            resolution=48,
            sampling="fast",
        )
        run = self.run_info(options, tmp_path)
        assert (run.keep_ties, run.min_margin) == (True, 0.5)
        assert run.options.flags() == [  # files by name: the folder is the user's
            ("--prompts", "my.jsonl"),
            ("--num-images", "3"),
            ("--resolution", "48"),
            ("--sampling", "fast"),
        ]

    def test_a_plain_run_records_the_presets_values(self, tmp_path: Path) -> None:
        run = self.run_info(RunOptions(), tmp_path)
        assert (run.keep_ties, run.min_margin, run.options.flags()) == (False, 0.0, [])


class TestReproduceCommand:
    def test_the_command_carries_the_runs_options_and_names_the_users_files(
        self, tie_pairs: datasets.Dataset
    ) -> None:
        run = RunInfo(
            preset="offline",
            seed=3,
            keep_ties=True,
            min_margin=0.5,
            options=GenerateOptions(
                prompts_file="my prompts.jsonl", num_images=3, resolution=48, sampling="fast"
            ),
        )
        card = card_text(tie_pairs, run)
        assert (
            "agfsync generate --preset offline --prompts 'my prompts.jsonl' --num-images 3 "
            "--resolution 48 --sampling fast --seed 3 --min-margin 0.5 --keep-ties "
            "-o my-dataset"
        ) in card
        assert "the prompt file `my prompts.jsonl` is not part of this dataset" in card

    def test_a_preset_run_needs_no_files(self, tie_pairs: datasets.Dataset) -> None:
        card = card_text(tie_pairs, RunInfo(preset="offline", seed=0))
        assert "agfsync generate --preset offline --seed 0 -o my-dataset" in card
        assert "not part of this dataset" not in card


class TestCardMetadata:
    @pytest.mark.parametrize(
        ("model", "license_id", "family"),
        [
            (
                "stable-diffusion-v1-5/stable-diffusion-v1-5",
                "creativeml-openrail-m",
                "stable-diffusion",
            ),
            ("stabilityai/stable-diffusion-xl-base-1.0", "openrail++", "stable-diffusion-xl"),
            ("black-forest-labs/FLUX.1-schnell", "apache-2.0", "flux"),
            ("tiny:stable-diffusion", "apache-2.0", "tiny-random"),
        ],
    )
    def test_known_image_models_give_their_license_and_family(
        self, model: str, license_id: str, family: str
    ) -> None:
        license_of_own_prompts, note = dataset_license([model], [], prompt_file="mine.jsonl")
        assert license_of_own_prompts == license_id
        assert f"under `{license_id}`" in note and "under the terms you give them" in note
        assert model_family_tags([model]) == [family]

    def test_every_known_model_has_a_license_id_and_family(self) -> None:
        hub_id = re.compile(r"^[a-z0-9][a-z0-9.+-]*$")
        for model, facts in KNOWN_MODELS.items():
            assert hub_id.match(facts.license) and hub_id.match(facts.family), model

    def test_images_and_text_under_different_licenses_give_other_naming_each(self) -> None:
        license_id, note = dataset_license(["stabilityai/stable-diffusion-xl-base-1.0"], [])
        assert license_id == "other"  # the shipped prompts are apache-2.0, SDXL openrail++
        assert "the images come from the image model" in note and "`openrail++`" in note
        assert "the prompts and QA pairs come from the prompt file shipped" in note
        assert "`apache-2.0`" in note
        assert dataset_license(["tiny:stable-diffusion"], [])[0] == "apache-2.0"

    def test_an_unknown_model_gives_other_and_says_so(self) -> None:
        license_id, note = dataset_license(["my-org/my-model"], [], prompt_file="p.jsonl")
        assert license_id == "other"
        assert "my-org/my-model), whose license agfsync does not know" in note
        llm_license, llm_note = dataset_license(["tiny:stable-diffusion"], ["gpt-4o-mini"])
        assert llm_license == "other"
        assert "the LLM (gpt-4o-mini), whose license agfsync does not know" in llm_note
        assert "`apache-2.0`" in llm_note  # the images' license is still named
        assert text_license(["gpt-4o-mini"])[0] == "other"
        assert text_license([])[0] == "apache-2.0"

    @pytest.mark.parametrize(
        ("rows", "category"),
        [
            (999, "n<1K"),
            (1_000, "1K<n<10K"),
            (9_999, "1K<n<10K"),
            (45_834, "10K<n<100K"),
            (100_000, "100K<n<1M"),
            (1_000_000, "1M<n<10M"),
            (10**12, "n>1T"),
        ],
    )
    def test_size_categories(self, rows: int, category: str) -> None:
        assert size_category(rows) == category

    def test_the_card_yaml_holds_license_tags_and_size(self, tie_pairs: datasets.Dataset) -> None:
        card = DatasetCard(card_text(tie_pairs, RunInfo(preset="offline", seed=0)))
        data = card.data.to_dict()
        assert data["license"] == "other"  # candidate_rows' image model "tiny" is unknown
        assert data["size_categories"] == ["n<1K"]
        assert {"rlaif", "diffusion-dpo"} <= set(data["tags"])


def test_the_category_chart_counts_in_whole_numbers_with_its_legend_off_the_bars() -> None:
    figure = bar_chart(
        {"prompts": {"animals": 3, "plants": 1}, "pairs": {"animals": 2}},
        ylabel="count",
        counts=True,
    )
    figure.canvas.draw()
    (axis,) = figure.axes
    ticks = [tick for tick in axis.get_xticks() if 0 <= tick <= 3]
    assert ticks and all(tick == int(tick) for tick in ticks)
    (legend,) = figure.legends
    legend_box = legend.get_window_extent()
    assert not legend_box.overlaps(axis.get_window_extent())  # below the axes, not on bars


def test_the_dataset_report_says_why_a_category_has_no_pairs(
    tie_pairs: datasets.Dataset, tmp_path: Path
) -> None:
    from evaluation.report import _category_rows

    run = RunInfo(preset="offline", seed=0, unpaired=[unpaired("plants", TIE_REASON)])
    rows = _category_rows(tie_pairs, dataset_statistics(tie_pairs, run))
    assert ["plants", "1", "0", "-", "tie (1)"] in rows


@pytest.mark.slow
def test_reselect_with_keep_ties_exports_and_counts_the_ties(
    offline_run: Path, tmp_path: Path
) -> None:
    """`agfsync reselect --keep-ties` on a copy of the shared run whose first prompt's
    VQA scores all tie: the tie is a row with `label_0 = 0.5`, counted on the card, and
    run.json records `keep_ties`, the margin and the weights file."""
    run_dir = tmp_path / "run"
    shutil.copytree(offline_run, run_dir)
    (shard,) = (run_dir / "data").glob("*.parquet")
    table = pq.read_table(shard)
    rows = table.to_pylist()
    rows[0]["vqa_scores"] = [50.0] * len(rows[0]["vqa_scores"])
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), shard)
    (tmp_path / "vqa.yaml").write_text("weights: {vqa: 1.0, clip: 0.0, aesthetic: 0.0}\n")
    result = run_command(
        ["agfsync", "reselect", "run", "--weights", "vqa.yaml", "-o", "out", "--keep-ties"],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "out"
    pairs = datasets.load_dataset(str(out), split="train")
    assert pairs["label_0"].count(TIE_LABEL) == 1
    run = json.loads((out / "run.json").read_text())
    assert (run["keep_ties"], run["min_margin"]) == (True, 0.0)
    assert run["options"]["weights_file"] == "vqa.yaml"
    card = (out / "README.md").read_text()
    assert "| ties (best and worst candidate scored alike) | 1 kept as pairs" in card
    assert "--weights vqa.yaml --seed 0 --keep-ties -o my-dataset" in card
