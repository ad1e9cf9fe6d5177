"""Throughput of agfsync's image engine: naive (one image per call) versus batched.

What it measures: `CandidateImageGenerator` renders `--num-prompts` prompts x
`--num-images` candidates each (image 0 clean, images 1..N-1 with noised text
embeddings, one seed per image), exactly as the AGFSync step does. The same loaded
model is timed once per `--batch-sizes` entry (images per denoising call), after a
warm-up call of that batch size with one denoising step. For each it reports
seconds, images/s and, on CUDA, the peak GPU memory; finally the ratio between the
largest batch size and the smallest (by default batch 1, i.e. batched vs naive).

Models have real architectures and random weights, built offline:
  tiny   the `tiny:stable-diffusion` test model (32x32 px; plumbing, not speed)
  sd15   full-size Stable Diffusion 1.5 (UNet 860M, 512 px by default)
  sdxl   full-size SDXL base (UNet 2.6B, two text encoders, 1024 px by default)
The full-size text encoders use the character-level test tokenizer instead of the
real BPE vocabulary (so the embedding table is smaller); every prompt is padded to
77 tokens either way, so the compute per image is the real one.

Anchor: the AGFSync paper generated 45,834 prompts x 8 images in about 6 hours on
8 A100 GPUs, i.e. 45,834 * 8 / (6 * 3600 * 8) = about 2.1 images/s per GPU.

Example (GPU, SD 1.5 at 512 px, 50 steps, fp16):
    python benchmarks/image_generation.py --architecture sd15 --batch-sizes 1,8,32
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import diffusers
import torch
import transformers
from machine import machine_settings, synchronize

from agfsync.generation import CandidateImageGenerator, EngineConfig, GenerationConfig, plan_jobs
from agfsync.models import resolve_device, resolve_dtype
from agfsync.text.prompt_files import load_prompt_records

# The character-level CLIP tokenizer of the test models: any text, no download.
from agfsync.tiny_models import build_stable_diffusion, build_stable_diffusion_xl

PAPER_IMAGES_PER_GPU_SECOND = 45_834 * 8 / (6 * 3600 * 8)
"""AGFSync paper: 45,834 prompts x 8 images in about 6 h on 8 A100 GPUs."""

DEFAULT_STEPS = {"tiny": 4, "sd15": 50, "sdxl": 50}


FULL_SIZE_BUILDERS = {
    "sd15": lambda directory, dtype: build_stable_diffusion(directory, size="full", dtype=dtype),
    "sdxl": lambda directory, dtype: build_stable_diffusion_xl(directory, size="full", dtype=dtype),
}
"""Full-size architectures with random weights (`agfsync.tiny_models`, size "full")."""


# ---------------------------------------------------------------------------
# Benchmark.
# ---------------------------------------------------------------------------


class OutOfMemoryCounter(logging.Handler):
    """Counts the engine's out-of-memory retries, which shrink the real batch size."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("Out of memory"):
            self.count += 1


def benchmark_prompts(count: int) -> tuple[list[str], list[str]]:
    """`count` (id, prompt) pairs from the shipped sample prompts, cycled if needed."""
    records = load_prompt_records()
    picked = [records[i % len(records)] for i in range(count)]
    ids = [f"{record['prompt_id']}-{i}" for i, record in enumerate(picked)]
    return ids, [record["prompt"] for record in picked]


def time_batch_size(
    generator: CandidateImageGenerator,
    prompts: list[str],
    prompt_ids: list[str],
    config: GenerationConfig,
    batch_size: int,
) -> dict[str, Any]:
    device = generator.device
    jobs = plan_jobs(prompt_ids, config)
    generator.engine = generator.engine.model_copy(update={"batch_size": batch_size})
    # Warm-up: one call of this batch size with a single denoising step.
    warm_up = config.model_copy(update={"num_inference_steps": 1})
    for _ in generator.generate(prompts, jobs[:batch_size], warm_up):
        pass
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    oom = OutOfMemoryCounter()
    logging.getLogger("agfsync.generation").addHandler(oom)
    try:
        start = time.perf_counter()
        images = sum(1 for _ in generator.generate(prompts, jobs, config))
        synchronize(device)
        seconds = time.perf_counter() - start
    finally:
        logging.getLogger("agfsync.generation").removeHandler(oom)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {
        "batch_size": batch_size,
        "images": images,
        "seconds": seconds,
        "images_per_second": images / seconds,
        "peak_gpu_memory_gib": peak,
        "out_of_memory_retries": oom.count,
    }


def markdown_table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| batch size | images | seconds | images/s | peak GPU memory (GiB) | OOM retries |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results:
        peak = row["peak_gpu_memory_gib"]
        lines.append(
            f"| {row['batch_size']} | {row['images']} | {row['seconds']:.2f} "
            f"| {row['images_per_second']:.3f} | {'-' if peak is None else f'{peak:.1f}'} "
            f"| {row['out_of_memory_retries']} |"
        )
    return "\n".join(lines)


def parse_batch_sizes(text: str) -> list[int]:
    sizes = [int(part) for part in text.split(",") if part.strip()]
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("batch sizes must be positive integers, e.g. 1,8,32")
    return sizes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Images/s of agfsync's image engine per batch size, on one loaded model.",
        epilog=f"Paper anchor: about {PAPER_IMAGES_PER_GPU_SECOND:.1f} images/s per A100.",
    )
    parser.add_argument("--architecture", choices=("tiny", "sd15", "sdxl"), default="tiny")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--dtype", default="auto", help="auto (fp16 on CUDA), float32, ...")
    parser.add_argument("--num-prompts", type=int, default=4)
    parser.add_argument("--num-images", type=int, default=8, help="candidates per prompt (N)")
    parser.add_argument(
        "--steps", type=int, default=None, help="default: 4 for tiny, 50 for sd15/sdxl"
    )
    parser.add_argument(
        "--resolution", type=int, default=None, help="square side in px; default: model's"
    )
    parser.add_argument(
        "--batch-sizes",
        type=parse_batch_sizes,
        default=None,
        help="comma-separated images per call; default: 1,N*num_prompts (naive vs batched)",
    )
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=None,
        help="sd15/sdxl: build the model here, or reuse it if already there "
        "(default: a temporary folder removed at exit)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # Quiet the libraries' progress bars and per-call warnings (e.g. prompts truncated to
    # 77 tokens by the character-level tokenizer); the engine's own warnings still show.
    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    steps = DEFAULT_STEPS[args.architecture] if args.steps is None else args.steps
    batch_sizes = args.batch_sizes or [1, args.num_images * args.num_prompts]

    with tempfile.TemporaryDirectory(prefix="agfsync-benchmark-") as scratch:
        build_seconds = 0.0
        if args.architecture == "tiny":
            model = "tiny:stable-diffusion"
        else:
            folder = args.model_dir or Path(scratch) / args.architecture
            if not (folder / "model_index.json").exists():
                print(f"Building full-size {args.architecture} with random weights in {folder}")
                start = time.perf_counter()
                FULL_SIZE_BUILDERS[args.architecture](folder, dtype)
                gc.collect()
                build_seconds = time.perf_counter() - start
            model = str(folder)

        start = time.perf_counter()
        generator = CandidateImageGenerator(
            model, EngineConfig(device=str(device), dtype=args.dtype)
        )
        generator.load()
        load_seconds = time.perf_counter() - start
        pipeline: Any = generator.pipeline
        resolution = args.resolution or pipeline.unet.config.sample_size * pipeline.vae_scale_factor

        prompt_ids, prompts = benchmark_prompts(args.num_prompts)
        config = GenerationConfig(
            num_images=args.num_images,
            num_inference_steps=steps,
            height=resolution,
            width=resolution,
        )
        results = [
            time_batch_size(generator, prompts, prompt_ids, config, batch_size)
            for batch_size in batch_sizes
        ]

    smallest = min(results, key=lambda row: row["batch_size"])
    largest = max(results, key=lambda row: row["batch_size"])
    ratio = largest["images_per_second"] / smallest["images_per_second"]
    settings = {
        "architecture": args.architecture,
        **machine_settings(device, dtype),
        "resolution": resolution,
        "steps": steps,
        "guidance_scale": config.guidance_scale,
        "num_prompts": args.num_prompts,
        "num_images": args.num_images,
        "build_seconds": build_seconds,
        "load_seconds": load_seconds,
    }
    print(
        f"\n{args.architecture} on {settings['device']} ({settings['device_name']}), "
        f"{settings['dtype']}, {resolution}x{resolution} px, {steps} steps, "
        f"guidance {config.guidance_scale}, {args.num_prompts} prompts x {args.num_images} "
        f"images; torch {torch.__version__}; build {build_seconds:.1f} s, "
        f"load {load_seconds:.1f} s\n"
    )
    print(markdown_table(results))
    print(
        f"\nbatched/naive: batch {largest['batch_size']} vs batch {smallest['batch_size']} "
        f"= {ratio:.2f}x images/s"
    )
    print(f"paper anchor: about {PAPER_IMAGES_PER_GPU_SECOND:.2f} images/s per A100")
    if args.json is not None:
        payload = {
            "settings": settings,
            "results": results,
            "batched_vs_naive": {
                "batched_batch_size": largest["batch_size"],
                "naive_batch_size": smallest["batch_size"],
                "ratio": ratio,
            },
            "paper_images_per_gpu_second": PAPER_IMAGES_PER_GPU_SECOND,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
