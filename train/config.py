"""Every knob of a Diffusion-DPO run, with the default and where it comes from.

Sources named in the field docs: "AGFSync" is An, Huang et al. 2024 (the paper
this toolkit implements: 1000 steps, cosine schedule, fp16; SD 1.x lr 5e-7, batch
128, 512 px; SDXL lr 1e-6, batch 64, 1024 px); "Diffusion-DPO" is Wallace et al.
2023 and its official launchers; "diffusers' DPO example" is
`examples/research_projects/diffusion_dpo` in diffusers (LoRA recipe).

`None` on a field means "decided per model family or per environment";
`DPOTrainingConfig.resolved` fills those in once the base model's configuration
has been read.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agfsync.environment import ACCELERATE_MIXED_PRECISION
from agfsync.errors import ConfigurationError


class ModelFamily(StrEnum):
    """The architectures the trainer knows how to condition."""

    STABLE_DIFFUSION = "stable-diffusion"
    """SD 1.x / 2.x: one CLIP text encoder, no extra conditioning."""
    STABLE_DIFFUSION_XL = "stable-diffusion-xl"
    """SDXL: two text encoders, pooled embedding and size/crop time ids."""


class FamilyDefaults(BaseModel):
    full_learning_rate: float
    effective_batch_size: int


FAMILY_DEFAULTS = {
    ModelFamily.STABLE_DIFFUSION: FamilyDefaults(full_learning_rate=5e-7, effective_batch_size=128),
    ModelFamily.STABLE_DIFFUSION_XL: FamilyDefaults(
        full_learning_rate=1e-6, effective_batch_size=64
    ),
}
"""AGFSync's training set-up per model family (the paper, section 4)."""

LORA_LEARNING_RATE = 1e-5
"""diffusers' DPO example trains rank-8 LoRA at 1e-5 for both SD 1.5 and SDXL. A
LoRA update is a low-rank product initialised at zero, so it needs a far larger
step than the full-weight 5e-7/1e-6 to move the model in 1000 steps."""


class DPOTrainingConfig(BaseModel):
    """A Diffusion-DPO (or SFT-baseline) training run."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    # -- what to train on --------------------------------------------------------------
    pretrained_model: str
    """Base diffusers pipeline: Hub id, local folder or `tiny:<name>`. SD 1.x/2.x and SDXL."""
    vae_model: str | None = None
    """A replacement VAE (e.g. madebyollin/sdxl-vae-fp16-fix). None: the pipeline's own;
    SDXL's own VAE then runs in float32 because it overflows in fp16."""
    dataset: str
    """Preference dataset: Hub id or local folder (e.g. one written by `agfsync generate`)."""
    dataset_config: str | None = None
    """Dataset configuration (`load_dataset(dataset, dataset_config)`). None: the
    dataset's default; an agfsync dataset's `images` config trains the same."""
    split: str = "train"
    """Dataset split; `train` is the split agfsync publishes."""
    caption_column: str | None = None
    """Prompt column. None: `caption`, else `prompt`."""
    streaming: bool = False
    """Stream the dataset instead of downloading it whole (datasets larger than disk/RAM)."""
    shuffle_buffer_size: int = Field(default=1000, ge=1)
    """Streaming only: examples held in the shuffle buffer (datasets' default)."""
    max_bad_image_fraction: float = Field(default=0.01, ge=0.0, le=1.0)
    """Undecodable images are skipped and counted; training stops when they exceed this
    share of the dataset's images (1%: a few broken files are normal, many mean the
    wrong column or a corrupt download)."""

    # -- images ------------------------------------------------------------------------
    resolution: int | None = Field(default=None, ge=8)
    """Training resolution in pixels. None: the model's native one (UNet sample size x
    VAE scale factor): 512 for SD 1.x and 1024 for SDXL, as AGFSync trained."""
    random_flip: bool = True
    """Flip both images of a pair horizontally together with probability 0.5
    (Diffusion-DPO flips by default)."""
    random_crop: bool = False
    """Crop both images of a pair at the same random position; off: centre crop
    (Diffusion-DPO's default)."""
    cache_latents: bool = False
    """Keep VAE latents on disk so later epochs skip the VAE. Keyed by image content and
    the flip/crop applied, so it is exact; incompatible with `random_crop` (every crop
    would be a new key)."""
    latents_cache_dir: Path | None = None
    """Where cached latents live. None: `<output_dir>/latents-cache`."""

    # -- objective ---------------------------------------------------------------------
    loss: Literal["dpo", "sft"] = "dpo"
    """`dpo`: Diffusion-DPO. `sft`: plain denoising loss on the preferred images only, the
    baseline Diffusion-DPO compares against."""
    beta: float = Field(default=5000.0, gt=0)
    """KL penalty of Diffusion-DPO (Diffusion-DPO's launchers: 5000 for SD 1.5 and SDXL).
    Convention: the loss multiplies by -0.5 * beta, as the official code does, so beta 5000
    here equals beta 2500 in a formula without the 0.5."""

    # -- what is trained ---------------------------------------------------------------
    use_lora: bool = True
    """Train LoRA adapters on the UNet (the reference is the same UNet with adapters off);
    off: full fine-tuning against a frozen copy (AGFSync fine-tuned the full UNet)."""
    lora_rank: int = Field(default=8, ge=1)
    """LoRA rank (diffusers' DPO example)."""
    lora_alpha: int | None = Field(default=None, ge=1)
    """LoRA scaling numerator. None: equal to the rank (scale 1, diffusers' DPO example)."""
    lora_target_modules: list[str] = Field(
        default_factory=lambda: ["to_k", "to_q", "to_v", "to_out.0"]
    )
    """UNet attention projections that get adapters (diffusers' DPO example)."""

    # -- optimisation ------------------------------------------------------------------
    learning_rate: float | None = Field(default=None, gt=0)
    """None: full fine-tuning 5e-7 for SD 1.x and 1e-6 for SDXL (AGFSync); LoRA 1e-5
    (diffusers' DPO example)."""
    lr_scheduler: Literal["cosine", "constant", "constant_with_warmup", "linear"] = "cosine"
    """Learning-rate schedule (AGFSync: cosine)."""
    lr_warmup_steps: int = Field(default=0, ge=0)
    """Warm-up optimizer steps (AGFSync states none)."""
    max_train_steps: int = Field(default=1000, ge=1)
    """Optimizer steps (AGFSync: 1000)."""
    train_batch_size: int = Field(default=1, ge=1)
    """Pairs per device per forward pass; raise it as far as memory allows."""
    effective_batch_size: int | None = Field(default=None, ge=1)
    """Pairs per optimizer step over all devices and accumulation. None: 128 for SD 1.x and
    64 for SDXL (AGFSync). Gradient accumulation = this / (train_batch_size x devices)."""
    adam_beta1: float = 0.9
    """AdamW beta1 (PyTorch and diffusers' examples)."""
    adam_beta2: float = 0.999
    """AdamW beta2 (PyTorch and diffusers' examples)."""
    adam_weight_decay: float = 1e-2
    """AdamW weight decay (diffusers' examples)."""
    adam_epsilon: float = 1e-8
    """AdamW epsilon (diffusers' examples)."""
    max_grad_norm: float = Field(default=1.0, gt=0)
    """Gradient clipping norm (diffusers' examples)."""
    use_8bit_adam: bool = False
    """bitsandbytes' 8-bit AdamW (needs `pip install bitsandbytes` and a CUDA GPU)."""
    gradient_checkpointing: bool = False
    """Recompute UNet activations in the backward pass: less memory, about 30% slower."""
    mixed_precision: Literal["no", "fp16", "bf16"] | None = None
    """None: fp16 on CUDA (AGFSync trained in fp16), none on CPU; a value set by `accelerate
    launch`/`accelerate config` wins (accelerate launch alone sets `no`)."""
    seed: int = 0
    """Seeds LoRA initialisation, data order, augmentation, noise and timesteps."""
    dataloader_num_workers: int = Field(default=0, ge=0)
    """Processes decoding images; 0 decodes in the training process."""

    # -- outputs -----------------------------------------------------------------------
    output_dir: Path = Path("dpo-output")
    """Where the LoRA or pipeline, model card, checkpoints, logs and validation grids go:
    a new or empty folder, or one an earlier `agfsync train` wrote (`agfsync.ownership`)."""
    overwrite: bool = False
    """Also write into an `output_dir` holding files agfsync did not write; those are kept,
    and a name agfsync writes (README.md, checkpoint-N, ...) that is taken stops the run."""
    checkpointing_steps: int = Field(default=500, ge=1)
    """Save a resumable checkpoint every N optimizer steps (Diffusion-DPO's SD 1.5 launcher)."""
    checkpoints_total_limit: int | None = Field(default=None, ge=1)
    """Keep only the newest N checkpoints. None: keep all."""
    resume_from_checkpoint: str | None = None
    """`latest` or a checkpoint folder: restores weights, optimizer, schedule, RNG and data
    position, then continues as if never interrupted."""
    report_to: str | None = None
    """accelerate tracker (tensorboard, wandb, ...) or `none`. None: tensorboard when it is
    installed, else none."""
    validation_prompts: list[str] = Field(
        default_factory=lambda: [
            "a red bicycle leaning against a blue door",
            "two cats sleeping on a green sofa",
            "a lighthouse on a cliff at sunset",
        ]
    )
    """Prompts rendered at every validation (fixed, so grids are comparable over time)."""
    validation_steps: int = Field(default=100, ge=0)
    """Render a validation grid every N optimizer steps and at the end; 0: never."""
    validation_seed: int = 0
    """Prompt i is rendered with seed validation_seed + i."""
    validation_inference_steps: int = Field(default=25, ge=1)
    """Denoising steps per validation image."""
    push_to_hub: bool = False
    """Upload the model (its card, weights and shown validation images; not checkpoints,
    logs or other files) to the Hub; the token comes from --hub-token, HF_TOKEN or `hf
    auth login` and is never written to disk."""
    hub_model_id: str | None = None
    """Hub repository for push_to_hub. None: the output folder's name."""

    @property
    def hub_repo(self) -> str:
        """The Hub repository `push_to_hub` uploads to."""
        return self.hub_model_id or self.output_dir.resolve().name

    @model_validator(mode="after")
    def _check_combinations(self) -> DPOTrainingConfig:
        if self.cache_latents and self.random_crop:
            raise ValueError(
                "cache_latents needs a deterministic crop: every random crop would be a new "
                "cache entry. Turn off random_crop (centre crop) or cache_latents."
            )
        return self

    @classmethod
    def from_yaml(cls, path: Path, **overrides: Any) -> DPOTrainingConfig:
        """Read a YAML mapping of field names; `overrides` (e.g. CLI flags) win."""
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as error:
            raise ConfigurationError(f"Cannot read config file {path}: {error}") from None
        if not isinstance(values, dict):
            raise ConfigurationError(f"{path} must hold a mapping of option names to values.")
        return cls.validated({**values, **overrides})

    @classmethod
    def validated(cls, values: dict[str, Any]) -> DPOTrainingConfig:
        """Build a config, turning pydantic's errors into one readable ConfigurationError."""
        try:
            return cls.model_validate(values)
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in item['loc']) or 'config'}: {item['msg']}"
                for item in error.errors()
            )
            raise ConfigurationError(f"Invalid training configuration: {problems}") from None

    def resolved(self, family: ModelFamily, native_resolution: int) -> DPOTrainingConfig:
        """A copy with every per-family/per-environment `None` replaced by its value."""
        defaults = FAMILY_DEFAULTS[family]
        learning_rate = self.learning_rate or (
            LORA_LEARNING_RATE if self.use_lora else defaults.full_learning_rate
        )
        return self.model_copy(
            update={
                "resolution": self.resolution or native_resolution,
                "learning_rate": learning_rate,
                "effective_batch_size": self.effective_batch_size or defaults.effective_batch_size,
                "lora_alpha": self.lora_alpha or self.lora_rank,
                "mixed_precision": self.mixed_precision or _environment_mixed_precision(),
                "report_to": self.report_to or _default_tracker(),
                "latents_cache_dir": self.latents_cache_dir or self.output_dir / "latents-cache",
            }
        )

    def gradient_accumulation_steps(self, num_processes: int) -> int:
        """Micro-batches per optimizer step so that the effective batch is what was asked."""
        assert self.effective_batch_size is not None, "call resolved() first"
        per_pass = self.train_batch_size * num_processes
        if self.effective_batch_size % per_pass:
            raise ConfigurationError(
                f"effective_batch_size {self.effective_batch_size} is not a multiple of "
                f"train_batch_size {self.train_batch_size} x {num_processes} device(s); "
                "change one of them."
            )
        return self.effective_batch_size // per_pass


def _environment_mixed_precision() -> str:
    import torch

    configured = ACCELERATE_MIXED_PRECISION.get()
    if configured:
        return configured
    return "fp16" if torch.cuda.is_available() else "no"


def _default_tracker() -> str:
    from importlib.util import find_spec

    return "tensorboard" if find_spec("tensorboard") else "none"
