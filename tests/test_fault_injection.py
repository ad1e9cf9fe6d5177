"""Faults injected into a real offline run (`tests/fault_driver.py`): each run either
completes with the failures recorded per row or stops with a clear message, and
running the same command again finishes the job, with the dataset an undisturbed run
produces."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.helpers import REPO_ROOT, assert_same_dataset, run_command

NUM_PROMPTS = 16
"""Two batches of 8 prompts, 4 candidates each."""


def generate_args(output: Path) -> list[str]:
    return ["generate", "-o", str(output), "--num-prompts", str(NUM_PROMPTS)]


def cache_env(output: Path) -> dict[str, str]:
    """A distilabel cache per scenario, shared by its faulty run and its re-run."""
    return {"DISTILABEL_CACHE_DIR": str(output.parent / f"{output.name}-cache")}


def run_with_fault(fault: str, output: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.fault_driver", fault, *generate_args(output)],
        cwd=REPO_ROOT,
        env={**os.environ, **cache_env(output)},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def run_again(output: Path) -> subprocess.CompletedProcess[str]:
    """The same command, without the fault."""
    result = run_command(
        ["agfsync", *generate_args(output)], cwd=output.parent, env=cache_env(output)
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "prompts did not finish" not in result.stderr
    return result


def unpaired(output: Path) -> list[dict[str, str]]:
    return json.loads((output / "run.json").read_text())["unpaired"]


@pytest.fixture(scope="module")
def undisturbed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("undisturbed") / "run"
    result = run_command(
        ["agfsync", *generate_args(output)], cwd=output.parent, env=cache_env(output)
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return output


class TestFaultsDuringARun:
    def test_a_judge_failing_on_one_batch_is_recorded_and_judged_again(
        self, undisturbed: Path, tmp_path: Path
    ) -> None:
        output = tmp_path / "run"
        faulty = run_with_fault("judge-fails-on-its-second-batch", output)
        assert faulty.returncode == 0, faulty.stderr[-3000:]
        assert "8 prompts did not finish" in faulty.stderr
        assert "judge clip failed: RuntimeError: simulated judge failure" in faulty.stderr
        assert pq.read_table(output / "data").num_rows == NUM_PROMPTS - 8
        assert [item["reason"] for item in unpaired(output)] == [
            "only 0 of 4 candidates have a score; a pair needs 2"
        ] * 8

        run_again(output)
        assert_same_dataset(output, undisturbed)

    def test_an_image_corrupted_before_judging_is_rendered_and_judged_again(
        self, undisturbed: Path, tmp_path: Path
    ) -> None:
        output = tmp_path / "run"
        faulty = run_with_fault("image-corrupted-before-judging", output)
        assert faulty.returncode == 0, faulty.stderr[-3000:]
        assert "1 prompts did not finish" in faulty.stderr
        assert "unreadable image generate_images/images/" in faulty.stderr
        rows = pq.read_table(output / "data").to_pylist()
        damaged = [row for row in rows if any(row["judging_errors"])]
        assert len(damaged) == 1 and damaged[0]["judging_errors"][1].startswith("unreadable")
        assert damaged[0]["vqa_scores"][1] != damaged[0]["vqa_scores"][1]  # NaN

        run_again(output)
        assert_same_dataset(output, undisturbed)

    def test_out_of_memory_halves_the_batches_and_loses_nothing(self, tmp_path: Path) -> None:
        output = tmp_path / "run"
        result = run_with_fault("out-of-memory-above-small-batches", output)
        assert result.returncode == 0, result.stderr[-3000:]
        log = (output / "pipeline.log").read_text()
        assert "Out of memory; retrying with batches of 4 images." in log
        assert "vqa judge out of memory; retrying with batches of 8." in log
        assert "prompts did not finish" not in result.stderr
        rows = pq.read_table(output / "data").to_pylist()
        assert len(rows) == NUM_PROMPTS
        assert not any(error for row in rows for error in row["judging_errors"])

    def test_out_of_memory_at_any_batch_size_fails_those_prompts_until_a_rerun(
        self, undisturbed: Path, tmp_path: Path
    ) -> None:
        output = tmp_path / "run"
        faulty = run_with_fault("generation-out-of-memory-on-its-second-batch", output)
        assert faulty.returncode == 0, faulty.stderr[-3000:]
        assert "8 prompts did not finish" in faulty.stderr
        assert "generate_images: rendering failed: OutOfMemoryError" in faulty.stderr
        assert len(unpaired(output)) == 8

        run_again(output)
        assert_same_dataset(output, undisturbed)

    def test_a_full_disk_while_writing_the_dataset_stops_cleanly(
        self, undisturbed: Path, tmp_path: Path
    ) -> None:
        output = tmp_path / "run"
        faulty = run_with_fault("disk-full-when-writing-parquet", output)
        assert faulty.returncode == 2
        message = faulty.stderr.strip().splitlines()[-1]
        assert "Could not write the dataset to" in message
        assert "No space left on device" in message and "run the same command again" in message
        assert not output.exists() and not output.with_name("run.partial").exists()

        run_again(output)
        assert_same_dataset(output, undisturbed)
