"""Size on disk of N preference pairs at 1024 px: the published layout against the one
before it, with the same rows.

Before: four image columns as `datasets.Image` structs, `jpg_0`/`jpg_1` for diffusers'
scripts and `chosen`/`rejected` for the viewer, each pair's two images stored twice.
Now (`agfsync.dataset.folder`): `jpg_0`/`jpg_1` as raw bytes (`binary`, as Pick-a-Pic v2),
each image once; the viewer's `images` config reads the same files.

The images are photo-like PNGs (smooth shapes plus sensor noise, so they compress as
photographs do rather than as flat colour), one distinct image per slot. Both layouts
are written with `Dataset.to_parquet` (the writer `agfsync generate` uses); the other
columns (caption, label_0, a score list) are the same in both.

Example:
    python benchmarks/parquet_size.py --pairs 40 --size 1024
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from PIL import Image


def photo_like(seed: int, size: int) -> bytes:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    base = np.stack([np.sin(6 * x + seed), np.cos(5 * y - seed), np.sin(4 * (x + y))], axis=-1)
    pixels = ((base + 1) * 110 + rng.normal(0, 12, (size, size, 3))).clip(0, 255)
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def rows(pairs: int, size: int) -> list[dict[str, Any]]:
    return [
        {
            "caption": f"prompt {index}",
            "label_0": 1.0,
            "clip_scores": [30.0 + index % 7, 25.0, 28.5, 27.0],
            "jpg_0": photo_like(2 * index, size),
            "jpg_1": photo_like(2 * index + 1, size),
        }
        for index in range(pairs)
    ]


def write_both(pairs: int, size: int, folder: Path) -> dict[str, int]:
    data = rows(pairs, size)
    common = {
        "caption": datasets.Value("string"),
        "label_0": datasets.Value("float64"),
        "clip_scores": datasets.List(datasets.Value("float64")),
    }
    before_features = datasets.Features(
        {**common, **{c: datasets.Image() for c in ("jpg_0", "jpg_1", "chosen", "rejected")}}
    )
    before = datasets.Dataset.from_list(
        [
            {
                **row,
                **{c: {"bytes": row[k], "path": None} for c, k in _IMAGE_SOURCES.items()},
            }
            for row in data
        ],
        features=before_features,
    )
    now_features = datasets.Features(
        {**common, "jpg_0": datasets.Value("binary"), "jpg_1": datasets.Value("binary")}
    )
    now = datasets.Dataset.from_list(data, features=now_features)
    sizes = {}
    for name, dataset in (("before", before), ("now", now)):
        path = folder / f"{name}.parquet"
        dataset.to_parquet(path)
        sizes[name] = path.stat().st_size
    sizes["images"] = sum(len(row["jpg_0"]) + len(row["jpg_1"]) for row in data)
    return sizes


_IMAGE_SOURCES = {"jpg_0": "jpg_0", "jpg_1": "jpg_1", "chosen": "jpg_0", "rejected": "jpg_1"}
"""The earlier layout's image columns and the image each held."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=40)
    parser.add_argument("--size", type=int, default=1024)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        sizes = write_both(args.pairs, args.size, Path(folder))
    result = {
        "pairs": args.pairs,
        "size_px": args.size,
        "image_bytes": sizes["images"],
        "before_bytes": sizes["before"],
        "now_bytes": sizes["now"],
        "now_over_before": round(sizes["now"] / sizes["before"], 4),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
