"""Judge inputs prepared once: images decoded once, resized once per input size.

A transformers image processor resizes, crops and normalizes each image with PIL
on the CPU, separately for every judge. Here the judges of one batch share one
`JudgeImages`: the images are decoded once, copied to the device once as uint8,
and each distinct `PixelRecipe` (input size, crop, normalization) is computed once
as batched tensor operations on the device and reused by every judge that reads
it (CLIP ViT-B/16 and the aesthetic ViT-L/14 both read 224 px crops with CLIP's
normalization). No torchvision is needed.

The tensor path resizes with `torch.nn.functional.interpolate(antialias=True)`,
whose bicubic and bilinear kernels are PIL's (bicubic with a = -0.5): on the CPU
with torch's uint8 kernels (PIL's algorithm), on an accelerator in float in PIL's
two passes (width, then height), rounding to uint8 after each as PIL does. Pixels
then differ from the processors' by fixed-point rounding only: at most one level,
on under 1% of the values (measured in `benchmarks/judge_preprocessing.py`). A judge with
`preprocessing="processor"` uses its model's own processor instead, for exact
parity with reference implementations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

Preprocessing = Literal["tensor", "processor"]
"""How a judge turns images into pixel values: batched tensor operations on its device
(`tensor`, the default) or its model's own transformers processor (`processor`)."""

PREPROCESSING_CHOICES: tuple[Preprocessing, ...] = ("tensor", "processor")

RESIZE_CHUNK = 32
"""Images resized per `interpolate` call: bounds the float copy (32 x 3 x 1024 x 1024
float32 is 400 MB) while keeping the calls batched."""

_MODES = {int(Image.Resampling.BICUBIC): "bicubic", int(Image.Resampling.BILINEAR): "bilinear"}
"""PIL resampling filters that `interpolate(antialias=True)` reproduces."""


@dataclass(frozen=True)
class PixelRecipe:
    """What an image processor does to an image, as plain values (hashable, so equal
    recipes of different judges are computed once)."""

    shortest_edge: int | None
    """Resize so the shorter side has this length (aspect kept), as CLIP's processor."""
    size: tuple[int, int] | None
    """Or resize to exactly (height, width), as BLIP's processor."""
    mode: str
    """`bicubic` or `bilinear`."""
    crop: tuple[int, int] | None
    """Center crop to (height, width) after resizing."""
    rescale: float | None
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None

    @classmethod
    def of(cls, image_processor: Any) -> PixelRecipe | None:
        """The recipe of a transformers image processor, or None when it does something
        the tensor path does not reproduce (padding, other filters or size rules)."""

        def get(name: str) -> Any:
            return getattr(image_processor, name, None)

        if get("do_pad") or not get("do_resize") or get("do_convert_rgb") is False:
            return None
        mode = _MODES.get(int(get("resample") if get("resample") is not None else -1))
        size = dict(get("size") or {})
        if mode is None or size.get("longest_edge") or size.get("max_height"):
            return None
        if size.get("shortest_edge"):
            shortest_edge, exact = int(size["shortest_edge"]), None
        elif size.get("height") and size.get("width"):
            shortest_edge, exact = None, (int(size["height"]), int(size["width"]))
        else:
            return None
        crop = None
        if get("do_center_crop"):
            crop_size = dict(get("crop_size") or {})
            if not (crop_size.get("height") and crop_size.get("width")):
                return None
            crop = (int(crop_size["height"]), int(crop_size["width"]))
            # A crop larger than the resized image pads it; not reproduced here.
            smallest = (shortest_edge, shortest_edge) if shortest_edge else exact
            assert smallest is not None
            if crop[0] > smallest[0] or crop[1] > smallest[1]:
                return None
        normalize = bool(get("do_normalize"))
        return cls(
            shortest_edge=shortest_edge,
            size=exact,
            mode=mode,
            crop=crop,
            rescale=float(get("rescale_factor")) if get("do_rescale") else None,
            mean=_channels(get("image_mean")) if normalize else None,
            std=_channels(get("image_std")) if normalize else None,
        )

    def resized_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) after resizing, by transformers' rule for `shortest_edge`
        (the long side scaled and truncated to an integer)."""
        if self.size is not None:
            return self.size
        assert self.shortest_edge is not None
        short, long = (width, height) if width <= height else (height, width)
        new_long = int(self.shortest_edge * long / short)
        if width <= height:
            return new_long, self.shortest_edge
        return self.shortest_edge, new_long

    def apply(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 `(N, 3, H, W)` images of one size -> float32 pixel values."""
        height, width = self.resized_size(pixels.shape[-2], pixels.shape[-1])
        resize = resize_uint8 if pixels.device.type == "cpu" else resize_float
        resized = resize(pixels, (height, width), self.mode)
        if self.crop is not None:
            crop_height, crop_width = self.crop
            top, left = (height - crop_height) // 2, (width - crop_width) // 2
            resized = resized[..., top : top + crop_height, left : left + crop_width]
        if self.rescale is not None:
            resized = resized * self.rescale
        if self.mean is not None and self.std is not None:
            mean = torch.tensor(self.mean, device=resized.device).view(1, -1, 1, 1)
            std = torch.tensor(self.std, device=resized.device).view(1, -1, 1, 1)
            resized = (resized - mean) / std
        return resized.contiguous()


def resize_uint8(pixels: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """Resize uint8 images with torch's uint8 kernels (the CPU's: PIL's algorithm, SIMD,
    two passes); float32 result."""
    return torch.nn.functional.interpolate(pixels, size=size, mode=mode, antialias=True).float()


def resize_float(pixels: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """Resize uint8 images in float on any device, as PIL does: width first, then
    height, each pass rounded to uint8; float32 result."""
    resized = pixels.float()
    for step in ((pixels.shape[-2], size[1]), size):
        if tuple(resized.shape[-2:]) != step:
            resized = torch.nn.functional.interpolate(resized, size=step, mode=mode, antialias=True)
            resized = resized.round_().clamp_(0, 255)
    return resized


def _channels(value: Any) -> tuple[float, ...]:
    values = value if isinstance(value, list | tuple) else [value] * 3
    return tuple(float(item) for item in values)


class JudgeImages(Sequence[Image.Image]):
    """The images of one judging batch, shared by every judge.

    As a sequence it holds the decoded RGB images (for judges that use their
    processor); `pixels(recipe, device)` returns the prepared pixel values of all of
    them, computed the first time a judge asks for that recipe on that device.
    """

    def __init__(self, images: Sequence[Image.Image]) -> None:
        self.images = [image if image.mode == "RGB" else image.convert("RGB") for image in images]
        self._uint8: list[torch.Tensor] | None = None
        self._prepared: dict[tuple[PixelRecipe, str], torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: Any) -> Any:
        return self.images[index]

    def pixels(self, recipe: PixelRecipe, device: torch.device) -> torch.Tensor:
        """float32 `(N, 3, H, W)` pixel values of every image, on `device`."""
        key = (recipe, str(device))
        if key not in self._prepared:
            self._prepared[key] = self._prepare(recipe, device)
        return self._prepared[key]

    def _prepare(self, recipe: PixelRecipe, device: torch.device) -> torch.Tensor:
        if not self.images:
            return torch.empty((0, 3, 1, 1), device=device)
        if self._uint8 is None:
            self._uint8 = [
                torch.from_numpy(np.array(image)).permute(2, 0, 1) for image in self.images
            ]
        prepared: list[torch.Tensor] = [torch.empty(0)] * len(self.images)
        # Images of one size go to the device and are resized together, in chunks.
        by_size: dict[tuple[int, ...], list[int]] = {}
        for index, tensor in enumerate(self._uint8):
            by_size.setdefault(tuple(tensor.shape), []).append(index)
        for indices in by_size.values():
            for start in range(0, len(indices), RESIZE_CHUNK):
                chunk = indices[start : start + RESIZE_CHUNK]
                stacked = torch.stack([self._uint8[i] for i in chunk]).to(device)
                for index, values in zip(chunk, recipe.apply(stacked), strict=True):
                    prepared[index] = values
        return torch.stack(prepared)
