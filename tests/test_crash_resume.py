"""Killing `agfsync generate` at any moment loses nothing.

The offline preset runs on 64 prompts and is killed with SIGKILL (its whole process
group, as a scheduler or a lost machine would) at points drawn at random within each
phase: while images are being generated, while they are being judged, and while the
dataset folder is being written. After each kill the same command is started again;
the last start runs to the end. Its dataset must equal, row by row and image by image,
the one an uninterrupted run produces.
"""

import os
import random
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from agfsync.ownership import STAGING_SUFFIX
from agfsync.testing.prompt_files import write_scaled_prompts
from tests.helpers import BIN_DIR, assert_same_dataset, run_command

pytestmark = pytest.mark.slow  # `make test-fast` skips this module

NUM_PROMPTS = 64
"""Enough for several denoising calls and judged batches to kill between (8 each)."""
NUM_IMAGES = NUM_PROMPTS * 4
NUM_JUDGED_BATCHES = NUM_PROMPTS // 8
KILL_POINTS_SEED = 20261201
"""Seeds the random kill points, so a failure can be replayed exactly."""
POLL_SECONDS = 0.02
"""Each poll globs the cache; a kill lands within 20 ms of its point (the shortest phase,
writing the dataset folder, lasts about a second)."""


def count_files(cache: Path, pattern: str) -> int:
    return sum(1 for _ in cache.glob(pattern))


def images_written(cache: Path) -> int:
    return count_files(
        cache, "*/*/executions/*/data/steps_artifacts/generate_images/images/*/*.png"
    )


def batches_judged(cache: Path) -> int:
    return count_files(cache, "*/*/executions/*/data/agfsync-journal/judge_images-*/*.json")


def kill_when(command: list[str], cache: Path, reached: Callable[[], bool], what: str) -> None:
    """Start `command`, SIGKILL its process group as soon as `reached()`; fail if the run
    ends before that."""
    log = cache.with_name(cache.name + ".log")
    with log.open("w") as stderr:
        run = subprocess.Popen(
            command,
            env={**os.environ, "DISTILABEL_CACHE_DIR": str(cache)},
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )
        deadline = time.monotonic() + 600
        while not reached():
            assert run.poll() is None, f"the run ended before {what}: {log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, f"{what} never happened"
            time.sleep(POLL_SECONDS)
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()
    assert run.returncode == -signal.SIGKILL, what


def test_killed_runs_resume_to_the_uninterrupted_dataset(tmp_path: Path) -> None:
    prompts = write_scaled_prompts(tmp_path / "prompts.jsonl", NUM_PROMPTS)
    rng = random.Random(KILL_POINTS_SEED)

    uninterrupted = tmp_path / "uninterrupted"
    result = run_command(
        ["agfsync", "generate", "--prompts", str(prompts), "-o", str(uninterrupted)],
        cwd=tmp_path,
        env={"DISTILABEL_CACHE_DIR": str(tmp_path / "cache-uninterrupted")},
    )
    assert result.returncode == 0, result.stderr[-3000:]

    output, cache = tmp_path / "killed", tmp_path / "cache-killed"
    command = [str(BIN_DIR / "agfsync"), "generate", "--prompts", str(prompts), "-o", str(output)]
    images_at = rng.randint(NUM_IMAGES // 10, NUM_IMAGES // 2)
    kill_when(
        command,
        cache,
        lambda: images_written(cache) >= images_at,
        f"generation had written {images_at} images",
    )
    batches_at = rng.randint(NUM_JUDGED_BATCHES // 3, 3 * NUM_JUDGED_BATCHES // 4)
    kill_when(
        command,
        cache,
        lambda: batches_judged(cache) >= batches_at,
        f"judging had recorded {batches_at} batches",
    )
    staging = f".{output.name}.*{STAGING_SUFFIX}"
    kill_when(
        command,
        cache,
        lambda: any(output.parent.glob(staging)),
        "the dataset folder was being written",
    )
    assert not output.exists()

    result = run_command(command, cwd=tmp_path, env={"DISTILABEL_CACHE_DIR": str(cache)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "redoing: export_pairs)" in result.stderr  # only the leaf step ran again

    rows = pq.read_table(output / "data").to_pylist()
    ids = [row["prompt_id"] for row in rows]
    assert len(ids) == len(set(ids)) == NUM_PROMPTS  # no row lost, none twice
    assert_same_dataset(output, uninterrupted)
