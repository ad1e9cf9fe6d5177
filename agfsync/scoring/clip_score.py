"""CLIP score: how well an image matches its prompt, by CLIP embedding similarity."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from agfsync.logs import PROMPT_TRUNCATION_NOTE, note_once_instead
from agfsync.models import resolve_model
from agfsync.scoring.base import PROCESSOR_BACKEND, ImageScorer, Scores
from agfsync.scoring.pixels import JudgeImages, Preprocessing

CLIP_SCORE_WEIGHT = 100.0
"""`w` of CLIPScore (Hessel et al., 2021) as used by the AGFSync paper: w * max(cos, 0)."""


class CLIPScorer(ImageScorer):
    """`100 * max(cos(text, image), 0)` with a CLIP model (paper: ViT-B/16).

    Text longer than the text encoder's context is truncated, as CLIP itself
    cannot see past it; `clip_truncated` records, per image, whether its prompt was.
    """

    name = "clip"
    details_column: ClassVar[str | None] = "clip_truncated"

    def __init__(
        self,
        model: str,
        *,
        device: str | None = None,
        dtype: str = "auto",
        batch_size: int = 32,
        preprocessing: Preprocessing = "tensor",
        processor: str | None = None,
    ) -> None:
        """`processor`: where to load the processor from when the model repository has
        none (PickScore ships its weights only); defaults to `model`."""
        super().__init__(
            model, device=device, dtype=dtype, batch_size=batch_size, preprocessing=preprocessing
        )
        self.processor_source = processor

    def load(self) -> None:
        from transformers import AutoProcessor, CLIPModel

        path = resolve_model(self.model)
        self.processor = AutoProcessor.from_pretrained(
            resolve_model(self.processor_source) if self.processor_source else path,
            backend=PROCESSOR_BACKEND,
        )
        self.image_processor = self.processor.image_processor
        model: Any = CLIPModel.from_pretrained(path, dtype=self.dtype)
        self.clip = model.to(self.device).eval()
        self.context_length = self.clip.config.text_config.max_position_embeddings
        # `_token_count` tokenizes whole prompts on purpose; the tokenizer warns about it.
        note_once_instead(
            "transformers.tokenization_utils_base",
            "Token indices sequence length is longer",
            PROMPT_TRUNCATION_NOTE,
        )

    def cosine_scale(self) -> float:
        """Multiplier of the cosine similarity (not the judge's weight in the combined
        score, which is `ScorerSpec.weight`)."""
        return CLIP_SCORE_WEIGHT

    @torch.inference_mode()
    def _score(self, images: JudgeImages, prompts: Sequence[str], **context: Any) -> Scores:
        scores = []
        for start in range(0, len(images), self.batch_size):
            stop = start + self.batch_size
            batch_prompts = list(prompts[start:stop])
            image_embeds = self._embed_images(self.pixel_values(images, start, stop))
            text_embeds = self._embed_texts(batch_prompts)
            cosine = (image_embeds * text_embeds).sum(dim=-1)
            scores.append((self.cosine_scale() * cosine).clamp(min=0, max=100))
        token_counts = {prompt: self._token_count(prompt) for prompt in set(prompts)}
        truncated = [token_counts[prompt] > self.context_length for prompt in prompts]
        return Scores(torch.cat(scores).float().cpu() if scores else torch.empty(0), truncated)

    def _token_count(self, prompt: str) -> int:
        return len(self.processor.tokenizer(prompt).input_ids)

    def _embed_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        features = self.clip.get_image_features(pixel_values=pixel_values).pooler_output
        return torch.nn.functional.normalize(features.float(), dim=-1)

    def _embed_texts(self, prompts: list[str]) -> torch.Tensor:
        tokens = self.processor(
            text=prompts,
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=self.context_length,
        )
        features = self.clip.get_text_features(
            input_ids=tokens["input_ids"].to(self.device),
            attention_mask=tokens["attention_mask"].to(self.device),
        ).pooler_output
        return torch.nn.functional.normalize(features.float(), dim=-1)


class PickScorer(CLIPScorer):
    """PickScore (Kirstain et al., 2023): a CLIP-H fine-tuned on Pick-a-Pic human
    preferences, scored as the model's own `logit_scale.exp() * cos` (about 20-23
    for typical images on its 0-100 range). Load it with
    `model="yuvalkirstain/PickScore_v1"`,
    `processor="laion/CLIP-ViT-H-14-laion2B-s32B-b79K"`.
    """

    name = "pickscore"
    details_column: ClassVar[str | None] = None

    def cosine_scale(self) -> float:
        return float(self.clip.logit_scale.exp())
