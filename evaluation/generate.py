"""Images of the base and the tuned model for the same prompts with the same seeds, cached.

Both models render every prompt with identical seeds (derived from the run seed,
the prompt id and the image index, as `agfsync generate` derives them) and identical
sampling settings, so the pair of images of a seed differs only by the model. Images
are files under `<cache>/<model key>/`, where the key hashes what determines the
pixels: the model reference, the LoRA (its weights' digest) and the sampling
settings; re-running with other suites, or the same suite again, renders only what
is missing.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field

from agfsync.evaluation.suites import PromptItem
from agfsync.generation import (
    CandidateImageGenerator,
    EngineConfig,
    GenerationConfig,
    ImageJob,
    SamplingConfig,
    derive_seed,
)
from agfsync.progress import progress
from agfsync.safe_paths import path_component

logger = logging.getLogger(__name__)

LORA_WEIGHT_SUFFIX = ".safetensors"


class Sampling(SamplingConfig):
    """How evaluation images are rendered; the same for both models."""

    images_per_prompt: int = Field(
        default=1, ge=1, description="Images per prompt and model (HPSv2 and TIFA: 1)."
    )
    guidance_scale: float = Field(
        default=7.5,
        description="Classifier-free guidance; the paper does not state its evaluation "
        "sampling, 7.5 is diffusers' Stable Diffusion default.",
    )

    def generation_config(self) -> GenerationConfig:
        """The generator's settings; clean text embeddings (no candidate-diversity noise)."""
        settings = self.model_dump(include=set(SamplingConfig.model_fields))
        return GenerationConfig(**settings, noise_sigma=0.0)

    def seed_of(self, prompt_id: str, image_index: int) -> int:
        return derive_seed(self.seed, prompt_id, image_index)


@dataclass(frozen=True)
class ModelUnderTest:
    """A diffusers pipeline, optionally with a LoRA on top (a tuned model saved by
    `agfsync train`)."""

    model: str
    lora: str | None = None

    @classmethod
    def tuned(cls, reference: str, base: str) -> ModelUnderTest:
        """`reference` is a local folder holding only LoRA weights (no
        `model_index.json`): the base with that LoRA; anything else: a full model."""
        path = Path(reference)
        if path.is_dir() and not (path / "model_index.json").exists():
            return cls(model=base, lora=reference)
        return cls(model=reference)

    @property
    def label(self) -> str:
        return self.model if self.lora is None else f"{self.model} + LoRA {self.lora}"

    def cache_key(self, sampling: Sampling) -> str:
        """What determines this model's pixels, hashed: reference, LoRA weights, sampling."""
        identity = {
            "model": self.model,
            "lora": self.lora,
            "lora_digest": _lora_digest(self.lora) if self.lora else None,
            "sampling": sampling.model_dump(exclude={"images_per_prompt"}),
        }
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


class ImageCache:
    """Where the images of one model live: `<root>/<model key>/<prompt id>-<index>-<hash>.png`.

    The file name carries a hash of the prompt text, so editing a prompt of a
    held-out file under the same id renders it again instead of reusing a stale image.
    """

    def __init__(self, root: Path, model: ModelUnderTest, sampling: Sampling) -> None:
        self.folder = root / model.cache_key(sampling)
        self.model = model
        self.sampling = sampling

    def path(self, prompt: PromptItem, image_index: int) -> Path:
        digest = hashlib.sha256(prompt.prompt.encode()).hexdigest()[:8]
        return self.folder / f"{path_component(prompt.id)}-{image_index}-{digest}.png"

    def missing(self, prompts: Sequence[PromptItem]) -> list[tuple[PromptItem, int]]:
        return [
            (prompt, index)
            for prompt in prompts
            for index in range(self.sampling.images_per_prompt)
            if not self.path(prompt, index).exists()
        ]

    def write_key(self) -> None:
        """Record, next to the images, what they were rendered with (for people)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        record = {"model": self.model.model, "lora": self.model.lora, **self.sampling.model_dump()}
        (self.folder / "key.json").write_text(json.dumps(record, indent=2) + "\n")


def render_missing(
    cache: ImageCache,
    prompts: Sequence[PromptItem],
    *,
    device: str | None = None,
    dtype: str = "auto",
    batch_size: int = 8,
) -> int:
    """Render the images of `prompts` not yet in `cache`; returns how many were rendered.

    The pipeline is loaded only when something is missing; each image is written as
    soon as its batch is done (to a temporary name, then renamed), so an interrupted
    run keeps what it finished.
    """
    missing = cache.missing(prompts)
    if not missing:
        return 0
    logger.info("Rendering %d images with %s.", len(missing), cache.model.label)
    cache.write_key()
    engine = EngineConfig(
        device=device, dtype=dtype, lora_weights=cache.model.lora, batch_size=batch_size
    )
    generator = CandidateImageGenerator(cache.model.model, engine)
    generator.load()
    jobs = [
        ImageJob(
            prompt_index=position,
            image_index=index,
            seed=cache.sampling.seed_of(prompt.id, index),
            sigma=0.0,
        )
        for position, (prompt, index) in enumerate(missing)
    ]
    texts = [prompt.prompt for prompt, _ in missing]
    rendered = generator.generate(texts, jobs, cache.sampling.generation_config())
    with progress(f"rendering: {cache.model.label}", total=len(jobs), unit="images") as bar:
        for job, image in rendered:
            target = cache.path(missing[job.prompt_index][0], job.image_index)
            partial = target.with_suffix(".partial.png")
            image.save(partial)
            partial.rename(target)
            bar.advance()
    return len(missing)


def _lora_digest(reference: str) -> str:
    """Digest of a local LoRA folder's weight files (a Hub id is identified by its name)."""
    path = Path(reference)
    files = sorted(path.glob(f"*{LORA_WEIGHT_SUFFIX}")) if path.is_dir() else []
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()[:16]
