"""The diffusion model being trained: loading, conditioning, LoRA and the reference.

SD 1.x/2.x condition the UNet on one CLIP encoder's last hidden states. SDXL joins
the penultimate hidden states of two encoders, and adds the second encoder's
pooled (projected) embedding plus six "time ids": original image size, crop
top-left and target size, each (height, width).

The reference model of Diffusion-DPO is the base model. With LoRA it is the same
UNet with its adapters switched off, so no second copy is held in memory; with
full fine-tuning it is a frozen copy taken before training.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch

from agfsync.errors import ConfigurationError
from agfsync.models import resolve_model
from agfsync.train.config import ModelFamily


@dataclass(frozen=True)
class BaseModelInfo:
    """What the trainer needs to know about a base model before loading its weights."""

    path: str
    family: ModelFamily
    native_resolution: int
    """UNet sample size x VAE scale factor: 512 for SD 1.x, 768 for SD 2.x-768, 1024 for SDXL."""


def inspect_base_model(reference: str) -> BaseModelInfo:
    """Read the pipeline's configuration files (no weights) to learn its family."""
    from diffusers import AutoencoderKL, DiffusionPipeline, UNet2DConditionModel

    path = resolve_model(reference)
    try:
        index = DiffusionPipeline.load_config(path)
        unet_config = UNet2DConditionModel.load_config(path, subfolder="unet")
        vae_config = AutoencoderKL.load_config(path, subfolder="vae")
    except (OSError, ValueError) as error:
        raise ConfigurationError(
            f"Cannot read the diffusers pipeline {reference!r}: {error}"
        ) from None
    if "unet" not in index or "text_encoder" not in index:
        raise ConfigurationError(
            f"{reference!r} is a {index.get('_class_name', 'pipeline')} without a UNet and a "
            "CLIP text encoder; the trainer supports Stable Diffusion 1.x/2.x and SDXL."
        )
    family = (
        ModelFamily.STABLE_DIFFUSION_XL
        if "text_encoder_2" in index
        else ModelFamily.STABLE_DIFFUSION
    )
    vae_scale_factor = 2 ** (len(vae_config["block_out_channels"]) - 1)
    return BaseModelInfo(path, family, unet_config["sample_size"] * vae_scale_factor)


@dataclass(frozen=True)
class Conditioning:
    """Everything the UNet is conditioned on besides the noisy latents and the timestep."""

    encoder_hidden_states: torch.Tensor
    added_cond_kwargs: dict[str, torch.Tensor] | None = None
    """SDXL: `text_embeds` (pooled) and `time_ids`."""

    def repeated(self, times: int) -> Conditioning:
        """The same conditioning for `times` stacked copies of the batch (winners, losers)."""
        added = self.added_cond_kwargs
        return Conditioning(
            self.encoder_hidden_states.repeat(times, 1, 1),
            None if added is None else {k: v.repeat(times, 1) for k, v in added.items()},
        )


def sdxl_time_ids(
    original_sizes: torch.Tensor, crop_top_lefts: torch.Tensor, resolution: int
) -> torch.Tensor:
    """(B, 6): original (h, w), crop (top, left), target (h, w), as SDXL was trained."""
    target = torch.tensor([resolution, resolution]).expand(len(original_sizes), 2)
    return torch.cat([original_sizes, crop_top_lefts, target], dim=1)


def predict_noise(
    unet: Any, noisy_latents: torch.Tensor, timesteps: torch.Tensor, conditioning: Conditioning
) -> torch.Tensor:
    """The UNet's prediction (noise or velocity, as the scheduler is configured)."""
    return unet(
        noisy_latents,
        timesteps,
        encoder_hidden_states=conditioning.encoder_hidden_states,
        added_cond_kwargs=conditioning.added_cond_kwargs,
        return_dict=False,
    )[0]


@dataclass
class DiffusionComponents:
    """The loaded parts of a pipeline; only `unet` is ever trained."""

    info: BaseModelInfo
    tokenizers: list[Any]
    text_encoders: list[Any]
    vae: Any
    unet: Any
    noise_scheduler: Any

    @property
    def is_sdxl(self) -> bool:
        return self.info.family is ModelFamily.STABLE_DIFFUSION_XL

    @torch.no_grad()
    def conditioning(
        self,
        captions: list[str],
        original_sizes: torch.Tensor,
        crop_top_lefts: torch.Tensor,
        resolution: int,
    ) -> Conditioning:
        """Text (and for SDXL size/crop) conditioning of a batch of captions."""
        if not self.is_sdxl:
            ids = self._token_ids(self.tokenizers[0], captions)
            return Conditioning(self.text_encoders[0](ids, return_dict=False)[0])
        outputs = [
            encoder(self._token_ids(tokenizer, captions), output_hidden_states=True)
            for tokenizer, encoder in zip(self.tokenizers, self.text_encoders, strict=True)
        ]
        pooled = outputs[-1].text_embeds
        time_ids = sdxl_time_ids(original_sizes, crop_top_lefts, resolution)
        return Conditioning(
            torch.cat([output.hidden_states[-2] for output in outputs], dim=-1),
            {"text_embeds": pooled, "time_ids": time_ids.to(pooled.device, pooled.dtype)},
        )

    def _token_ids(self, tokenizer: Any, captions: list[str]) -> torch.Tensor:
        return tokenizer(
            captions,
            padding="max_length",
            max_length=tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids.to(self.text_encoders[0].device)

    def inference_pipeline(self, unet: Any) -> Any:
        """A diffusers pipeline around these components and `unet` (for validation images
        and for saving a fully fine-tuned model)."""
        from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

        parts: dict[str, Any] = {
            "vae": self.vae,
            "unet": unet,
            "text_encoder": self.text_encoders[0],
            "tokenizer": self.tokenizers[0],
        }
        if self.is_sdxl:
            parts |= {"text_encoder_2": self.text_encoders[1], "tokenizer_2": self.tokenizers[1]}
            return StableDiffusionXLPipeline.from_pretrained(self.info.path, **parts)
        return StableDiffusionPipeline.from_pretrained(
            self.info.path,
            **parts,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )


def load_components(
    info: BaseModelInfo,
    *,
    vae_model: str | None,
    device: torch.device,
    frozen_dtype: torch.dtype,
    unet_dtype: torch.dtype = torch.float32,
) -> DiffusionComponents:
    """Load tokenizers, text encoders, VAE, UNet and the DDPM training scheduler.

    Text encoders and VAE are frozen in `frozen_dtype` (the mixed-precision dtype), except
    SDXL's own VAE, which overflows in fp16 and stays in float32. The UNet comes in
    `unet_dtype`: float32 when all of it trains, the compute dtype when only LoRA
    adapters (added later, in float32) train.
    """
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import AutoTokenizer, CLIPTextModel, CLIPTextModelWithProjection

    path = info.path
    sdxl = info.family is ModelFamily.STABLE_DIFFUSION_XL
    tokenizers = [AutoTokenizer.from_pretrained(path, subfolder="tokenizer")]
    text_encoders: list[Any] = [
        CLIPTextModel.from_pretrained(path, subfolder="text_encoder", dtype=frozen_dtype)
    ]
    if sdxl:
        tokenizers.append(AutoTokenizer.from_pretrained(path, subfolder="tokenizer_2"))
        text_encoders.append(
            CLIPTextModelWithProjection.from_pretrained(
                path, subfolder="text_encoder_2", dtype=frozen_dtype
            )
        )
    vae_dtype = torch.float32 if sdxl and not vae_model else frozen_dtype
    if vae_model:
        vae = AutoencoderKL.from_pretrained(resolve_model(vae_model), torch_dtype=vae_dtype)
    else:
        vae = AutoencoderKL.from_pretrained(path, subfolder="vae", torch_dtype=vae_dtype)
    for module in [vae, *text_encoders]:
        module.requires_grad_(False).eval().to(device)
    unet: Any = UNet2DConditionModel.from_pretrained(path, subfolder="unet", torch_dtype=unet_dtype)
    return DiffusionComponents(
        info=info,
        tokenizers=tokenizers,
        text_encoders=text_encoders,
        vae=vae,
        unet=unet.to(device),
        noise_scheduler=DDPMScheduler.from_pretrained(path, subfolder="scheduler"),
    )


def add_lora(unet: Any, *, rank: int, alpha: int, target_modules: list[str]) -> None:
    """Freeze the UNet and add LoRA adapters whose B matrices start at zero, so the policy
    starts exactly at the base model."""
    from peft import LoraConfig

    unet.requires_grad_(False)
    unet.add_adapter(
        LoraConfig(
            r=rank,
            lora_alpha=alpha,
            init_lora_weights="gaussian",
            target_modules=target_modules,
        )
    )


class AdapterDisabledReference:
    """The reference for LoRA training: the policy's own UNet with its adapters off."""

    def __init__(self, unet: Any) -> None:
        self.unet = unet

    @torch.no_grad()
    def __call__(
        self, noisy_latents: torch.Tensor, timesteps: torch.Tensor, conditioning: Conditioning
    ) -> torch.Tensor:
        self.unet.disable_adapters()
        try:
            return predict_noise(self.unet, noisy_latents, timesteps, conditioning)
        finally:
            self.unet.enable_adapters()


class FrozenCopyReference:
    """The reference for full fine-tuning: a frozen copy of the UNet taken before training."""

    def __init__(self, unet: Any, dtype: torch.dtype) -> None:
        self.unet = copy.deepcopy(unet).requires_grad_(False).eval().to(dtype)

    @torch.no_grad()
    def __call__(
        self, noisy_latents: torch.Tensor, timesteps: torch.Tensor, conditioning: Conditioning
    ) -> torch.Tensor:
        return predict_noise(self.unet, noisy_latents, timesteps, conditioning)
