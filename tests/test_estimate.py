"""`agfsync estimate`: the arithmetic against hand computations, and the command."""

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from agfsync.errors import ConfigurationError
from agfsync.pipelines import build_preset
from agfsync.run.estimate import EstimateTables, estimate_run
from agfsync.text.prompt_files import SAMPLE_PROMPTS_PATH
from tests.helpers import run_command

TABLES = {
    "profiles": {
        "test": {
            "description": "hand-made",
            "images_per_second": 2.0,
            "reference_steps": 25,
            "vqa_pairs_per_second": 100.0,
            "judge_images_per_second": 50.0,
            "bytes_per_image": 1000,
            "bytes_per_prompt": 500,
            "startup_seconds": 36.0,
        }
    },
    "preset_profiles": {"agfsync-sd15": "test"},
    "llm_calls": {
        "write_prompts": {"input_tokens": 100, "output_tokens": 200},
        "decompose_prompts": {"input_tokens": 300, "output_tokens": 50},
    },
    "prices_as_of": "test",
    "prices": {"gpt-4o-mini": {"input_per_million": 1.0, "output_per_million": 2.0}},
}


def test_full_preset_estimate_matches_a_hand_computation() -> None:
    pipeline = build_preset("agfsync-sd15")  # N = 8, 50 steps, QA by Gemini, 6 rounds
    result = estimate_run(
        pipeline,
        "agfsync-sd15",
        1000,
        tables=EstimateTables.model_validate(TABLES),
        questions_per_prompt=9.0,
    )
    writer, qa = result.llm_steps
    assert (writer.step, writer.calls) == ("write_prompts", 100)  # 10 prompts per call
    assert (writer.input_tokens, writer.output_tokens) == (10_000, 20_000)
    assert writer.cost_usd == pytest.approx((10_000 * 1.0 + 20_000 * 2.0) / 1e6)
    assert (qa.step, qa.calls, qa.cost_usd) == ("decompose_prompts", 6000, None)  # no price
    assert result.num_images == 8000
    assert result.num_questions == 72_000
    # 8000 images at 2 images/s measured at 25 steps, run at 50 steps: 8000 s
    assert result.generation_hours == pytest.approx(8000 / 3600)
    # 72,000 pairs at 100/s + 8000 images through CLIP and aesthetic at 50/s
    assert result.judging_hours == pytest.approx((720 + 160) / 3600)
    assert result.startup_hours == pytest.approx(0.01)
    # candidates once (the dataset folder links them), chosen + rejected in the parquet,
    # and the rows and records of each prompt
    assert result.disk_bytes == (8000 + 2 * 1000) * 1000 + 1000 * 500
    assert any("no price for gemini-2.0-flash" in line for line in result.assumptions)


def test_a_fixed_part_per_image_does_not_scale_with_the_steps() -> None:
    """0.5 s per image at 25 steps, 0.1 s of it fixed: at 50 steps 0.1 + 0.4 x 2 = 0.9 s.
    A profile measured with the stages running at once gives the slower one's time."""
    tables = json.loads(json.dumps(TABLES))
    tables["profiles"]["test"]["fixed_seconds_per_image"] = 0.1

    def estimate(tables: dict) -> Any:
        return estimate_run(
            build_preset("agfsync-sd15"),
            "agfsync-sd15",
            1000,
            tables=EstimateTables.model_validate(tables),
            questions_per_prompt=9.0,
        )

    result = estimate(tables)
    assert result.generation_hours == pytest.approx(8000 * 0.9 / 3600)
    assert result.judging_hours == pytest.approx(880 / 3600)
    assert result.gpu_hours == pytest.approx((7200 + 880 + 36) / 3600)
    assert result.overlapped_hours is None  # measured alone or fitted: the stages add up
    assert any("beyond a fixed 0.1 s per image" in line for line in result.assumptions)
    tables["profiles"]["test"]["stages_overlap"] = True
    assert estimate(tables).overlapped_hours == pytest.approx((7200 + 36) / 3600)

    tables["profiles"]["test"]["fixed_seconds_per_image"] = 0.5  # the whole image
    with pytest.raises(ValueError, match="fixed_seconds_per_image must be less"):
        EstimateTables.model_validate(tables)


def test_a_profile_of_other_models_gives_no_time_and_says_why() -> None:
    """The shipped GPU profile measured BLIP-2 flan-t5-xl; agfsync-sd15 judges with xxl."""
    result = estimate_run(
        build_preset("agfsync-sd15"), "agfsync-sd15", 1000, tables=EstimateTables.load()
    )
    assert result.generation_hours is not None and result.generation_hours > 0
    assert result.judging_hours is None and result.gpu_hours is None
    assert any(
        "measured VQA with Salesforce/blip2-flan-t5-xl" in line
        and "Salesforce/blip2-flan-t5-xxl" in line
        for line in result.assumptions
    )


def test_text_preset_has_no_image_stages() -> None:
    result = estimate_run(
        build_preset("text-openai"),
        "text-openai",
        50,
        tables=EstimateTables.model_validate(TABLES),
    )
    assert result.num_images == 0 and result.gpu_hours == 0
    assert [step.step for step in result.llm_steps] == ["write_prompts", "decompose_prompts"]


def test_a_preset_reading_prompts_counts_their_questions() -> None:
    """The offline preset reads the shipped sample: 24 prompts with 226 valid questions."""
    sample = [json.loads(line) for line in SAMPLE_PROMPTS_PATH.read_text().splitlines()]
    valid = sum(pair.get("valid", True) for record in sample for pair in record["qa_pairs"])
    result = estimate_run(
        build_preset("offline"), "offline", len(sample), tables=EstimateTables.load()
    )
    assert result.num_images == 4 * len(sample)  # N = 4
    assert result.num_questions == 4 * valid


def test_unknown_profile_is_a_clear_error() -> None:
    with pytest.raises(ConfigurationError, match="No throughput profile 'nope'"):
        estimate_run(
            build_preset("offline"),
            "offline",
            10,
            tables=EstimateTables.load(),
            profile="nope",
        )


def test_command_with_user_tables(tmp_path: Path) -> None:
    tables = tmp_path / "tables.yaml"
    tables.write_text(yaml.safe_dump(TABLES))
    result = run_command(
        [
            "agfsync", "estimate", "--preset", "agfsync-sd15", "--num-prompts", "1000",
            "--tables", str(tables), "--questions-per-prompt", "9",
        ],
        tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "write_prompts (gpt-4o-mini): 100 calls" in result.stdout
    assert "images: 8,000; judged questions: 72,000" in result.stdout
    assert "generation 2.22 h" in result.stdout
    assert "disk: 10.5 MB" in result.stdout  # (8000 + 2 x 1000 images) x 1 kB + 1000 x 0.5 kB


def test_the_fast_sampling_setting_scales_the_generation_time(tmp_path: Path) -> None:
    tables = tmp_path / "tables.yaml"
    tables.write_text(yaml.safe_dump(TABLES))
    base = ["agfsync", "estimate", "--preset", "agfsync-sd15", "--num-prompts", "1000"]
    base += ["--tables", str(tables), "--questions-per-prompt", "9"]
    paper = run_command([*base, "--sampling", "paper"], tmp_path)
    fast = run_command([*base, "--sampling", "fast"], tmp_path)
    assert paper.returncode == 0 and fast.returncode == 0, fast.stderr[-2000:]
    assert "generation 2.22 h" in paper.stdout  # 50 steps, as without --sampling
    assert "generation 3,200 s" in fast.stdout  # 8,000 images x 20/25 steps / 2 per s
    unknown = run_command([*base, "--sampling", "fastest"], tmp_path)
    assert unknown.returncode == 2 and "choose one of: paper, fast" in unknown.stderr
