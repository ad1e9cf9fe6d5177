"""Flagging unsafe candidates, recorded rather than replaced.

diffusers' Stable Diffusion pipelines blacken flagged images in place; a
preference dataset needs to know which images were flagged instead, so the
judge runs separately and its verdict goes into a column.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy
import torch
from PIL import Image

from agfsync.models import resolve_device, resolve_dtype, resolve_model
from agfsync.scoring.base import PROCESSOR_BACKEND

DEFAULT_SAFETY_CHECKER = "CompVis/stable-diffusion-safety-checker"
"""The checker Stable Diffusion 1.x ships with (CLIP ViT-L/14 + concept embeddings)."""


class SafetyChecker:
    """diffusers' `StableDiffusionSafetyChecker`, returning one flag per image."""

    def __init__(
        self, model: str = DEFAULT_SAFETY_CHECKER, *, device: str | None = None, dtype: str = "auto"
    ) -> None:
        self.model = model
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.checker: Any = None
        self.processor: Any = None

    def load(self) -> None:
        from diffusers.pipelines.stable_diffusion.safety_checker import (
            StableDiffusionSafetyChecker,
        )
        from transformers import AutoImageProcessor

        path = resolve_model(self.model)
        self.processor = AutoImageProcessor.from_pretrained(path, backend=PROCESSOR_BACKEND)
        checker: Any = StableDiffusionSafetyChecker.from_pretrained(path, dtype=self.dtype)
        self.checker = checker.to(self.device).eval()

    @torch.inference_mode()
    def flag(self, images: Sequence[Image.Image]) -> list[bool]:
        """True for each image the checker considers unsafe."""
        if not images:
            return []
        pixels = self.processor(
            images=[image.convert("RGB") for image in images], return_tensors="pt"
        ).pixel_values.to(self.device, self.dtype)
        # The checker blackens what it flags in the array it is given and warns that it
        # did; it gets a throwaway array and its warning is silenced, as nothing is replaced.
        checker_logger = logging.getLogger("diffusers.pipelines.stable_diffusion.safety_checker")
        previous_level = checker_logger.level
        checker_logger.setLevel(logging.ERROR)
        try:
            _, flags = self.checker(clip_input=pixels, images=numpy.zeros((len(images), 1, 1, 3)))
        finally:
            checker_logger.setLevel(previous_level)
        return [bool(flag) for flag in flags]
