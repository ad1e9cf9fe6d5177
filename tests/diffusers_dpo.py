"""The data access of diffusers' Diffusion-DPO examples, line for line.

`examples/research_projects/diffusion_dpo/train_diffusion_dpo.py` and
`train_diffusion_dpo_sdxl.py` (diffusers, last changed in c9c82173, 2025-08-11) load
the dataset with `load_dataset(args.dataset_name, cache_dir=..., split=
args.dataset_split_name)` and read each batch as below: `jpg_0`/`jpg_1` through
`Image.open(io.BytesIO(im_bytes))`, the pair swapped when `label_0 == 0`, the caption
from `caption`, and (SDXL) the original size of `jpg_0`, `jpg_1` resized to it. Their
image transforms (torchvision, which this machine cannot load) are replaced by the
same resize-and-normalize in plain torch: they do not touch the data access.
"""

import hashlib
import io
from typing import Any

import numpy as np
import torch
from datasets import load_dataset
from PIL import Image


def _to_tensor(image: Image.Image, resolution: int) -> torch.Tensor:
    resized = image.resize((resolution, resolution), Image.Resampling.BILINEAR)
    array = torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return (array - 0.5) / 0.5


def preprocess_sd15(examples: dict[str, Any], resolution: int = 32) -> dict[str, Any]:
    """`preprocess_train` of train_diffusion_dpo.py."""
    all_pixel_values = []
    for col_name in ["jpg_0", "jpg_1"]:
        images = [
            Image.open(io.BytesIO(im_bytes)).convert("RGB") for im_bytes in examples[col_name]
        ]
        pixel_values = [_to_tensor(image, resolution) for image in images]
        all_pixel_values.append(pixel_values)

    # Double on channel dim, jpg_y then jpg_w
    im_tup_iterator = zip(*all_pixel_values, strict=True)
    combined_pixel_values = []
    for im_tup, label_0 in zip(im_tup_iterator, examples["label_0"], strict=True):
        if label_0 == 0:
            im_tup = im_tup[::-1]
        combined_im = torch.cat(im_tup, dim=0)  # no batch dim
        combined_pixel_values.append(combined_im)
    examples["pixel_values"] = combined_pixel_values
    examples["captions"] = list(examples["caption"])
    return examples


def preprocess_sdxl(examples: dict[str, Any], resolution: int = 32) -> dict[str, Any]:
    """`preprocess_train` of train_diffusion_dpo_sdxl.py."""
    all_pixel_values = []
    images = [Image.open(io.BytesIO(im_bytes)).convert("RGB") for im_bytes in examples["jpg_0"]]
    original_sizes = [(image.height, image.width) for image in images]
    for col_name in ["jpg_0", "jpg_1"]:
        images = [
            Image.open(io.BytesIO(im_bytes)).convert("RGB") for im_bytes in examples[col_name]
        ]
        if col_name == "jpg_1":
            # Need to bring down the image to the same resolution.
            images = [image.resize(original_sizes[i][::-1]) for i, image in enumerate(images)]
        pixel_values = [_to_tensor(image, resolution) for image in images]
        all_pixel_values.append(pixel_values)
    im_tup_iterator = zip(*all_pixel_values, strict=True)
    combined_pixel_values = []
    for im_tup, label_0 in zip(im_tup_iterator, examples["label_0"], strict=True):
        if label_0 == 0:
            im_tup = im_tup[::-1]
        combined_pixel_values.append(torch.cat(im_tup, dim=0))
    examples["pixel_values"] = combined_pixel_values
    examples["original_sizes"] = original_sizes
    examples["captions"] = list(examples["caption"])
    return examples


def preferred_columns(examples: dict[str, Any], pixel_values: list[torch.Tensor]) -> list[str]:
    """Per row, the column a script trains on as the winner: the first three channels
    of its pair (`jpg_0` unless the `label_0 == 0` swap put `jpg_1` there)."""
    columns = []
    for im_bytes, pair in zip(examples["jpg_0"], pixel_values, strict=True):
        jpg_0 = _to_tensor(Image.open(io.BytesIO(im_bytes)).convert("RGB"), pair.shape[-1])
        columns.append("jpg_0" if torch.equal(pair[:3], jpg_0) else "jpg_1")
        assert torch.equal(pair[:3] if columns[-1] == "jpg_0" else pair[3:], jpg_0)
    return columns


def read_like_diffusers(dataset_name: str, split: str = "train", rows: int = 4) -> dict[str, Any]:
    """Both scripts' loading and first batch of `rows` on `dataset_name`: what they
    would train on."""
    train_dataset = load_dataset(dataset_name, split=split)
    batch = train_dataset[: min(rows, len(train_dataset))]
    sd15 = preprocess_sd15(dict(batch))
    sdxl = preprocess_sdxl(dict(batch))
    return {
        "rows": len(train_dataset),
        "sd15_shapes": [list(t.shape) for t in sd15["pixel_values"]],
        "sdxl_shapes": [list(t.shape) for t in sdxl["pixel_values"]],
        "sdxl_original_sizes": [list(size) for size in sdxl["original_sizes"]],
        "captions": sd15["captions"],
        "labels": list(batch["label_0"]),
        "sd15_preferred": preferred_columns(batch, sd15["pixel_values"]),
        "sdxl_preferred": preferred_columns(batch, sdxl["pixel_values"]),
        "jpg_0_sha": [hashlib.sha256(data).hexdigest() for data in batch["jpg_0"]],
    }
