"""The Diffusion-DPO training loop on accelerate.

Order of work: open the dataset and check its columns, check every model the run
loads (base and VAE: `agfsync.run.preflight`), read the base model's configuration,
resolve the per-family defaults, check the Hub upload, the folders written and the
disk space (`preflight`), and only then claim the output folder, load weights and
train. So a run that is certain to fail stops in seconds, before writing anything,
not after minutes of model loading or hours of training.

Reproducibility and resume: data order and augmentation are a function of (seed,
epoch, pair); the VAE sample, noise and timesteps of a micro-batch are drawn from a
generator seeded by (seed, micro-batch index, process). A checkpoint
(`accelerator.save_state`) holds the weights (LoRA: the adapter only), optimizer,
LR schedule, RNG states and the data position; a resumed run skips the micro-batches
already consumed and continues with the same losses an uninterrupted run would see.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from accelerate.logging import get_logger
from PIL import Image

from agfsync.errors import ConfigurationError
from agfsync.logs import diffusers_bars_off
from agfsync.ownership import FolderKind, check_output_folder, check_writable, claim_folder
from agfsync.progress import Progress, progress
from agfsync.run.preflight import (
    ModelNeed,
    check_disk,
    check_hub_upload,
    check_models,
    png_bytes,
)
from agfsync.train.config import DPOTrainingConfig
from agfsync.train.data import (
    BatchPlan,
    DataCounts,
    PairBatch,
    PairedTransform,
    PairReader,
    PreferencePairs,
    epoch_batches,
    open_preference_pairs,
)
from agfsync.train.latents_cache import LatentsCache
from agfsync.train.loss import diffusion_dpo_loss, sft_loss
from agfsync.train.models import (
    AdapterDisabledReference,
    BaseModelInfo,
    DiffusionComponents,
    FrozenCopyReference,
    add_lora,
    inspect_base_model,
    load_components,
    predict_noise,
)
from agfsync.train.outputs import (
    LORA_WEIGHTS,
    MODEL_CARD,
    PIPELINE_FOLDERS,
    PIPELINE_INDEX,
    check_model_repo,
    model_repo_files,
    push_to_hub,
    save_lora,
    write_model_card,
)

if TYPE_CHECKING:
    from accelerate import Accelerator

logger = get_logger("agfsync.train")
"""Logs on the main process only (accelerate's adapter), once the Accelerator exists."""

LORA_CHECKPOINT_FILE = "lora_adapter.safetensors"
CHECKPOINT_PREFIX = "checkpoint-"
CHECKPOINT_NAME = re.compile(rf"{CHECKPOINT_PREFIX}([0-9]+)")
"""The name of a checkpoint agfsync writes: `checkpoint-<optimizer step>`."""
PROGRESS_METRICS = ("loss", "implicit_accuracy", "lr")
"""Metrics shown beside the progress bar (all of them go to the trackers)."""
_WEIGHT_DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
CHECKPOINT_BYTES_PER_PARAMETER = 12
"""A checkpoint holds each trainable parameter in float32 and AdamW's two float32
moments; the RNG, scheduler and data-position files are small."""
FULL_PIPELINE_FACTOR = 1.5
"""Full fine-tuning saves the whole pipeline: about the UNet's float32 weights times
this (text encoders and VAE; SD 1.5: 1.24, SDXL: 1.34)."""


@dataclass
class TrainingProgress:
    """Where the run is; checkpointed with the weights so a resume continues exactly."""

    global_step: int = 0
    epoch: int = 0
    batches_done_in_epoch: int = 0
    micro_batches_done: int = 0
    """Over all epochs: seeds the noise of the next micro-batch."""

    def state_dict(self) -> dict[str, int]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, int]) -> None:
        for name, value in state.items():
            setattr(self, name, value)


@dataclass
class TrainingResult:
    config: DPOTrainingConfig
    """The configuration with every per-family default resolved."""
    history: list[dict[str, float]] = field(default_factory=list)
    """Metrics of each optimizer step of this invocation (`step` included)."""
    data_counts: DataCounts = field(default_factory=DataCounts)
    validation_grids: list[Path] = field(default_factory=list)
    hub_url: str | None = None


TRAINING_ENTRIES = (
    f"{CHECKPOINT_PREFIX}*/",
    "logs/",
    "validation/",
    "latents-cache/",
    MODEL_CARD,
    LORA_WEIGHTS,
    PIPELINE_INDEX,
    *(f"{folder}/" for folder in PIPELINE_FOLDERS),
)
"""The names a training folder of agfsync holds (checkpoints, logs, validation grids,
latent cache, the model card and the saved LoRA or pipeline)."""


def checkpoint_step(path: Path) -> int | None:
    """The optimizer step of a `checkpoint-N` folder, from its name; None for another name."""
    match = CHECKPOINT_NAME.fullmatch(path.name)
    return int(match[1]) if match else None


def _checkpoints(output_dir: Path) -> list[Path]:
    """The `checkpoint-N` folders of a run, oldest first. Another name (`checkpoint-best`)
    or a symbolic link is not a checkpoint agfsync wrote: never resumed from as `latest`,
    never deleted, and nothing it points to is either."""
    found = [
        (step, path)
        for path in output_dir.glob(f"{CHECKPOINT_PREFIX}*")
        if (step := checkpoint_step(path)) is not None and not path.is_symlink() and path.is_dir()
    ]
    return [path for _, path in sorted(found)]


def prune_checkpoints(output_dir: Path, keep: int) -> None:
    """Delete the oldest checkpoints (`_checkpoints`) until at most `keep` remain."""
    existing = _checkpoints(output_dir)
    for old in existing[: max(0, len(existing) - keep)]:
        shutil.rmtree(old)


def find_checkpoint(output_dir: Path, requested: str) -> Path | None:
    """`latest`: the newest `checkpoint-N` in the output folder (None if there is none);
    anything else must be a checkpoint folder."""
    if requested != "latest":
        path = Path(requested)
        if not path.is_dir():
            raise ConfigurationError(f"Checkpoint {path} does not exist.")
        return path
    checkpoints = _checkpoints(output_dir)
    return checkpoints[-1] if checkpoints else None


def models_to_load(config: DPOTrainingConfig) -> list[ModelNeed]:
    """Every model training loads: the base pipeline (text encoders, UNet, scheduler, and
    the pipeline that renders the validation images) and the VAE, when it is another."""
    needs = [ModelNeed(config.pretrained_model, "--pretrained-model")]
    if config.vae_model:
        needs.append(
            ModelNeed(
                config.vae_model,
                "--vae-model",
                alternative="pass a local folder, or leave --vae-model out to use the base "
                "model's VAE",
            )
        )
    return needs


def preflight(
    config: DPOTrainingConfig,
    info: BaseModelInfo,
    num_pairs: int | None,
    *,
    hub_token: str | None,
) -> None:
    """What can be checked once the models are known, before the output folder is
    claimed and any weight is loaded: the Hub upload at the end (token, offline, the Hub
    answering), the folders written, and the disk space (`training_disk_needs`)."""
    if config.push_to_hub:
        check_hub_upload(
            hub_token,
            repo=config.hub_repo,
            flag="--push-to-hub",
            alternative="train without --push-to-hub and upload the folder later "
            "(hf upload REPO FOLDER)",
        )
        check_model_repo(
            config.hub_repo,
            hub_token,
            overwrite=config.overwrite,
        )
    assert config.latents_cache_dir is not None
    if config.cache_latents:
        check_writable(
            config.latents_cache_dir,
            what="--latents-cache-dir",
            fix="choose a folder you can write to, or train without --cache-latents",
        )
    check_disk(
        training_disk_needs(config, info, num_pairs),
        hint="free some space, choose another --output, keep fewer checkpoints "
        "(--checkpoints-total-limit) or validate less often (--validation-steps)",
    )


def trainable_parameters(config: DPOTrainingConfig, info: BaseModelInfo) -> tuple[int, int]:
    """(trainable, UNet) parameter counts, from the UNet's configuration on the meta
    device: no weight is read or allocated."""
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel

    unet_config = UNet2DConditionModel.load_config(info.path, subfolder="unet")
    with init_empty_weights():
        unet: Any = UNet2DConditionModel.from_config(unet_config)
        total = sum(parameter.numel() for parameter in unet.parameters())
        if not config.use_lora:
            return total, total
        assert config.lora_alpha is not None
        try:
            add_lora(
                unet,
                rank=config.lora_rank,
                alpha=config.lora_alpha,
                target_modules=config.lora_target_modules,
            )
        except ValueError as error:  # peft: no module of the UNet matches
            raise ConfigurationError(
                f"--lora-target-modules {','.join(config.lora_target_modules)}: {error}"
            ) from None
        trainable = sum(p.numel() for p in unet.parameters() if p.requires_grad)
    return trainable, total


def steps_done(config: DPOTrainingConfig) -> int:
    """The optimizer steps a resumed run starts after: its checkpoint's `N` (0 when not
    resuming, when there is no checkpoint yet, or for a folder not named `checkpoint-N`)."""
    if not config.resume_from_checkpoint:
        return 0
    checkpoint = find_checkpoint(config.output_dir, config.resume_from_checkpoint)
    return (checkpoint_step(checkpoint) or 0) if checkpoint else 0


def new_checkpoints(config: DPOTrainingConfig, done: int) -> int:
    """How many more checkpoints the output folder holds at most, once the run has
    written those still to come after step `done`: all of them, or with
    --checkpoints-total-limit only up to the limit, counting those already there (the
    oldest are deleted to make room)."""
    to_write = config.max_train_steps // config.checkpointing_steps
    to_write -= min(done, config.max_train_steps) // config.checkpointing_steps
    limit = config.checkpoints_total_limit
    if not limit:
        return to_write
    return min(to_write, max(0, limit - len(_checkpoints(config.output_dir))))


def cached_latents(cache_dir: Path) -> int:
    """The entries of the largest per-VAE folder of a latent cache already on disk
    (`LatentsCache`'s `<vae>/<xx>/<key>.safetensors`): what a resumed run (or one on the
    same data) reads back rather than writes again."""
    counts = [0]
    if cache_dir.is_dir():
        for vae in os.scandir(cache_dir):
            if vae.is_dir(follow_symlinks=False):
                counts.append(
                    sum(
                        sum(entry.name.endswith(".safetensors") for entry in os.scandir(shard))
                        for shard in os.scandir(vae.path)
                        if shard.is_dir(follow_symlinks=False)
                    )
                )
    return max(counts)


def training_disk_needs(
    config: DPOTrainingConfig, info: BaseModelInfo, num_pairs: int | None
) -> dict[Path, int]:
    """A rough upper bound of what a run still writes, by folder: the checkpoints still
    to be written and kept (`new_checkpoints`; each the trainable parameters and their
    AdamW state, `CHECKPOINT_BYTES_PER_PARAMETER`), the saved LoRA or pipeline, the
    validation images still to come (a grid and one file per prompt, at
    `PNG_BYTES_PER_PIXEL`), and the latents not yet cached (two latents per pair,
    flipped and not). A resumed run counts only what comes after its checkpoint."""
    trainable, unet = trainable_parameters(config, info)
    done = min(steps_done(config), config.max_train_steps)
    checkpoints = new_checkpoints(config, done)
    saved = 4 * trainable if config.use_lora else int(4 * unet * FULL_PIPELINE_FACTOR)
    assert config.resolution is not None
    prompts = len(config.validation_prompts)
    validations = (
        config.max_train_steps // config.validation_steps - done // config.validation_steps + 1
        if config.validation_steps and prompts
        else 0
    )
    images = png_bytes(config.resolution, config.resolution, 2 * prompts * validations)
    needs = {
        config.output_dir: checkpoints * CHECKPOINT_BYTES_PER_PARAMETER * trainable + saved + images
    }
    if config.cache_latents and num_pairs:
        assert config.latents_cache_dir is not None
        # mean and log-variance, 4 channels at 1/8 of the resolution, float32
        latent = 2 * 4 * (config.resolution // 8) ** 2 * 4
        flips = 2 if config.random_flip else 1
        cache = config.latents_cache_dir
        missing = max(0, 2 * num_pairs * flips - cached_latents(cache))
        needs[cache] = needs.get(cache, 0) + missing * latent
    return needs


def _optimizer_class(config: DPOTrainingConfig) -> Any:
    if not config.use_8bit_adam:
        return torch.optim.AdamW
    try:
        import bitsandbytes
    except ImportError:
        raise ConfigurationError(
            "--use-8bit-adam needs bitsandbytes (pip install bitsandbytes, CUDA only); "
            "or leave it off."
        ) from None
    return bitsandbytes.optim.AdamW8bit


def _noise_generator(seed: int, micro_batch: int, process: int, processes: int) -> torch.Generator:
    """A CPU generator that depends only on the run seed and the micro-batch's place."""
    position = micro_batch * processes + process
    return torch.Generator().manual_seed((seed * 1_000_003 + position) % 2**63)


def _tracker_config(config: DPOTrainingConfig) -> dict[str, Any]:
    """Hyper-parameters as trackers accept them (TensorBoard: scalars and strings only)."""
    return {
        name: value if isinstance(value, int | float | str | bool) else str(value)
        for name, value in config.model_dump(mode="json").items()
    }


class DPOTrainer:
    """One training run; `run()` trains, saves and returns the metrics."""

    def __init__(self, config: DPOTrainingConfig, *, hub_token: str | None = None) -> None:
        self.hub_token = hub_token
        # Cheap checks first: output folder, dataset columns, base model family, packages.
        check_output_folder(
            config.output_dir,
            FolderKind.TRAINING,
            flag="--output",
            overwrite=config.overwrite,
            reserved=TRAINING_ENTRIES,
        )
        self.pairs: PreferencePairs = open_preference_pairs(
            config.dataset,
            config=config.dataset_config,
            split=config.split,
            caption_column=config.caption_column,
            streaming=config.streaming,
            shuffle_seed=config.seed,
            shuffle_buffer_size=config.shuffle_buffer_size,
        )
        if self.pairs.num_pairs == 0:
            raise ConfigurationError(
                f"Dataset {config.dataset!r} has no pairs left to train on "
                f"({self.pairs.ties_removed} ties removed)."
            )
        check_models(models_to_load(config))
        info = inspect_base_model(config.pretrained_model)
        self.config = config = config.resolved(info.family, info.native_resolution)
        self.optimizer_class = _optimizer_class(config)
        preflight(config, info, self.pairs.num_pairs, hub_token=hub_token)

        from accelerate import Accelerator
        from accelerate.utils import ProjectConfiguration, set_seed

        self.owned = claim_folder(
            config.output_dir,
            FolderKind.TRAINING,
            flag="--output",
            overwrite=config.overwrite,
            reserved=TRAINING_ENTRIES,
        )
        self.owned.add(*TRAINING_ENTRIES)  # its files recorded once written (`_finish`)
        self.accelerator = Accelerator(
            mixed_precision=config.mixed_precision,
            log_with=None if config.report_to == "none" else config.report_to,
            project_config=ProjectConfiguration(
                project_dir=str(config.output_dir), logging_dir=str(config.output_dir / "logs")
            ),
        )
        # Known only once accelerate has counted the processes.
        self.accelerator.gradient_accumulation_steps = config.gradient_accumulation_steps(
            self.accelerator.num_processes
        )
        self.weight_dtype = _WEIGHT_DTYPES[self.accelerator.mixed_precision]
        set_seed(config.seed)  # LoRA's initial A matrices
        self.components: DiffusionComponents = load_components(
            info,
            vae_model=config.vae_model,
            device=self.accelerator.device,
            frozen_dtype=self.weight_dtype,
            # LoRA: the frozen base computes in the mixed-precision dtype.
            unet_dtype=self.weight_dtype if config.use_lora else torch.float32,
        )
        self.reference = self._set_up_policy()
        self.data_counts = DataCounts(ties=self.pairs.ties_removed)
        self.progress = TrainingProgress()
        self._window: list[dict[str, float]] = []
        self._bar: Progress
        """Metrics of the micro-batches of the optimizer step in progress."""
        assert config.latents_cache_dir is not None
        self.latents_cache = (
            LatentsCache(
                config.latents_cache_dir,
                f"{config.vae_model or info.path}:{self.components.vae.dtype}",
            )
            if config.cache_latents
            else None
        )

    # -- set-up --------------------------------------------------------------------------

    def _set_up_policy(self) -> AdapterDisabledReference | FrozenCopyReference | None:
        """Make the UNet trainable (LoRA or full), then prepare it with its optimizer and
        LR schedule; return the reference model (None for SFT, which needs none)."""
        from diffusers.optimization import get_scheduler
        from diffusers.training_utils import cast_training_params

        config, unet = self.config, self.components.unet
        reference: AdapterDisabledReference | FrozenCopyReference | None = None
        if config.use_lora:
            assert config.lora_alpha is not None
            add_lora(
                unet,
                rank=config.lora_rank,
                alpha=config.lora_alpha,
                target_modules=config.lora_target_modules,
            )
            cast_training_params(unet, dtype=torch.float32)
            reference = AdapterDisabledReference(unet) if config.loss == "dpo" else None
        elif config.loss == "dpo":
            reference = FrozenCopyReference(unet, self.weight_dtype)
        if config.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
        unet.train()
        self.trainable = [p for p in unet.parameters() if p.requires_grad]
        assert config.learning_rate is not None
        optimizer = self.optimizer_class(
            self.trainable,
            lr=config.learning_rate,
            betas=(config.adam_beta1, config.adam_beta2),
            weight_decay=config.adam_weight_decay,
            eps=config.adam_epsilon,
        )
        # Prepared schedulers step once per process per optimizer step.
        processes = self.accelerator.num_processes
        lr_scheduler = get_scheduler(
            config.lr_scheduler,
            optimizer,
            num_warmup_steps=config.lr_warmup_steps * processes,
            num_training_steps=config.max_train_steps * processes,
        )
        self.unet, self.optimizer, self.lr_scheduler = self.accelerator.prepare(
            unet, optimizer, lr_scheduler
        )
        if config.use_lora:
            self.accelerator.register_save_state_pre_hook(self._save_lora_state)
            self.accelerator.register_load_state_pre_hook(self._load_lora_state)
        return reference

    def _save_lora_state(self, models: list[Any], weights: list[Any], output_dir: str) -> None:
        """Checkpoint only the adapter, not the frozen base UNet."""
        from peft.utils import get_peft_model_state_dict
        from safetensors.torch import save_file

        if self.accelerator.is_main_process:
            state = get_peft_model_state_dict(self.accelerator.unwrap_model(models[0]))
            save_file(
                {k: v.contiguous() for k, v in state.items()},
                Path(output_dir) / LORA_CHECKPOINT_FILE,
            )
        weights.clear()

    def _load_lora_state(self, models: list[Any], input_dir: str) -> None:
        from peft.utils import set_peft_model_state_dict
        from safetensors.torch import load_file

        unet = self.accelerator.unwrap_model(models.pop())
        state = load_file(Path(input_dir) / LORA_CHECKPOINT_FILE, device=str(unet.device))
        set_peft_model_state_dict(unet, state)

    # -- one micro-batch -----------------------------------------------------------------

    def _latents(self, batch: PairBatch, generator: torch.Generator) -> torch.Tensor:
        from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

        vae = self.components.vae
        pixels = batch.pixel_values.to(self.accelerator.device, vae.dtype)

        def encode(images: torch.Tensor) -> torch.Tensor:
            return vae.encode(images).latent_dist.parameters

        with torch.no_grad():
            parameters = (
                self.latents_cache.distribution_parameters(pixels, batch.image_keys, encode)
                if self.latents_cache
                else encode(pixels)
            )
            sample = DiagonalGaussianDistribution(parameters).sample(generator)
        return sample.float() * vae.config.scaling_factor

    def _loss(self, batch: PairBatch) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss of one micro-batch: winners and losers noised with the same noise at the
        same timestep, scored by policy and reference."""
        config, scheduler = self.config, self.components.noise_scheduler
        device, pairs = self.accelerator.device, batch.num_pairs
        generator = _noise_generator(
            config.seed,
            self.progress.micro_batches_done,
            self.accelerator.process_index,
            self.accelerator.num_processes,
        )
        latents = self._latents(batch, generator)
        noise = torch.randn((pairs, *latents.shape[1:]), generator=generator).to(device)
        timesteps = torch.randint(
            0, scheduler.config.num_train_timesteps, (pairs,), generator=generator
        ).to(device)
        noise, timesteps = noise.repeat(2, 1, 1, 1), timesteps.repeat(2)
        noisy = scheduler.add_noise(latents, noise, timesteps)
        if scheduler.config.prediction_type == "v_prediction":
            target = scheduler.get_velocity(latents, noise, timesteps)
        else:
            target = noise
        assert config.resolution is not None
        conditioning = self.components.conditioning(
            batch.captions, batch.original_sizes, batch.crop_top_lefts, config.resolution
        )
        with self.accelerator.autocast():
            if self.reference is None:  # SFT baseline: the winners only
                prediction = predict_noise(
                    self.unet, noisy[:pairs], timesteps[:pairs], conditioning
                )
                loss = sft_loss(prediction, target[:pairs])
                return loss, {"loss": loss.item(), "mse_w": loss.item()}
            conditioning = conditioning.repeated(2)
            prediction = predict_noise(self.unet, noisy, timesteps, conditioning)
            reference = self.reference(noisy, timesteps, conditioning)
        output = diffusion_dpo_loss(
            prediction[:pairs],
            prediction[pairs:],
            reference[:pairs],
            reference[pairs:],
            target[:pairs],
            target[pairs:],
            beta=config.beta,
        )
        return output.loss, output.metrics()

    # -- the run -------------------------------------------------------------------------

    def run(self) -> TrainingResult:
        config, accelerator = self.config, self.accelerator
        accelerator.register_for_checkpointing(self.progress)
        accelerator.register_for_checkpointing(self.data_counts)
        if config.resume_from_checkpoint:
            checkpoint = find_checkpoint(config.output_dir, config.resume_from_checkpoint)
            if checkpoint is None:
                logger.info("No checkpoint in %s yet: starting from scratch.", config.output_dir)
            else:
                accelerator.load_state(str(checkpoint))
                logger.info("Resumed from %s at step %d.", checkpoint, self.progress.global_step)
        accelerator.init_trackers("agfsync-dpo", config=_tracker_config(config))
        self._log_plan()
        result = TrainingResult(config=config, data_counts=self.data_counts)
        assert config.resolution is not None
        reader = PairReader(
            self.pairs.columns,
            PairedTransform(config.resolution, config.random_flip, config.random_crop),
            config.seed,
            self.pairs.image_roots,
        )
        plan = BatchPlan(
            batch_size=config.train_batch_size,
            seed=config.seed,
            process_index=accelerator.process_index,
            num_processes=accelerator.num_processes,
            num_workers=config.dataloader_num_workers,
        )
        with progress(
            "training",
            total=config.max_train_steps,
            unit="steps",
            initial=self.progress.global_step,
            terminal=None if accelerator.is_main_process else False,
        ) as self._bar:
            while self.progress.global_step < config.max_train_steps:
                whole_pass = self.progress.batches_done_in_epoch == 0
                trained = self._train_epoch(reader, plan, result)
                if self.progress.global_step >= config.max_train_steps:
                    break
                if whole_pass and not trained:
                    raise ConfigurationError(
                        "A whole pass over the dataset produced no trainable pair "
                        f"(skipped: {self.data_counts.state_dict()})."
                    )
                self.progress.epoch += 1
                self.progress.batches_done_in_epoch = 0
        self._finish(result)
        return result

    def _train_epoch(self, reader: PairReader, plan: BatchPlan, result: TrainingResult) -> bool:
        """Train on the rest of the current epoch, or until the last step; return whether
        any pair was trained on."""
        config = self.config
        dataset_images = None if self.pairs.num_pairs is None else 2 * self.pairs.num_pairs
        trained = False
        for batch in epoch_batches(
            self.pairs,
            reader,
            plan,
            epoch=self.progress.epoch,
            skip_batches=self.progress.batches_done_in_epoch,
        ):
            self.data_counts.record(batch)
            self.data_counts.check_bad_images(config.max_bad_image_fraction, dataset_images)
            if batch.num_pairs:
                self._window.append(self._train_micro_batch(batch))
                trained = True
            self.progress.micro_batches_done += 1
            self.progress.batches_done_in_epoch += 1
            if batch.num_pairs and self.accelerator.sync_gradients:
                self._end_optimizer_step(result)
                if self.progress.global_step >= config.max_train_steps:
                    break
        return trained

    def _train_micro_batch(self, batch: PairBatch) -> dict[str, float]:
        with self.accelerator.accumulate(self.unet):
            loss, metrics = self._loss(batch)
            metrics["lr"] = self.lr_scheduler.get_last_lr()[0]  # the rate this step uses
            self.accelerator.backward(loss)
            if self.accelerator.sync_gradients:
                self.accelerator.clip_grad_norm_(self.trainable, self.config.max_grad_norm)
            self.optimizer.step()
            self.lr_scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        return metrics

    def _end_optimizer_step(self, result: TrainingResult) -> None:
        """Average the accumulated micro-batches' metrics, log, checkpoint, validate."""
        accelerator, config = self.accelerator, self.config
        window, self._window = self._window, []
        self.progress.global_step += 1
        step = self.progress.global_step
        names = list(window[0])
        means = torch.tensor(
            [sum(m[name] for m in window) / len(window) for name in names],
            device=accelerator.device,
        )
        values = accelerator.reduce(means, reduction="mean").tolist()
        metrics = dict(zip(names, values, strict=True))
        accelerator.log(
            metrics | {f"data/{k}": v for k, v in self.data_counts.state_dict().items()},
            step=step,
        )
        result.history.append({"step": step, **metrics})
        if accelerator.is_main_process:
            shown = {name: metrics[name] for name in PROGRESS_METRICS if name in metrics}
            self._bar.advance(1, **shown)
        if step % config.checkpointing_steps == 0:
            self._save_checkpoint(step)
        if config.validation_steps and step % config.validation_steps == 0:
            result.validation_grids += self._validate(step)

    def _save_checkpoint(self, step: int) -> None:
        config = self.config
        if self.accelerator.is_main_process and config.checkpoints_total_limit:
            # Make room for the new one.
            prune_checkpoints(config.output_dir, config.checkpoints_total_limit - 1)
        path = config.output_dir / f"{CHECKPOINT_PREFIX}{step}"
        self.accelerator.save_state(str(path))
        logger.info("Saved checkpoint %s", path)

    def _validate(self, step: int) -> list[Path]:
        """Render the fixed validation prompts with their fixed seeds into one grid PNG."""
        config, accelerator = self.config, self.accelerator
        if not accelerator.is_main_process or not config.validation_prompts:
            return []
        from diffusers.utils import make_image_grid

        with diffusers_bars_off():  # they would break into the training bar's line
            pipeline = self.components.inference_pipeline(accelerator.unwrap_model(self.unet))
        pipeline.set_progress_bar_config(disable=True)
        images = []
        with torch.no_grad(), accelerator.autocast():
            for index, prompt in enumerate(config.validation_prompts):
                generator = torch.Generator().manual_seed(config.validation_seed + index)
                images += pipeline(
                    prompt,
                    num_inference_steps=config.validation_inference_steps,
                    height=config.resolution,
                    width=config.resolution,
                    generator=generator,
                ).images
        path = config.output_dir / "validation" / f"step-{step:06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        make_image_grid(images, rows=1, cols=len(images)).save(path)
        for index, image in enumerate(images):  # one file per prompt: the card's widget
            image.save(validation_image(path, index))
        logger.info("Validation images: %s", path)
        log_validation_images(accelerator, images, config.validation_prompts, step)
        return [path]

    def _log_plan(self) -> None:
        config, accelerator = self.config, self.accelerator
        per_step = config.train_batch_size * accelerator.num_processes
        logger.info(
            "Training %s (%s, %s) on %s: %s pairs, %d ties removed; %d steps of %d pairs "
            "(%d per pass x %d accumulation), lr %g, beta %g, %d px, mixed precision %s.",
            config.pretrained_model,
            self.components.info.family.value,
            "LoRA" if config.use_lora else "full fine-tuning",
            config.dataset,
            "unknown" if self.pairs.num_pairs is None else self.pairs.num_pairs,
            self.pairs.ties_removed,
            config.max_train_steps,
            config.effective_batch_size,
            per_step,
            accelerator.gradient_accumulation_steps,
            config.learning_rate,
            config.beta,
            config.resolution,
            accelerator.mixed_precision,
        )

    def _finish(self, result: TrainingResult) -> None:
        config, accelerator = self.config, self.accelerator
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            unet = accelerator.unwrap_model(self.unet)
            if config.use_lora:
                save_lora(unet, self.components.info.family, config.output_dir)
            else:
                self.components.inference_pipeline(unet).save_pretrained(config.output_dir)
            # Fingerprinted: a later run replaces it only while unchanged (agfsync.ownership).
            self.owned.wrote(LORA_WEIGHTS if config.use_lora else PIPELINE_INDEX)
            step = self.progress.global_step
            if config.validation_steps and step % config.validation_steps:
                result.validation_grids += self._validate(step)
            repo = config.hub_repo
            grid = result.validation_grids[-1] if result.validation_grids else None
            widget = (
                [validation_image(grid, index) for index in range(len(config.validation_prompts))]
                if grid
                else []
            )
            write_model_card(
                config.output_dir,
                config=config,
                final_metrics=result.history[-1] if result.history else {},
                data_summary={
                    "pairs": self.pairs.num_pairs,
                    "ties skipped": self.data_counts.ties,
                    "undecodable images skipped": self.data_counts.bad_images,
                    "images read": self.data_counts.images_read,
                },
                validation_grid=grid,
                validation_images=widget or None,
                repo=repo if config.push_to_hub else None,
            )
            self.owned.wrote(MODEL_CARD)
            if config.push_to_hub:
                files = model_repo_files(
                    config.output_dir,
                    use_lora=config.use_lora,
                    card_images=[grid, *widget] if grid else [],
                )
                result.hub_url = push_to_hub(
                    config.output_dir, repo, self.hub_token, files=files, overwrite=config.overwrite
                )
        accelerator.end_training()


def validation_image(grid: Path, index: int) -> Path:
    """The file of validation prompt `index` beside its step's grid."""
    return grid.with_name(f"{grid.stem}-{index}.png")


def log_validation_images(
    accelerator: Accelerator, images: list[Image.Image], prompts: list[str], step: int
) -> None:
    """The validation images to every configured tracker that shows images, as
    diffusers' training scripts log theirs (TensorBoard: one NHWC batch; W&B: captioned)."""
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            batch = np.stack([np.asarray(image.convert("RGB")) for image in images])
            tracker.writer.add_images("validation", batch, step, dataformats="NHWC")
        elif tracker.name == "wandb":
            import wandb

            tracker.log(
                {
                    "validation": [
                        wandb.Image(image, caption=f"{index}: {prompt}")
                        for index, (image, prompt) in enumerate(zip(images, prompts, strict=True))
                    ]
                },
                step=step,
            )


def train(config: DPOTrainingConfig, *, hub_token: str | None = None) -> TrainingResult:
    """Train with Diffusion-DPO (or the SFT baseline) and save the result."""
    return DPOTrainer(config, hub_token=hub_token).run()
