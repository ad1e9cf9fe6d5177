"""The interface every image judge implements."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar, NamedTuple

import torch
from PIL import Image

from agfsync.errors import ConfigurationError
from agfsync.models import release_cached_memory, resolve_device, resolve_dtype
from agfsync.scoring.pixels import PREPROCESSING_CHOICES, JudgeImages, PixelRecipe, Preprocessing

logger = logging.getLogger(__name__)

PROCESSOR_BACKEND = "pil"
"""transformers' image-processor backend for every judge: the PIL one the reference
implementations (CLIP, BLIP-2, the LAION aesthetic predictor) were scored with, the same
on every machine, and quiet where torchvision is absent (the torchvision backend warns
and falls back to it there)."""


class Scores(NamedTuple):
    """A judge's verdict on some images: one 0-100 score each, and per-image details
    (VQA: the answer to each question; CLIP: whether the prompt was truncated)."""

    values: torch.Tensor
    details: list[Any] | None = None


class ImageScorer(ABC):
    """Scores images on a 0–100 scale, in batches, on one device.

    Subclasses load their model in `load()` (once per process), set `image_processor`
    there, and implement `_score(images, prompts, **context)`, returning `Scores` and
    taking pixel values from `pixel_values`; callers use `score`, which adds the
    out-of-memory fallback. `context` carries per-image extras some judges need (for
    example the question–answer pairs of a VQA judge); judges ignore what they do not
    use.

    `preprocessing` chooses how pixel values are made: `tensor` (default) resizes,
    crops and normalizes on the judge's device, once per input size for all judges
    sharing a `JudgeImages`; `processor` runs the model's own transformers processor
    (PIL, per judge), for exact parity with reference implementations. A processor
    the tensor path cannot reproduce is used as is (`PixelRecipe.of`).
    """

    name: ClassVar[str]
    """Registry name; also the prefix of the output column (`<name>_scores`)."""
    required_context: ClassVar[tuple[str, ...]] = ()
    """Dataset columns `score` needs per image, passed as keyword lists (e.g. `qa_pairs`)."""
    details_column: ClassVar[str | None] = None
    """Column for per-image details beside the score (e.g. VQA's per-question answers)."""

    def __init__(
        self,
        model: str,
        *,
        device: str | None = None,
        dtype: str = "auto",
        batch_size: int = 32,
        preprocessing: Preprocessing = "tensor",
    ) -> None:
        if preprocessing not in PREPROCESSING_CHOICES:
            raise ConfigurationError(
                f"Unknown preprocessing {preprocessing!r} for judge {self.name!r}; "
                f"choose {' or '.join(PREPROCESSING_CHOICES)}."
            )
        self.model = model
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.batch_size = batch_size
        self.preprocessing = preprocessing
        self.image_processor: Any = None
        """The model's transformers image processor, set by `load()`."""

    @abstractmethod
    def load(self) -> None:
        """Load weights; called once before the first `score`."""

    def score(
        self, images: Sequence[Image.Image], prompts: Sequence[str], **context: Any
    ) -> Scores:
        """One score in [0, 100] per image (`prompts[i]` is the prompt of `images[i]`),
        with per-image details for `details_column` where the judge has them.
        Pass one `JudgeImages` to several judges to share decoding and resizing.

        When the device runs out of memory the call is retried with half the batch
        size, down to one image per forward pass; the smaller size is kept for later
        calls: what did not fit once will not fit next time either."""
        images = images if isinstance(images, JudgeImages) else JudgeImages(images)
        while True:
            try:
                return self._score(images, prompts, **context)
            except torch.OutOfMemoryError:
                if self.batch_size == 1:
                    raise
                self.batch_size = max(1, self.batch_size // 2)
                logger.warning(
                    "%s judge out of memory; retrying with batches of %d.",
                    self.name,
                    self.batch_size,
                )
                release_cached_memory(self.device)

    @abstractmethod
    def _score(self, images: JudgeImages, prompts: Sequence[str], **context: Any) -> Scores:
        """`score` for batches that fit: what each judge implements."""

    @property
    def pixel_recipe(self) -> PixelRecipe | None:
        """What the tensor path does for this judge; None when it uses the processor."""
        if self.preprocessing != "tensor" or self.image_processor is None:
            return None
        if not hasattr(self, "_recipe"):
            self._recipe = PixelRecipe.of(self.image_processor)
            if self._recipe is None:
                logger.info(
                    "%s judge: %s is not reproduced by the tensor path; using the processor.",
                    self.name,
                    type(self.image_processor).__name__,
                )
        return self._recipe

    def pixel_values(self, images: JudgeImages, start: int = 0, stop: int | None = None) -> Any:
        """Pixel values of `images[start:stop]` on the judge's device, in its dtype."""
        recipe = self.pixel_recipe
        if recipe is None:
            pixels = self.image_processor(images[start:stop], return_tensors="pt").pixel_values
        else:
            pixels = images.pixels(recipe, self.device)[start:stop]
        return pixels.to(self.device, self.dtype)
