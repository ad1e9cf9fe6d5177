"""Judge preprocessing: the models' own processors against agfsync's shared tensor path.

The judging step scores each image with several judges. With `preprocessing="processor"`
each judge runs its transformers processor (PIL resize, crop and normalize on the CPU,
image by image); with `preprocessing="tensor"` (the default) the images of a batch are
decoded once and each distinct input recipe is computed once, as batched tensor
operations on the judges' device, for every judge that reads it
(`agfsync.scoring.pixels`).

Part 1, time: milliseconds per image to prepare the pixel values of the paper's two
CLIP judges (CLIP ViT-B/16 and the aesthetic predictor's ViT-L/14, both 224 px crops
with CLIP's normalization) and of BLIP-2 (224 px, no crop), on `--images` images of
`--size` px: each judge's processor in turn, against one `JudgeImages` shared by the
three. Each is timed `--repeats` times; the fastest round is reported.

Part 2, difference: how far the tensor path's pixels are from the processors' (in
uint8 levels: largest, mean, share of values that differ), and what that does to the
scores: CLIP ViT-B/16 and ViT-L/14 at full size with random weights (real
architectures, built offline), CLIP score = 100 x cosine against one text, and the
shipped LAION aesthetic head on the ViT-L/14 embeddings. Random weights are not the
trained models, but the question is how the same network responds to the two inputs.

Images are photo-like (smooth colour fields with fine grain, as in
`benchmarks/image_writing.py`) plus sharp-edged shapes, where resampling differs most.

    python benchmarks/judge_preprocessing.py --json preprocessing.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from image_writing import photo_like
from machine import machine_settings, synchronize
from PIL import Image, ImageDraw
from transformers import BlipImageProcessorPil

from agfsync.models import resolve_device
from agfsync.scoring import AestheticScorer, CLIPScorer, JudgeImages, PixelRecipe
from agfsync.tiny_models import BLIP2_SIZES, build_clip


def test_images(count: int, size: int, seed: int = 0) -> list[Image.Image]:
    """Photo-like images with a few filled shapes (hard edges) each."""
    rng = np.random.default_rng(seed)
    images = []
    for index in range(count):
        image = photo_like(size, seed + index)
        draw = ImageDraw.Draw(image)
        for _ in range(6):
            x, y = (int(value) for value in rng.integers(0, size, 2))
            extent = int(rng.integers(size // 20, size // 3))
            colour = tuple(int(value) for value in rng.integers(0, 256, 3))
            shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
            shape([x, y, x + extent, y + extent], fill=colour)
        images.append(image)
    return images


def fastest(function: Any, repeats: int, device: torch.device) -> float:
    """Seconds of the fastest of `repeats` calls."""
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    return min(seconds)


def time_preparation(
    processors: dict[str, Any], images: list[Image.Image], device: torch.device, repeats: int
) -> dict[str, Any]:
    """ms per image: every judge's processor, against one shared `JudgeImages`."""
    recipes = {name: PixelRecipe.of(processor) for name, processor in processors.items()}

    def with_processors() -> None:
        for processor in processors.values():
            processor(images, return_tensors="pt").pixel_values.to(device)

    def shared() -> None:
        batch = JudgeImages(images)
        for recipe in recipes.values():
            assert recipe is not None
            batch.pixels(recipe, device)

    processor_seconds = fastest(with_processors, repeats, device)
    tensor_seconds = fastest(shared, repeats, device)
    per_image = 1000.0 / len(images)
    return {
        "judges": list(processors),
        "distinct_recipes": len(set(recipes.values())),
        "processor_ms_per_image": processor_seconds * per_image,
        "tensor_ms_per_image": tensor_seconds * per_image,
        "speed_ratio": processor_seconds / tensor_seconds,
    }


def pixel_difference(processor: Any, images: list[Image.Image]) -> dict[str, float]:
    """Tensor path against the processor, in uint8 levels (normalization undone)."""
    recipe = PixelRecipe.of(processor)
    assert recipe is not None and recipe.std is not None
    reference = processor(images, return_tensors="pt").pixel_values
    ours = JudgeImages(images).pixels(recipe, torch.device("cpu"))
    levels = (reference - ours).abs() * torch.tensor(recipe.std).view(1, 3, 1, 1) * 255
    return {
        "max_levels": float(levels.max()),
        "mean_levels": float(levels.mean()),
        "share_differing": float((levels > 0.5).float().mean()),
    }


def score_difference(
    scorer: CLIPScorer | AestheticScorer, images: list[Image.Image], prompt: str
) -> dict[str, float]:
    """|score(tensor) - score(processor)| on the same loaded judge; for CLIP the
    uncapped 100 x cosine (random weights put many cosines below 0, where the
    judge's clamp would hide differences)."""
    batch = JudgeImages(images)
    results = {}
    for mode in ("processor", "tensor"):
        scorer.preprocessing = mode
        if isinstance(scorer, AestheticScorer):
            results[mode] = scorer.score(batch, [prompt] * len(images)).values
            continue
        with torch.inference_mode():
            image = scorer._embed_images(scorer.pixel_values(batch))
            text = scorer._embed_texts([prompt] * len(images))
        results[mode] = 100.0 * (image * text).sum(dim=-1).cpu()
    difference = (results["tensor"] - results["processor"]).abs()
    return {
        "max_abs": float(difference.max()),
        "mean_abs": float(difference.mean()),
        "score_std_across_images": float(results["processor"].std()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--size", type=int, default=512, help="image side in px")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--score-images", type=int, default=16, help="images for part 2")
    parser.add_argument("--device", default=None)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    device = resolve_device(args.device)
    torch.manual_seed(0)
    images = test_images(args.images, args.size)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        clip_b = build_clip(root / "vit-b16", size="vit-b16")
        clip_l = build_clip(root / "vit-l14", size="vit-l14")
        judges: dict[str, CLIPScorer | AestheticScorer] = {
            "clip (ViT-B/16)": CLIPScorer(str(clip_b), device=str(device), dtype="float32"),
            "aesthetic (ViT-L/14)": AestheticScorer(
                str(clip_l), device=str(device), dtype="float32"
            ),
        }
        for judge in judges.values():
            judge.load()
        processors = {name: judge.image_processor for name, judge in judges.items()}
        processors["vqa (BLIP-2, 224 px)"] = BlipImageProcessorPil(
            **BLIP2_SIZES["flan-t5-xl"]["image_processor"]
        )
        timing = time_preparation(processors, images, device, args.repeats)
        differences = {
            name: pixel_difference(processor, images) for name, processor in processors.items()
        }
        sample = images[: args.score_images]
        scores = {
            name: score_difference(judge, sample, "a red ball on a wooden table")
            for name, judge in judges.items()
        }
    result = {
        "settings": {**vars(args), "json": None, **machine_settings(device, torch.float32)},
        "timing": timing,
        "pixel_difference": differences,
        "score_difference": scores,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
