"""CLIP score: how well an image matches its prompt, by CLIP embedding similarity."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

from agfsync.models import resolve_model
from agfsync.scoring.base import ImageScorer

CLIP_SCORE_WEIGHT = 100.0
"""`w` of CLIPScore (Hessel et al., 2021) as used by the AGFSync paper: w * max(cos, 0)."""


class CLIPScorer(ImageScorer):
    """`100 * max(cos(text, image), 0)` with a CLIP model (paper: ViT-B/16).

    Text longer than the text encoder's context is truncated, as CLIP itself
    cannot see past it.
    """

    name = "clip"

    def load(self) -> None:
        from transformers import AutoProcessor, CLIPModel

        path = resolve_model(self.model)
        self.processor = AutoProcessor.from_pretrained(path)
        model: Any = CLIPModel.from_pretrained(path, dtype=self.dtype)
        self.clip = model.to(self.device).eval()

    @torch.inference_mode()
    def score(
        self, images: Sequence[Image.Image], prompts: Sequence[str], **context: Any
    ) -> torch.Tensor:
        scores = []
        for start in range(0, len(images), self.batch_size):
            batch_images = images[start : start + self.batch_size]
            batch_prompts = list(prompts[start : start + self.batch_size])
            image_embeds = self._embed_images(batch_images)
            text_embeds = self._embed_texts(batch_prompts)
            cosine = (image_embeds * text_embeds).sum(dim=-1)
            scores.append(CLIP_SCORE_WEIGHT * cosine.clamp(min=0))
        return torch.cat(scores).float().cpu() if scores else torch.empty(0)

    def _embed_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        pixels = self.processor(
            images=[image.convert("RGB") for image in images], return_tensors="pt"
        )
        features = self.clip.get_image_features(
            pixel_values=pixels["pixel_values"].to(self.device, self.dtype)
        )
        return torch.nn.functional.normalize(_as_tensor(features).float(), dim=-1)

    def _embed_texts(self, prompts: list[str]) -> torch.Tensor:
        max_length = self.clip.config.text_config.max_position_embeddings
        tokens = self.processor(
            text=prompts,
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=max_length,
        )
        features = self.clip.get_text_features(
            input_ids=tokens["input_ids"].to(self.device),
            attention_mask=tokens["attention_mask"].to(self.device),
        )
        return torch.nn.functional.normalize(_as_tensor(features).float(), dim=-1)


def _as_tensor(features: Any) -> torch.Tensor:
    """transformers 5 returns a model output from `get_*_features`; 4.x a tensor."""
    if isinstance(features, torch.Tensor):
        return features
    return features.pooler_output
