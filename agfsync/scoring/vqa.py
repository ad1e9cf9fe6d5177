"""VQA score: the share of a prompt's yes/no questions a VLM answers "yes" for an image.

AGFSync asks BLIP-2 (flan-t5-xxl) every question about every image, one at a time,
with free-form generation. Here questions are batched over (image, question)
pairs, and two modes are offered:

- `answer`: generate a short answer and count it as yes when its first word is
  "yes", as the paper did (a 0/1 per question);
- `probability`: P(yes) / (P(yes) + P(no)) from the first decoding step's logits, a
  continuous score with no generation loop. For BLIP-2 each image's vision and
  Q-Former features are computed once and reused for all of its questions.

For the first-step probabilities "yes" and "no" stand for the first token of each
word in the model's tokenizer (a single token in real vocabularies).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import torch
from PIL import Image

from agfsync.models import resolve_model
from agfsync.scoring.base import PROCESSOR_BACKEND, ImageScorer, Scores
from agfsync.scoring.pixels import JudgeImages, Preprocessing

VQA_PROMPT = "Question: {question} Choices:['yes','no'] Answer:"
"""The question template of the official AGFSync code."""

_FIRST_WORD = re.compile(r"[a-z]+")


def answer_is_yes(text: str) -> bool:
    """True when the first word of a generated answer is "yes" ("Yes." counts,
    "yesterday" does not)."""
    match = _FIRST_WORD.search(text.lower())
    return match is not None and match.group() == "yes"


class VQAScorer(ImageScorer):
    """Prompt fidelity: 100 x the share of the image's valid questions answered yes.

    `score` needs `qa_pairs` in its context: for each image the prompt's list of
    `{question, valid, ...}` (invalid ones are skipped). An image without any valid
    question gets NaN, so it is left out of pair selection rather than guessed.
    The per-question results (1/0 in `answer` mode, P(yes) in `probability` mode)
    are kept by `answer()`, which the judging step stores as `vqa_answers`.

    The paper used `Salesforce/blip2-flan-t5-xxl`; any transformers
    image-text-to-text model loads through the generic auto classes.
    """

    name = "vqa"
    required_context: ClassVar[tuple[str, ...]] = ("qa_pairs",)
    details_column: ClassVar[str | None] = "vqa_answers"

    def __init__(
        self,
        model: str,
        *,
        device: str | None = None,
        dtype: str = "auto",
        batch_size: int = 32,
        preprocessing: Preprocessing = "tensor",
        mode: Literal["answer", "probability"] = "answer",
        prompt_template: str = VQA_PROMPT,
        max_new_tokens: int = 5,
        reuse_image_features: bool = True,
    ) -> None:
        super().__init__(
            model, device=device, dtype=dtype, batch_size=batch_size, preprocessing=preprocessing
        )
        self.mode = mode
        self.prompt_template = prompt_template
        self.max_new_tokens = max_new_tokens
        self.reuse_image_features = reuse_image_features
        self.vlm: Any = None
        self.processor: Any = None

    def load(self) -> None:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        path = resolve_model(self.model)
        self.processor = AutoProcessor.from_pretrained(path, backend=PROCESSOR_BACKEND)
        self.image_processor = self.processor.image_processor
        model: Any = AutoModelForImageTextToText.from_pretrained(path, dtype=self.dtype)
        self.vlm = model.to(self.device).eval()
        tokenizer = self.processor.tokenizer
        self.yes_id = tokenizer("yes", add_special_tokens=False).input_ids[0]
        self.no_id = tokenizer("no", add_special_tokens=False).input_ids[0]

    @property
    def is_blip2(self) -> bool:
        """BLIP-2 takes pixel values and text separately: each image is preprocessed
        once for all its questions. Other models go through their processor per pair
        (their processors may tile images or size the image tokens by the image)."""
        return type(self.vlm).__name__ == "Blip2ForConditionalGeneration"

    @property
    def reuses_image_features(self) -> bool:
        """BLIP-2 accepts precomputed image features, so in probability mode each image
        is encoded once for all its questions; other models get one full pass per pair."""
        return self.reuse_image_features and self.mode == "probability" and self.is_blip2

    def _score(self, images: JudgeImages, prompts: Sequence[str], **context: Any) -> Scores:
        questions = [
            [pair["question"] for pair in pairs if pair.get("valid", True)]
            for pairs in context["qa_pairs"]
        ]
        answers = self.answer(images, questions)
        scores = [
            100.0 * sum(values) / len(values) if values else float("nan") for values in answers
        ]
        return Scores(torch.tensor(scores, dtype=torch.float32), answers)

    @torch.inference_mode()
    def answer(
        self, images: Sequence[Image.Image], questions: Sequence[Sequence[str]]
    ) -> list[list[float]]:
        """For each image, one result per question: 1/0 (answer) or P(yes) (probability)."""
        images = images if isinstance(images, JudgeImages) else JudgeImages(images)
        pairs = [(index, question) for index, qs in enumerate(questions) for question in qs]
        features = self._image_features(images) if self.reuses_image_features else None
        pixels = self.pixel_values(images) if self.is_blip2 and features is None else None
        flat: list[float] = []
        for start in range(0, len(pairs), self.batch_size):
            batch = pairs[start : start + self.batch_size]
            texts = [self.prompt_template.format(question=question) for _, question in batch]
            owners = [index for index, _ in batch]
            if features is not None:
                flat += self._probabilities_from_features(features, owners, texts)
                continue
            if pixels is not None:
                inputs = {"pixel_values": pixels[owners], **self._blip2_text(texts)}
            else:
                inputs = self._inputs([images[i] for i in owners], texts)
            if self.mode == "probability":
                flat += self._probabilities(inputs)
            else:
                flat += self._generated_answers(inputs)
        results: list[list[float]] = [[] for _ in images]
        for (index, _), value in zip(pairs, flat, strict=True):
            results[index].append(value)
        return results

    def _inputs(self, images: list[Image.Image], texts: list[str]) -> Any:
        inputs = self.processor(images=images, text=texts, return_tensors="pt", padding=True)
        return inputs.to(self.device, self.dtype)

    def _image_features(self, images: JudgeImages) -> Any:
        """BLIP-2 vision + Q-Former outputs of every image, computed once."""
        outputs = []
        for start in range(0, len(images), self.batch_size):
            pixels = self.pixel_values(images, start, start + self.batch_size)
            outputs.append(self.vlm.get_image_features(pixels, return_dict=True).pooler_output)
        return torch.cat(outputs)

    def _probabilities_from_features(
        self, features: torch.Tensor, owners: list[int], texts: list[str]
    ) -> list[float]:
        from transformers.models.blip_2.modeling_blip_2 import (
            BaseModelOutputWithVisionQformerOutputs,
        )

        image = BaseModelOutputWithVisionQformerOutputs(pooler_output=features[owners])
        return self._yes_share(
            self.vlm,
            {
                "pixel_values": None,
                **self._blip2_text(texts),
                "mm_encoder_outputs": {"image": image},
            },
        )

    def _blip2_text(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Token ids and mask as BLIP-2's processor makes them: the image placeholder
        tokens, which the model swaps for the image features, in front of the text."""
        num_query_tokens = self.vlm.config.num_query_tokens
        text = self.processor.tokenizer(texts, return_tensors="pt", padding=True)
        placeholders = torch.full((len(texts), num_query_tokens), self.vlm.config.image_token_index)
        return {
            "input_ids": torch.cat([placeholders, text.input_ids], dim=1).to(self.device),
            "attention_mask": torch.cat(
                [torch.ones_like(placeholders), text.attention_mask], dim=1
            ).to(self.device),
        }

    def _probabilities(self, inputs: Any) -> list[float]:
        return self._yes_share(self.vlm, dict(inputs))

    def _yes_share(self, model: Any, inputs: dict[str, Any]) -> list[float]:
        """P(yes) / (P(yes) + P(no)) at the first answer position."""
        if model.config.is_encoder_decoder or not getattr(
            model.config, "use_decoder_only_language_model", True
        ):
            start = model.generation_config.decoder_start_token_id
            decoder = torch.full((inputs["input_ids"].shape[0], 1), start, device=self.device)
            logits = model(**inputs, decoder_input_ids=decoder).logits[:, 0]
        else:
            mask = inputs["attention_mask"]
            # The last attended position, whichever side the tokenizer pads.
            last = mask.shape[1] - 1 - mask.flip(dims=[1]).argmax(dim=1)
            logits = model(**inputs).logits[torch.arange(len(last)), last]
        pair = logits[:, [self.yes_id, self.no_id]].float().softmax(dim=-1)
        return pair[:, 0].tolist()

    def _generated_answers(self, inputs: Any) -> list[float]:
        generated = self.vlm.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        if not getattr(self.vlm.config, "is_encoder_decoder", False) and getattr(
            self.vlm.config, "use_decoder_only_language_model", False
        ):
            generated = generated[:, inputs["input_ids"].shape[1] :]
        texts = self.processor.batch_decode(generated, skip_special_tokens=True)
        return [1.0 if answer_is_yes(text) else 0.0 for text in texts]
