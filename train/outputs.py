"""What a finished run leaves behind: the weights, a model card, optionally a Hub repo.

LoRA runs save `pytorch_lora_weights.safetensors` in diffusers' format, so
`pipe.load_lora_weights(output_dir)` loads it; full fine-tuning saves a complete
pipeline folder (`DiffusionPipeline.from_pretrained(output_dir)`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agfsync.model_facts import is_hub_id, model_facts
from agfsync.train.config import DPOTrainingConfig, ModelFamily

PUSH_IGNORE_PATTERNS = ["checkpoint-*", "checkpoint-*/**", "latents-cache/**"]
"""Resumable checkpoints and the latent cache are local working files, not the model."""


def save_lora(unet: Any, family: ModelFamily, directory: Path) -> None:
    """Save the UNet's LoRA adapter as diffusers' `pytorch_lora_weights.safetensors`,
    with its rank and alpha recorded so a loader scales it correctly."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    pipeline_class = (
        StableDiffusionXLPipeline
        if family is ModelFamily.STABLE_DIFFUSION_XL
        else StableDiffusionPipeline
    )
    pipeline_class.save_lora_weights(
        directory,
        unet_lora_layers=convert_state_dict_to_diffusers(get_peft_model_state_dict(unet)),
        unet_lora_adapter_metadata=unet.peft_config["default"].to_dict(),
        safe_serialization=True,
    )


BASE_MODEL_PLACEHOLDER = "BASE_MODEL"
"""Stands in the usage snippet for a base model that is not a Hub id."""


def _usage(config: DPOTrainingConfig, repo: str) -> str:
    """A snippet that loads the result: the base model plus the LoRA, or the full
    pipeline. A base model that is not a Hub id (a local folder, a tiny model) is a
    placeholder, said so below the snippet."""
    base = hub_reference(config.pretrained_model)
    source = (base or BASE_MODEL_PLACEHOLDER) if config.use_lora else repo
    load_lora = f'pipe.load_lora_weights("{repo}")\n' if config.use_lora else ""
    snippet = (
        "```python\nimport torch\nfrom diffusers import AutoPipelineForText2Image\n\n"
        f'pipe = AutoPipelineForText2Image.from_pretrained("{source}", '
        'torch_dtype=torch.float16).to("cuda")\n'
        f"{load_lora}"
        'image = pipe("a red bicycle leaning against a blue door").images[0]\n```'
    )
    if source != BASE_MODEL_PLACEHOLDER:
        return snippet
    return (
        f"{snippet}\n\nReplace `{BASE_MODEL_PLACEHOLDER}` with the Hub id or the path of "
        f"the base model this LoRA was trained on (`{config.pretrained_model}` on the "
        "training machine, not a Hub id)."
    )


def _table(rows: dict[str, Any]) -> str:
    lines = ["| name | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows.items()]
    return "\n".join(lines)


def hub_reference(reference: str) -> str | None:
    """`reference` when it names a Hub repository (not a local folder or a tiny model),
    else None: a card's `base_model` or `datasets` must resolve on the Hub."""
    return reference if is_hub_id(reference) and not Path(reference).exists() else None


def write_model_card(
    directory: Path,
    *,
    config: DPOTrainingConfig,
    final_metrics: dict[str, float],
    data_summary: dict[str, int | None],
    validation_grid: Path | None,
    validation_images: list[Path] | None = None,
    repo: str | None = None,
) -> Path:
    """README.md with Hub metadata (validated by `huggingface_hub`'s `ModelCardData`:
    the base model's license, `base_model` only when it is a Hub id, a widget with the
    last validation images), how to load the result, every hyper-parameter, the data
    used and skipped, and the final metrics."""
    from huggingface_hub import ModelCard, ModelCardData

    kind = "LoRA" if config.use_lora else "full UNet"
    objective = "Diffusion-DPO" if config.loss == "dpo" else "SFT on the preferred images"
    facts = model_facts(config.pretrained_model)
    base_model = hub_reference(config.pretrained_model)
    dataset = hub_reference(config.dataset)
    images = validation_images or []
    metadata = ModelCardData(
        base_model=base_model,
        license=facts.license if facts else "other",
        library_name="diffusers",
        pipeline_tag="text-to-image",
        datasets=[dataset] if dataset else None,
        tags=[
            "text-to-image",
            "diffusers",
            "diffusers-training",
            "diffusion-dpo",
            "agfsync",
            *(["lora"] if config.use_lora else []),
            *([facts.family] if facts else []),
        ],
        widget=[
            {"text": prompt, "output": {"url": image.relative_to(directory).as_posix()}}
            for prompt, image in zip(config.validation_prompts, images, strict=False)
        ]
        or None,
    )
    license_line = (
        f"**License**: `{facts.license}`, the base model's."
        if facts
        else f"**License**: unknown to agfsync: the base model's ({config.pretrained_model}) "
        "license applies; check its card."
    )
    hyperparameters = {name: f"`{value}`" for name, value in config.model_dump(mode="json").items()}
    sections = [
        f"# {objective} {kind} of {config.pretrained_model}",
        f"Trained with agfsync ({objective}, Wallace et al. 2023) on the preference "
        f"dataset `{config.dataset}` (split `{config.split}`) for "
        f"{config.max_train_steps} optimizer steps. beta follows the official code's "
        f"convention: the loss multiplies by -0.5 x beta (beta {config.beta:g} here equals "
        f"{config.beta / 2:g} without the 0.5).",
        license_line,
        "## Use\n\n" + _usage(config, repo or str(directory)),
        "## Data\n\n" + _table(data_summary),
        "## Final metrics (mean over the last optimizer step)\n\n" + _table(final_metrics),
        "## Hyper-parameters\n\n" + _table(hyperparameters),
    ]
    if validation_grid is not None:
        sections.append(
            "## Validation\n\nFixed prompts and seeds after the last step: "
            f"![validation grid]({validation_grid.relative_to(directory).as_posix()})"
        )
    card = ModelCard(f"---\n{metadata.to_yaml()}\n---\n\n" + "\n\n".join(sections) + "\n")
    path = directory / "README.md"
    card.save(path)
    return path


def push_to_hub(directory: Path, repo_id: str, token: str | None) -> str:
    """Upload the output folder (not checkpoints or cached latents) to a model repo.

    `token` (else HF_TOKEN / the cached login) is used for the request only, never written.
    """
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    url = api.create_repo(repo_id, repo_type="model", exist_ok=True)
    api.upload_folder(
        repo_id=url.repo_id,
        folder_path=directory,
        repo_type="model",
        ignore_patterns=PUSH_IGNORE_PATTERNS,
        commit_message="Diffusion-DPO training run (agfsync)",
    )
    return str(url)
