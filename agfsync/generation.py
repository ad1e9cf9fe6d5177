"""Candidate image generation with diffusers, read top to bottom.

For every prompt the generator renders N candidates. As in AGFSync, the prompt
is encoded once; image 0 uses the clean text embedding and images 1..N-1 add
Gaussian noise `sigma * randn` to it (and to the pooled embedding of SDXL-type
models), on top of a different initial latent per image. Every image gets its own
seed derived from (run seed, prompt id, image index), so any single image can be
regenerated without the others.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Sequence, Set
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from pydantic import BaseModel, Field

from agfsync.errors import ConfigurationError
from agfsync.logs import (
    PROMPT_TRUNCATION_NOTE,
    note_once_instead,
    quiet_library_progress_bars,
)
from agfsync.models import release_cached_memory, resolve_device, resolve_dtype, resolve_model

logger = logging.getLogger(__name__)

NOISED_EMBEDDINGS = ("prompt_embeds", "pooled_prompt_embeds")
"""Conditioning tensors that receive the diversity noise (pooled: SDXL, SD3 and FLUX)."""


class SamplingConfig(BaseModel):
    """How each image is denoised. The one declaration of these settings: the image
    step's fields, `GenerationConfig` and the evaluation's `Sampling` take them from here."""

    num_inference_steps: int = Field(default=50, ge=1, description="Denoising steps (paper: 50).")
    guidance_scale: float = Field(
        default=4.5, description="Classifier-free guidance (official code without LCM: 4.5)."
    )
    negative_prompt: str | None = Field(default=None, description="Shared negative prompt.")
    height: int | None = Field(default=None, description="Pixels; None uses the model's default.")
    width: int | None = Field(default=None, description="Pixels; None uses the model's default.")
    seed: int = Field(default=0, description="Run seed every image seed is derived from.")


class GenerationConfig(SamplingConfig):
    """How the candidates of a prompt are rendered; defaults follow the AGFSync paper and code."""

    num_images: int = Field(
        default=8, ge=2, description="Candidates per prompt (official code: 8); a pair needs 2."
    )
    noise_sigma: float | list[float] = Field(
        default=0.1,
        description=(
            "Std of the noise added to the text embedding of images 1..N-1 (official code: "
            "0.1); a list gives one sigma per noised image (N-1 values). Image 0 is clean."
        ),
    )

    def sigmas(self) -> list[float]:
        """The sigma of each of the N images, image 0 first (always 0.0)."""
        if isinstance(self.noise_sigma, list):
            if len(self.noise_sigma) != self.num_images - 1:
                raise ConfigurationError(
                    f"noise_sigma lists {len(self.noise_sigma)} values but num_images="
                    f"{self.num_images} needs {self.num_images - 1} (image 0 is always clean)."
                )
            return [0.0, *self.noise_sigma]
        return [0.0] + [self.noise_sigma] * (self.num_images - 1)


def derive_seed(*parts: object) -> int:
    """A 63-bit seed that depends only on `parts`, stable across Python runs."""
    digest = hashlib.sha256("/".join(str(part) for part in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


@dataclass(frozen=True)
class ImageJob:
    """One candidate to render: which prompt, which index, its seed and sigma."""

    prompt_index: int
    image_index: int
    seed: int
    sigma: float


def plan_jobs(prompt_ids: Sequence[str], config: GenerationConfig) -> list[ImageJob]:
    """All N jobs of every prompt, with seeds from (run seed, prompt id, index)."""
    sigmas = config.sigmas()
    return [
        ImageJob(
            prompt_index=prompt_index,
            image_index=image_index,
            seed=derive_seed(config.seed, prompt_id, image_index),
            sigma=sigmas[image_index],
        )
        for prompt_index, prompt_id in enumerate(prompt_ids)
        for image_index in range(config.num_images)
    ]


def calls_to_repeat(
    jobs: Sequence[ImageJob], wanted: Set[ImageJob], batch_size: int
) -> list[ImageJob]:
    """The jobs of every denoising call (of `batch_size` consecutive `jobs`) that holds a
    wanted job, in order.

    Re-rendering a lost image alone gives slightly different pixels: the numerics of a
    batched call depend on what else is in the batch. Repeating the whole call that made
    it reproduces it exactly, as long as the batch size is the one first used.
    """
    calls = {index // batch_size for index, job in enumerate(jobs) if job in wanted}
    return [job for index, job in enumerate(jobs) if index // batch_size in calls]


class EngineConfig(BaseModel):
    """Where and how the diffusers pipeline runs: memory and speed options, and the
    scheduler or LoRA swapped into it. The image step's fields take them from here."""

    device: str | None = Field(
        default=None, description="torch device; None picks CUDA when available."
    )
    dtype: str = Field(
        default="auto", description="auto (fp16 on CUDA, fp32 on CPU), float32, float16, bfloat16."
    )
    scheduler: str | None = Field(
        default=None,
        description="Diffusers scheduler class to use instead, e.g. `LCMScheduler` or "
        "`DPMSolverMultistepScheduler`.",
    )
    lora_weights: str | None = Field(
        default=None,
        description="LoRA (diffusers format, Hub id or folder): a tuned model, or an LCM "
        "LoRA for few-step sampling as the official AGFSync code used.",
    )
    lora_scale: float = Field(default=1.0, description="LoRA strength.")
    batch_size: int = Field(
        default=8, ge=1, description="Images per denoising call; halved on out-of-memory."
    )
    cpu_offload: bool = Field(
        default=False, description="Offload idle submodules to the CPU (less GPU memory, slower)."
    )
    vae_slicing: bool = Field(
        default=False, description="Decode one image at a time (less memory on large batches)."
    )
    vae_tiling: bool = Field(
        default=False, description="Decode in tiles (less memory at high resolution)."
    )
    compile_denoiser: bool = Field(
        default=False, description="torch.compile the UNet/transformer (slow first batch)."
    )
    channels_last: bool = Field(
        default=False,
        description="UNet and VAE in channels_last memory format (convolutions on GPUs).",
    )
    fuse_qkv: bool = Field(
        default=False,
        description="Fuse each attention's query, key and value projections into one "
        "matmul (diffusers' `fuse_qkv_projections`; SD 1.x, SDXL).",
    )
    vae: str | None = Field(
        default=None,
        description="VAE to use instead of the pipeline's (Hub id, folder or tiny:<name>), "
        "e.g. `madebyollin/sdxl-vae-fp16-fix`: SDXL's VAE in fp16 without its float32 "
        "upcast.",
    )


class CandidateImageGenerator:
    """Loads a diffusers text-to-image pipeline and renders `ImageJob`s in batches."""

    def __init__(self, model: str, engine: EngineConfig | None = None) -> None:
        """
        Args:
            model: Hub id, local folder or `tiny:<name>` of a diffusers pipeline.
            engine: where and how it runs (see `EngineConfig`); None: the defaults.
        """
        self.model = model
        self.engine = engine or EngineConfig()
        self.device = resolve_device(self.engine.device)
        self.dtype = resolve_dtype(self.engine.dtype, self.device)
        self.pipeline: Any = None

    def load(self) -> None:
        from diffusers import DiffusionPipeline

        quiet_library_progress_bars()
        pipeline: Any = DiffusionPipeline.from_pretrained(
            resolve_model(self.model), dtype=self.dtype
        )
        if self.engine.scheduler is not None:
            pipeline.scheduler = _scheduler_by_name(
                self.engine.scheduler, pipeline.scheduler.config
            )
        if self.engine.vae is not None:
            from diffusers import AutoencoderKL

            pipeline.vae = AutoencoderKL.from_pretrained(
                resolve_model(self.engine.vae), dtype=self.dtype
            )
        if self.engine.lora_weights is not None:
            pipeline.load_lora_weights(resolve_model(self.engine.lora_weights))
            pipeline.fuse_lora(lora_scale=self.engine.lora_scale)
        if self.engine.vae_slicing:
            pipeline.vae.enable_slicing()
        if self.engine.vae_tiling:
            pipeline.vae.enable_tiling()
        if self.engine.fuse_qkv:
            if not hasattr(pipeline, "fuse_qkv_projections"):
                raise ConfigurationError(
                    f"fuse_qkv: {type(pipeline).__name__} cannot fuse its attention "
                    "projections (SD 1.x and SDXL pipelines can); leave it off."
                )
            pipeline.fuse_qkv_projections()
        if self.engine.channels_last:
            for name in ("unet", "vae"):
                if getattr(pipeline, name, None) is not None:
                    getattr(pipeline, name).to(memory_format=torch.channels_last)
        if self.engine.compile_denoiser:
            name = "unet" if getattr(pipeline, "unet", None) is not None else "transformer"
            setattr(pipeline, name, torch.compile(getattr(pipeline, name)))
        pipeline.set_progress_bar_config(disable=True)
        for logger_name, prefix in (
            (type(pipeline).__module__, "The following part of your input was truncated"),
            ("transformers.tokenization_utils_base", "Token indices sequence length is longer"),
        ):
            note_once_instead(logger_name, prefix, PROMPT_TRUNCATION_NOTE)
        if self.engine.cpu_offload:
            pipeline.enable_model_cpu_offload(device=self.device)
        else:
            pipeline.to(self.device)
        self.pipeline = pipeline

    def generate(
        self, prompts: Sequence[str], jobs: Sequence[ImageJob], config: GenerationConfig
    ) -> Iterator[tuple[ImageJob, Image.Image]]:
        """Render `jobs` (indices into `prompts`), `batch_size` images per call.

        Yields each job with its image as soon as its batch is done. When a batch
        runs out of device memory it is halved and retried, down to one image.
        """
        if self.pipeline is None:
            raise RuntimeError("Call load() before generate().")
        batch_size = self.engine.batch_size
        start = 0
        while start < len(jobs):
            batch = list(jobs[start : start + batch_size])
            try:
                images = self._render(prompts, batch, config)
            except torch.OutOfMemoryError:
                if batch_size == 1:
                    raise
                batch_size = max(1, batch_size // 2)
                logger.warning("Out of memory; retrying with batches of %d images.", batch_size)
                release_cached_memory(self.device)
                continue
            yield from zip(batch, images, strict=True)
            start += len(batch)

    @property
    def supports_embedding_noise(self) -> bool:
        """Whether this pipeline family's text embeddings can be noised (see
        `TEXT_CONDITIONING`); other pipelines render from the prompt text only."""
        return _text_conditioning(self.pipeline) is not None

    def encode_prompts(
        self, prompts: list[str], config: GenerationConfig
    ) -> dict[str, torch.Tensor]:
        """The clean text conditioning of `prompts`, keyed by the pipeline's call arguments."""
        text_conditioning = _text_conditioning(self.pipeline)
        if text_conditioning is None:
            raise ConfigurationError(
                f"{type(self.pipeline).__name__} encodes prompts inside its call; agfsync "
                f"encodes them itself only for {', '.join(TEXT_CONDITIONING)}."
            )
        return self._encode(text_conditioning, prompts, config)

    def _render(
        self, prompts: Sequence[str], batch: list[ImageJob], config: GenerationConfig
    ) -> list[Image.Image]:
        text_conditioning = _text_conditioning(self.pipeline)
        if text_conditioning is None:
            conditioning = self._prompt_text(prompts, batch, config)
        else:
            conditioning = self._noised_embeddings(text_conditioning, prompts, batch, config)
        generators = [torch.Generator("cpu").manual_seed(job.seed) for job in batch]
        output = self.pipeline(
            **conditioning,
            num_inference_steps=config.num_inference_steps,
            guidance_scale=config.guidance_scale,
            height=config.height,
            width=config.width,
            generator=generators,
            output_type="pil",
        )
        return list(output.images)

    def _prompt_text(
        self, prompts: Sequence[str], batch: list[ImageJob], config: GenerationConfig
    ) -> dict[str, Any]:
        """The generic path: the pipeline encodes the text itself, so no noise."""
        noised = [job for job in batch if job.sigma != 0.0]
        if noised:
            raise ConfigurationError(
                f"{type(self.pipeline).__name__} has no embedding-noise support (sigma "
                f"{noised[0].sigma} requested); set noise_sigma=0 to use it, or use one of: "
                f"{', '.join(TEXT_CONDITIONING)}."
            )
        arguments: dict[str, Any] = {"prompt": [prompts[job.prompt_index] for job in batch]}
        if config.negative_prompt is not None:
            arguments["negative_prompt"] = [config.negative_prompt] * len(batch)
        return arguments

    def _noised_embeddings(
        self,
        text_conditioning: TextConditioning,
        prompts: Sequence[str],
        batch: list[ImageJob],
        config: GenerationConfig,
    ) -> dict[str, Any]:
        """Encode each distinct prompt once, then give every image its own noised copy."""
        prompt_indices = sorted({job.prompt_index for job in batch})
        encoded = self._encode(text_conditioning, [prompts[i] for i in prompt_indices], config)
        row_of = {prompt_index: row for row, prompt_index in enumerate(prompt_indices)}
        conditioning: dict[str, Any] = {}
        for name, tensor in encoded.items():
            rows = [tensor[row_of[job.prompt_index]] for job in batch]
            if name in NOISED_EMBEDDINGS:
                rows = [_add_noise(row, job, name) for row, job in zip(rows, batch, strict=True)]
            conditioning[name] = torch.stack(rows)
        if "negative_prompt_embeds" in conditioning:
            # PixArt defaults `negative_prompt` to "" and refuses it beside embeddings.
            conditioning["negative_prompt"] = None
        return conditioning

    def _encode(
        self, text_conditioning: TextConditioning, prompts: list[str], config: GenerationConfig
    ) -> dict[str, torch.Tensor]:
        """Text conditioning of each prompt, keyed by the pipeline's call arguments."""
        arguments: dict[str, Any] = {
            "prompt": prompts,
            "device": self.device,
            "num_images_per_prompt": 1,
        }
        arguments.update(dict.fromkeys(text_conditioning.extra_prompts))
        if text_conditioning.classifier_free_guidance:
            arguments["do_classifier_free_guidance"] = config.guidance_scale > 1.0
            arguments["negative_prompt"] = [config.negative_prompt or ""] * len(prompts)
        outputs = self.pipeline.encode_prompt(**arguments)
        return {
            name: tensor
            for name, tensor in zip(text_conditioning.outputs, outputs, strict=True)
            if name is not None and tensor is not None
        }


@dataclass(frozen=True)
class TextConditioning:
    """How a pipeline family's `encode_prompt` is called and what it returns."""

    outputs: tuple[str | None, ...]
    """Its return values in order, named as the pipeline's call arguments (None: not passed)."""
    classifier_free_guidance: bool
    """Whether it takes `do_classifier_free_guidance` and `negative_prompt`."""
    extra_prompts: tuple[str, ...] = ()
    """Prompts for further text encoders it requires; passed as None, so each encoder
    reads the main prompt."""


_SDXL_OUTPUTS = (
    "prompt_embeds",
    "negative_prompt_embeds",
    "pooled_prompt_embeds",
    "negative_pooled_prompt_embeds",
)
TEXT_CONDITIONING: dict[str, TextConditioning] = {
    # Subclasses before their parents: the first isinstance match wins.
    "StableDiffusionXLPipeline": TextConditioning(_SDXL_OUTPUTS, True),
    "StableDiffusion3Pipeline": TextConditioning(
        _SDXL_OUTPUTS, True, extra_prompts=("prompt_2", "prompt_3")
    ),
    "StableDiffusionPipeline": TextConditioning(("prompt_embeds", "negative_prompt_embeds"), True),
    "PixArtSigmaPipeline": TextConditioning(
        (
            "prompt_embeds",
            "prompt_attention_mask",
            "negative_prompt_embeds",
            "negative_prompt_attention_mask",
        ),
        True,
    ),
    # FLUX is guidance-distilled: no negative branch; its text ids are rebuilt by the call.
    "FluxPipeline": TextConditioning(("prompt_embeds", "pooled_prompt_embeds", None), False),
}
"""Pipeline families whose text embeddings agfsync noises, by diffusers class name."""


def _text_conditioning(pipeline: Any) -> TextConditioning | None:
    import diffusers

    for class_name, text_conditioning in TEXT_CONDITIONING.items():
        if isinstance(pipeline, getattr(diffusers, class_name)):
            return text_conditioning
    return None


def _add_noise(embedding: torch.Tensor, job: ImageJob, name: str) -> torch.Tensor:
    """`embedding + sigma * randn`, drawn on the CPU from a stream of the image's own."""
    if job.sigma == 0.0:
        return embedding
    generator = torch.Generator("cpu").manual_seed(derive_seed(job.seed, "noise", name))
    noise = torch.randn(embedding.shape, generator=generator, dtype=torch.float32)
    return embedding + job.sigma * noise.to(embedding.device, embedding.dtype)


def _scheduler_by_name(name: str, config: Any) -> Any:
    import diffusers

    scheduler_class = getattr(diffusers, name, None)
    if scheduler_class is None or not hasattr(scheduler_class, "from_config"):
        raise ConfigurationError(
            f"Unknown scheduler {name!r}; use a diffusers scheduler class name such as "
            "DPMSolverMultistepScheduler, EulerDiscreteScheduler or LCMScheduler."
        )
    return scheduler_class.from_config(config)
