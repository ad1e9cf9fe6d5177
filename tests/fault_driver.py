"""Runs the `agfsync` command line with one fault injected, for the fault tests.

`python -m tests.fault_driver FAULT [agfsync arguments...]` patches one method of
an engine (or of `datasets`), then runs the command exactly as `agfsync` would.
distilabel forks its step processes from this one, so they inherit the fault; each
fault counts calls within the process it fires in (one replica per step).
"""

import errno
import itertools
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import datasets
import torch

from agfsync.cli import app
from agfsync.generation import CandidateImageGenerator
from agfsync.run.artifacts import run_artifacts_root
from agfsync.scoring.clip_score import CLIPScorer
from agfsync.scoring.vqa import VQAScorer
from agfsync.steps.judging import ImageJudging


def judge_fails_on_its_second_batch() -> None:
    """The CLIP judge raises on the second batch it is given, and only then."""
    original = CLIPScorer._score
    calls = itertools.count(1)

    def score(self: CLIPScorer, *args: Any, **kwargs: Any) -> Any:
        if next(calls) == 2:
            raise RuntimeError("simulated judge failure")
        return original(self, *args, **kwargs)

    CLIPScorer._score = score  # type: ignore[method-assign]


def out_of_memory_above_small_batches() -> None:
    """Generation runs out of memory above 4 images per call, the VQA judge above 8."""
    render = CandidateImageGenerator._render
    vqa = VQAScorer._score

    def limited_render(
        self: CandidateImageGenerator, prompts: Any, batch: list, config: Any
    ) -> Any:
        if len(batch) > 4:
            raise torch.OutOfMemoryError("simulated: CUDA out of memory (generation)")
        return render(self, prompts, batch, config)

    def limited_vqa(self: VQAScorer, *args: Any, **kwargs: Any) -> Any:
        if self.batch_size > 8:
            raise torch.OutOfMemoryError("simulated: CUDA out of memory (vqa)")
        return vqa(self, *args, **kwargs)

    CandidateImageGenerator._render = limited_render  # type: ignore[method-assign]
    VQAScorer._score = limited_vqa  # type: ignore[method-assign]


def generation_out_of_memory_on_its_second_batch() -> None:
    """Every denoising call of the image step's second batch runs out of memory, at any
    batch size, as when a co-tenant holds the GPU for a while."""
    generate = CandidateImageGenerator.generate
    render = CandidateImageGenerator._render
    calls = itertools.count(1)
    failing = {"now": False}

    def generate_counting(
        self: CandidateImageGenerator, prompts: Any, jobs: Any, config: Any
    ) -> Iterator[Any]:
        failing["now"] = next(calls) == 2
        yield from generate(self, prompts, jobs, config)

    def render_or_fail(self: CandidateImageGenerator, prompts: Any, batch: Any, config: Any) -> Any:
        if failing["now"]:
            raise torch.OutOfMemoryError("simulated: CUDA out of memory (generation)")
        return render(self, prompts, batch, config)

    CandidateImageGenerator.generate = generate_counting  # type: ignore[method-assign]
    CandidateImageGenerator._render = render_or_fail  # type: ignore[method-assign]


def image_corrupted_before_judging() -> None:
    """Just before the first batch is judged, its first prompt's second image file is
    overwritten with bytes that are not an image (a bad disk, a half-synced copy)."""
    judge = ImageJudging._judge
    calls = itertools.count(1)

    def corrupt_then_judge(self: ImageJudging, inputs: list[dict[str, Any]]) -> Any:
        if next(calls) == 1:
            (run_artifacts_root(self) / inputs[0]["image_paths"][1]).write_bytes(b"not an image")
        return judge(self, inputs)

    ImageJudging._judge = corrupt_then_judge


def disk_full_when_writing_parquet() -> None:
    """Writing a parquet file fills the disk: part of it lands, then ENOSPC."""

    def to_parquet(self: datasets.Dataset, path: Any, *args: Any, **kwargs: Any) -> int:
        Path(path).write_bytes(b"PAR1 half a shard")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    datasets.Dataset.to_parquet = to_parquet


def image_model_fails_to_load() -> None:
    """Loading the image model raises (a broken checkpoint, a driver too old)."""

    def load(self: CandidateImageGenerator) -> None:
        raise RuntimeError("simulated: the checkpoint's unet is truncated")

    CandidateImageGenerator.load = load  # type: ignore[method-assign]


def no_free_disk() -> None:
    """Every file system reports 10 kB free."""
    usage = shutil.disk_usage

    def nearly_full(path: Any) -> Any:
        total, used, _free = usage(path)
        return type(usage(path))(total, used, 10_000)

    shutil.disk_usage = nearly_full


FAULTS: dict[str, Callable[[], None]] = {
    "no-free-disk": no_free_disk,
    "image-model-fails-to-load": image_model_fails_to_load,
    "judge-fails-on-its-second-batch": judge_fails_on_its_second_batch,
    "out-of-memory-above-small-batches": out_of_memory_above_small_batches,
    "generation-out-of-memory-on-its-second-batch": generation_out_of_memory_on_its_second_batch,
    "image-corrupted-before-judging": image_corrupted_before_judging,
    "disk-full-when-writing-parquet": disk_full_when_writing_parquet,
}


if __name__ == "__main__":
    FAULTS[sys.argv[1]]()
    app(args=sys.argv[2:], prog_name="agfsync")
