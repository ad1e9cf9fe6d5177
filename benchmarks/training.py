"""Speed and memory of the Diffusion-DPO trainer: seconds per optimizer step.

What it measures: the real trainer (`agfsync.train`, accelerate loop, VAE encoding,
policy and reference UNet passes, backward, AdamW) on a synthetic preference dataset
of random images at the model's resolution, once per combination of LoRA / full
fine-tuning and gradient checkpointing off / on. Each combination runs
`--warmup-steps + --steps` optimizer steps of `--batch-size` pairs (one micro-batch
per step: no accumulation, so a step is exactly one forward-backward of 2 x batch
latents through the policy plus 2 x batch through the reference); the seconds per
step are the median over the timed steps, the pairs/s follow. On CUDA it also
reports the peak memory allocated, and `--batch-size auto` doubles the batch from 1
until a step runs out of memory and times the largest that fitted.

Models have real architectures and random weights, built offline:
  tiny   the `tiny:stable-diffusion` test model (32 px; plumbing, not speed)
  sd15   Stable Diffusion 1.5 (UNet 860M) at 512 px
  sdxl   SDXL base (UNet 2.6B, two text encoders) at 1024 px
(the builders of `benchmarks/image_generation.py`, with its character-level tokenizer).

Anchor: the AGFSync paper trained SD 1.5 for 1000 steps of 128 pairs in 1.5 h on 8
A100 GPUs, i.e. 128 * 1000 / (1.5 * 3600 * 8) = about 3.0 pairs/s per GPU.

Example (GPU):
    python benchmarks/training.py --architecture sd15 --batch-size auto --json sd15.json
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import datasets
import diffusers
import numpy as np
import torch
import transformers
from image_generation import FULL_SIZE_BUILDERS
from machine import machine_settings, synchronize
from PIL import Image

from agfsync.models import resolve_device
from agfsync.train.config import DPOTrainingConfig
from agfsync.train.loop import DPOTrainer, TrainingResult

PAPER_PAIRS_PER_GPU_SECOND = 128 * 1000 / (1.5 * 3600 * 8)
"""AGFSync paper: 1000 steps of 128 pairs in 1.5 h on 8 A100 GPUs (SD 1.5)."""

RESOLUTIONS = {"tiny": 32, "sd15": 512, "sdxl": 1024}
COMBINATIONS = [
    {"use_lora": True, "gradient_checkpointing": False},
    {"use_lora": True, "gradient_checkpointing": True},
    {"use_lora": False, "gradient_checkpointing": False},
    {"use_lora": False, "gradient_checkpointing": True},
]


class TimedTrainer(DPOTrainer):
    """The trainer, noting when each optimizer step ends (and nothing else)."""

    step_ends: list[float]

    def _end_optimizer_step(self, result: TrainingResult) -> None:
        synchronize(self.accelerator.device)
        self.step_ends.append(time.perf_counter())
        super()._end_optimizer_step(result)


def write_random_pairs(folder: Path, num_pairs: int, resolution: int) -> Path:
    """A preference dataset of seeded noise images, in the layout agfsync publishes."""
    rng = np.random.default_rng(0)

    def noise() -> Image.Image:
        return Image.fromarray(rng.integers(0, 256, (resolution, resolution, 3), dtype=np.uint8))

    rows = {
        "caption": [f"a random picture, number {index}" for index in range(num_pairs)],
        "jpg_0": [noise() for _ in range(num_pairs)],
        "jpg_1": [noise() for _ in range(num_pairs)],
        "label_0": [1.0] * num_pairs,
    }
    features = datasets.Features(
        caption=datasets.Value("string"),
        jpg_0=datasets.Image(),
        jpg_1=datasets.Image(),
        label_0=datasets.Value("float64"),
    )
    (folder / "data").mkdir(parents=True)
    datasets.Dataset.from_dict(rows, features=features).to_parquet(
        folder / "data" / "train-00000-of-00001.parquet"
    )
    return folder


def run_steps(
    model: str, dataset: Path, output: Path, batch_size: int, steps: int, **settings: Any
) -> dict[str, Any]:
    """Train `steps` optimizer steps of `batch_size` pairs; step end times and memory."""
    config = DPOTrainingConfig(
        pretrained_model=model,
        dataset=str(dataset),
        output_dir=output,
        train_batch_size=batch_size,
        effective_batch_size=batch_size,
        max_train_steps=steps,
        lr_scheduler="constant",
        report_to="none",
        validation_steps=0,
        checkpointing_steps=steps + 1,  # none: saving is not what is timed
        random_flip=False,
        **settings,
    )
    trainer = TimedTrainer(config)
    trainer.step_ends = []
    device = trainer.accelerator.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    trainer.run()
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    ends = [started, *trainer.step_ends]
    del trainer
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"step_seconds": [b - a for a, b in itertools.pairwise(ends)], "peak": peak}


def largest_batch(model: str, dataset: Path, scratch: Path, num_pairs: int, **settings: Any) -> int:
    """The largest power-of-two batch (up to the dataset's size) whose first step fits
    in GPU memory."""
    fits, batch_size = 0, 1
    while batch_size <= num_pairs:
        out_of_memory = False
        try:
            run_steps(model, dataset, scratch / f"probe-{batch_size}", batch_size, 1, **settings)
        except torch.OutOfMemoryError:
            out_of_memory = True
        if out_of_memory:  # outside the handler, whose traceback holds the trainer
            gc.collect()
            torch.cuda.empty_cache()
            break
        fits, batch_size = batch_size, batch_size * 2
    if not fits:
        raise SystemExit(f"Not even one pair per step fits with {settings}.")
    return fits


def measure(
    model: str, dataset: Path, scratch: Path, args: argparse.Namespace, **settings: Any
) -> dict[str, Any]:
    batch_size = (
        largest_batch(model, dataset, scratch, args.num_pairs, **settings)
        if args.batch_size == "auto"
        else int(args.batch_size)
    )
    if batch_size > args.num_pairs:
        raise SystemExit(f"--batch-size {batch_size} is above --num-pairs {args.num_pairs}.")
    run = run_steps(
        model,
        dataset,
        scratch / "run",
        batch_size,
        args.warmup_steps + args.steps,
        **settings,
    )
    seconds = statistics.median(run["step_seconds"][args.warmup_steps :])
    return {
        "mode": "lora" if settings["use_lora"] else "full",
        "gradient_checkpointing": settings["gradient_checkpointing"],
        "batch_size": batch_size,
        "seconds_per_step": round(seconds, 3),
        "pairs_per_second": round(batch_size / seconds, 3),
        "peak_memory_gib": None if run["peak"] is None else round(run["peak"], 1),
    }


def markdown_table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| mode | gradient checkpointing | pairs per step | s per step | pairs/s "
        "| peak GPU memory (GiB) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for row in results:
        memory = "-" if row["peak_memory_gib"] is None else f"{row['peak_memory_gib']:.1f}"
        lines.append(
            f"| {row['mode']} | {'on' if row['gradient_checkpointing'] else 'off'} | "
            f"{row['batch_size']} | {row['seconds_per_step']:.3f} | "
            f"{row['pairs_per_second']:.2f} | {memory} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Seconds per Diffusion-DPO optimizer step: LoRA vs full, checkpointing.",
        epilog=f"Paper anchor: about {PAPER_PAIRS_PER_GPU_SECOND:.1f} pairs/s per A100.",
    )
    parser.add_argument("--architecture", choices=("tiny", "sd15", "sdxl"), default="tiny")
    parser.add_argument(
        "--batch-size", default="4", help="pairs per step, or `auto` (CUDA: largest that fits)"
    )
    parser.add_argument(
        "--num-pairs",
        type=int,
        default=128,
        help="pairs in the synthetic dataset, the largest batch probed (default: 128)",
    )
    parser.add_argument("--steps", type=int, default=5, help="timed optimizer steps")
    parser.add_argument("--warmup-steps", type=int, default=2, help="untimed first steps")
    parser.add_argument(
        "--mixed-precision", default=None, help="no, fp16 or bf16 (default: fp16 on CUDA)"
    )
    parser.add_argument(
        "--resolution", type=int, default=None, help="square side in px; default: the model's"
    )
    parser.add_argument(
        "--model-dir", type=Path, default=None, help="sd15/sdxl: build (or reuse) the model here"
    )
    parser.add_argument(
        "--modes", default="lora,full", help="comma-separated: lora, full (default: both)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    for library in (diffusers, transformers):
        library.utils.logging.set_verbosity_error()
        library.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    device = resolve_device(None)
    resolution = args.resolution or RESOLUTIONS[args.architecture]
    with tempfile.TemporaryDirectory(prefix="agfsync-training-benchmark-") as tmp:
        scratch = Path(tmp)
        if args.architecture == "tiny":
            model = "tiny:stable-diffusion"
        else:
            folder = args.model_dir or scratch / args.architecture
            if not (folder / "model_index.json").exists():
                FULL_SIZE_BUILDERS[args.architecture](folder, torch.float32)
            model = str(folder)
        # A step never holds more pairs than the dataset (the loader neither repeats nor
        # pads an epoch), so the dataset caps the batch; later steps start new epochs.
        dataset = write_random_pairs(scratch / "pairs", args.num_pairs, resolution)
        results: list[dict[str, Any]] = []
        modes = {mode.strip() == "lora" for mode in args.modes.split(",")}
        for settings in (item for item in COMBINATIONS if item["use_lora"] in modes):
            result = measure(
                model,
                dataset,
                scratch / str(len(results)),
                args,
                mixed_precision=args.mixed_precision,
                resolution=resolution,
                **settings,
            )
            print(json.dumps(result), flush=True)
            results.append(result)
    print(markdown_table(results))
    record = {
        "architecture": args.architecture,
        **machine_settings(device, torch.float32),
        "resolution": resolution,
        "warmup_steps": args.warmup_steps,
        "timed_steps": args.steps,
        "results": results,
    }
    if args.json is not None:
        args.json.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
