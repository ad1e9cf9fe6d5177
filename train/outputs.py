"""What a finished run leaves behind: the weights, a model card, optionally a Hub repo.

LoRA runs save `pytorch_lora_weights.safetensors` in diffusers' format, so
`pipe.load_lora_weights(output_dir)` loads it; full fine-tuning saves a complete
pipeline folder (`DiffusionPipeline.from_pretrained(output_dir)`).

`--push-to-hub` uploads only the model (`model_repo_files`): the card, the weights and
the validation images the card shows; never the checkpoints, the latent cache, the
logs, the ownership marker or a file agfsync did not write. A Hub repo that holds files
and whose card lacks the `agfsync` tag is not replaced unless --overwrite
(`agfsync.hub`, the rule `agfsync publish` follows).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agfsync.environment import hub_token
from agfsync.hub import AGFSYNC_TAG, check_repo_is_ours
from agfsync.model_facts import is_hub_id, model_facts
from agfsync.train.config import DPOTrainingConfig, ModelFamily

if TYPE_CHECKING:
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import ModelInfo

MODEL_CARD = "README.md"
LORA_WEIGHTS = "pytorch_lora_weights.safetensors"
"""What `save_lora` writes (diffusers' name, which `load_lora_weights` looks for)."""
PIPELINE_INDEX = "model_index.json"
PIPELINE_FOLDERS = (
    "unet",
    "vae",
    "text_encoder",
    "text_encoder_2",
    "tokenizer",
    "tokenizer_2",
    "scheduler",
    "feature_extractor",
    "safety_checker",
    "image_encoder",
)
"""The component folders a fully fine-tuned pipeline may be saved with (`save_pretrained`
writes those its `model_index.json` lists)."""


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
            AGFSYNC_TAG,
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
    path = directory / MODEL_CARD
    card.save(path)
    return path


def model_repo_files(
    directory: Path, *, use_lora: bool, card_images: Sequence[Path] = ()
) -> list[str]:
    """The files of a training folder its model repo gets, relative to it: the model card,
    the weights (LoRA: `LORA_WEIGHTS`; full fine-tuning: `model_index.json` and the files
    of the component folders it lists) and `card_images`, the validation images the card
    shows (the last grid and the widget's images). Nothing else: not the checkpoints,
    latent cache, logs, earlier validation images or ownership marker, nor any file of a
    user's beside them (a folder trained into with --overwrite). Symbolic links are
    neither listed nor followed."""
    files = [MODEL_CARD]
    if use_lora:
        files.append(LORA_WEIGHTS)
    else:
        files.append(PIPELINE_INDEX)
        index = json.loads((directory / PIPELINE_INDEX).read_text())
        for name in PIPELINE_FOLDERS:
            component = index.get(name)  # ["diffusers", "UNet2DConditionModel"]; [null, null]: none
            if not isinstance(component, list) or not any(component):
                continue
            for root, folders, names in os.walk(directory / name):
                folders[:] = sorted(f for f in folders if not Path(root, f).is_symlink())
                files += [
                    Path(root, file).relative_to(directory).as_posix() for file in sorted(names)
                ]
    files += [image.relative_to(directory).as_posix() for image in card_images]
    return [
        file
        for file in dict.fromkeys(files)
        if (directory / file).is_file() and not (directory / file).is_symlink()
    ]


def _model_repo(api: HfApi, repo_id: str, *, overwrite: bool) -> tuple[str, ModelInfo | None]:
    """The full id of model repo `repo_id` (without a namespace: the token's user's) and
    its information when it exists. Refuses a repo agfsync did not make unless
    `overwrite` (`agfsync.hub.check_repo_is_ours`)."""
    from huggingface_hub.errors import RepositoryNotFoundError

    if "/" not in repo_id:
        repo_id = f"{api.whoami()['name']}/{repo_id}"
    try:
        info: ModelInfo | None = api.model_info(repo_id)
    except RepositoryNotFoundError:
        info = None
    check_repo_is_ours(
        api,
        repo_id,
        repo_type="model",
        existing=[sibling.rfilename for sibling in (info.siblings if info else None) or []],
        revision=info.sha if info else None,
        overwrite=overwrite,
        replaced="--push-to-hub would replace its card and weights",
        new_repo_flag="--hub-model-id",
    )
    return repo_id, info


def check_model_repo(repo_id: str, token: str | None, *, overwrite: bool) -> None:
    """Before training: refuse an upload to a Hub repo agfsync did not make (`_model_repo`)."""
    from huggingface_hub import HfApi

    _model_repo(HfApi(token=hub_token(token)), repo_id, overwrite=overwrite)


def push_to_hub(
    directory: Path,
    repo_id: str,
    token: str | None,
    *,
    files: Sequence[str],
    overwrite: bool = False,
) -> str:
    """Upload `files` of the output folder (`model_repo_files`) to the model repo
    `repo_id` in one commit, creating the repo when it does not exist; return its URL.

    A repo agfsync did not make is refused unless `overwrite` (then only these files are
    replaced, nothing is deleted). `token` (else HF_TOKEN / the cached login) is used for
    the request only, never written.
    """
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi(token=hub_token(token))
    repo_id, info = _model_repo(api, repo_id, overwrite=overwrite)
    if info is None:
        api.create_repo(repo_id, repo_type="model", exist_ok=True)
    api.create_commit(
        repo_id,
        operations=[
            CommitOperationAdd(path_in_repo=file, path_or_fileobj=directory / file)
            for file in files
        ],
        commit_message="Diffusion-DPO training run (agfsync)",
        repo_type="model",
        parent_commit=info.sha if info else None,
    )
    return f"{api.endpoint}/{repo_id}"
