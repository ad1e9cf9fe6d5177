"""Image writing beside the rendering, and what each file format costs.

Part 1, overlap: a stand-in engine (matrix products on one CPU thread for
`--engine-ms` per image, standing for an accelerator's denoising call) renders
`--images` images in batches of `--batch-size`; each image is written as the image
step writes it (`agfsync.image_writer.ImageWriter`). Timed: the engine alone, the engine
with inline writes (threads 0, the step before writer threads), and with 1 and 2 writer
threads. The figure that matters is each run's time over the engine's alone.

Part 2, formats: seconds per image and bytes per image of PNG at compress levels 1, 6
(Pillow's default, what the step writes) and 9, lossless WebP, WebP quality 90 and JPEG
quality 95, on the same images.

Images are `--size` px and photo-like (smooth colour fields with fine grain), not noise:
random pixels would not compress and would overstate PNG's cost.

    python benchmarks/image_writing.py --json writing.json
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from machine import machine_settings
from PIL import Image

from agfsync.image_writer import ImageWriter

FORMATS: dict[str, dict[str, Any]] = {
    "png level 1": {"format": "png", "compress_level": 1},
    "png level 6 (default)": {"format": "png"},
    "png level 9": {"format": "png", "compress_level": 9},
    "webp lossless": {"format": "webp", "lossless": True},
    "webp q90": {"format": "webp", "quality": 90},
    "jpeg q95": {"format": "jpeg", "quality": 95},
}


def photo_like(size: int, seed: int) -> Image.Image:
    """Smooth random colour fields (bicubic from 8x8) plus grain of std 6."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    smooth = np.asarray(coarse.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32)
    grain = rng.normal(0.0, 6.0, smooth.shape)
    return Image.fromarray(np.clip(smooth + grain, 0, 255).astype(np.uint8))


class StandInEngine:
    """About `milliseconds` of one-thread CPU work per image, like a device call the
    host waits for; returns the batch's images."""

    def __init__(self, milliseconds: float, images: list[Image.Image]) -> None:
        self.images = images
        self.matrix = torch.randn(256, 256)
        start = time.perf_counter()
        for _ in range(20):
            self.matrix @ self.matrix
        per_product = (time.perf_counter() - start) / 20
        self.products = max(1, round(milliseconds / 1000 / per_product))

    def render(self, batch: range) -> list[Image.Image]:
        for _ in range(self.products * len(batch)):
            self.matrix @ self.matrix
        return [self.images[index % len(self.images)] for index in batch]


def time_overlap(engine: StandInEngine, count: int, batch_size: int, threads: int | None) -> float:
    """Seconds to render `count` images and write them with `threads` writer threads
    (None: render only)."""
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        if threads is None:
            for first in range(0, count, batch_size):
                engine.render(range(first, min(first + batch_size, count)))
        else:
            with ImageWriter(threads, max_pending=batch_size * 2) as writer:
                for first in range(0, count, batch_size):
                    batch = range(first, min(first + batch_size, count))
                    for index, image in zip(batch, engine.render(batch), strict=True):
                        writer.submit(Path(folder) / f"{index}.png", image, format="png")
        return time.perf_counter() - start


def time_formats(images: list[Image.Image], repeats: int) -> list[dict[str, Any]]:
    rows = []
    for name, options in FORMATS.items():
        start = time.perf_counter()
        sizes = []
        for _ in range(repeats):
            for image in images:
                buffer = io.BytesIO()
                image.save(buffer, **options)
                sizes.append(buffer.tell())
        seconds = (time.perf_counter() - start) / (repeats * len(images))
        rows.append({"format": name, "ms_per_image": seconds * 1000, "kb": np.mean(sizes) / 1024})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--engine-ms", type=float, default=100.0, help="engine time per image")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each setting")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)  # the engine takes one core, as a device call takes none

    images = [photo_like(args.size, seed) for seed in range(8)]
    engine = StandInEngine(args.engine_ms, images)
    settings: dict[str, int | None] = {"engine alone": None, "inline": 0, "1 thread": 1}
    settings["2 threads"] = 2
    seconds: dict[str, list[float]] = {name: [] for name in settings}
    for _ in range(args.repeats):  # interleaved, so that a busy moment hits every setting
        for name, threads in settings.items():
            seconds[name].append(time_overlap(engine, args.images, args.batch_size, threads))
    best = {name: min(values) for name, values in seconds.items()}
    overlap = [
        {
            "setting": name,
            "seconds": best[name],
            "images_per_second": args.images / best[name],
            "vs_engine_alone": best[name] / best["engine alone"],
        }
        for name in settings
    ]
    formats = time_formats(images, args.repeats)
    report = {
        "machine": machine_settings(torch.device("cpu"), torch.float32),
        "size": args.size,
        "images": args.images,
        "engine_ms_per_image": args.engine_ms,
        "overlap": overlap,
        "formats": formats,
    }
    for row in overlap:
        print(
            f"{row['setting']:<14} {row['seconds']:6.2f} s  {row['images_per_second']:6.1f} img/s"
            f"  {row['vs_engine_alone']:.2f}x the engine's time"
        )
    for row in formats:
        print(f"{row['format']:<22} {row['ms_per_image']:7.1f} ms/image  {row['kb']:7.1f} KiB")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
