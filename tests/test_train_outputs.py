"""What a finished run leaves for others: the model card's usage snippet names only what
a reader can load (the base model's Hub id, or a placeholder that says what to put
there), and --push-to-hub uploads the model only, to a repo agfsync may write to."""

import json
import re
from pathlib import Path

import pytest

from agfsync.environment import hub_token
from agfsync.errors import ConfigurationError
from agfsync.train.config import DPOTrainingConfig
from agfsync.train.dpo import parse_config
from agfsync.train.outputs import (
    check_model_repo,
    model_repo_files,
    push_to_hub,
    write_model_card,
)
from tests.helpers import write_files
from tests.hub_server import HubServer


def usage_of(tmp_path: Path, pretrained_model: str, **values: object) -> str:
    config = DPOTrainingConfig(
        pretrained_model=pretrained_model, dataset="ds", output_dir=tmp_path, **values
    )
    write_model_card(
        tmp_path,
        config=config,
        final_metrics={},
        data_summary={},
        validation_grid=None,
        repo="my-org/sd-dpo-lora",
    )
    card = (tmp_path / "README.md").read_text()
    return card.split("## Use", 1)[1].split("## Data", 1)[0]


def loaded_base(usage: str) -> str:
    [source] = re.findall(r'AutoPipelineForText2Image\.from_pretrained\("([^"]+)"', usage)
    return source


def test_a_hub_base_model_is_named_by_its_id(tmp_path: Path) -> None:
    usage = usage_of(tmp_path, "stable-diffusion-v1-5/stable-diffusion-v1-5")
    assert loaded_base(usage) == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert 'pipe.load_lora_weights("my-org/sd-dpo-lora")' in usage
    assert "Replace" not in usage


def test_a_local_or_tiny_base_model_is_a_placeholder_the_text_explains(
    tmp_path: Path,
) -> None:
    local = tmp_path / "models" / "my-sd"
    local.mkdir(parents=True)
    for base in (str(local), "tiny:stable-diffusion"):
        usage = usage_of(tmp_path / "out", base)
        assert loaded_base(usage) == "BASE_MODEL", usage
        assert "Replace `BASE_MODEL` with the Hub id or the path of the base model" in usage
        assert f"(`{base}` on the training machine" in usage


def test_a_full_fine_tune_loads_the_trained_pipeline_itself(tmp_path: Path) -> None:
    usage = usage_of(tmp_path, "tiny:stable-diffusion", use_lora=False)
    assert loaded_base(usage) == "my-org/sd-dpo-lora"
    assert "load_lora_weights" not in usage and "BASE_MODEL" not in usage


# -- what --push-to-hub uploads, and where ------------------------------------------------

TOKEN = "hf_test_secret_token_4242"


def project_with_a_lora_run(folder: Path) -> list[Path]:
    """A user's project trained into with `-o . --overwrite`: their files beside
    everything a LoRA run writes. Returns the images the card shows."""
    write_files(
        folder,
        {
            ".env": "OPENAI_API_KEY=sk-mine",
            "src/app.py": "print('mine')",
            "notes.md": "mine",
            ".agfsync-owned.json": "{}",
            "README.md": "---\ntags:\n- agfsync\n---\n# card",
            "pytorch_lora_weights.safetensors": "weights",
            "logs/agfsync-dpo/events.out.tfevents.1": "log",
            "checkpoint-2/lora_adapter.safetensors": "state",
            "latents-cache/0123/ab/ab.safetensors": "latent",
            "validation/step-000001.png": "old grid",
            "validation/step-000001-0.png": "old image",
            "validation/step-000002.png": "grid",
            "validation/step-000002-0.png": "image 0",
            "validation/step-000002-1.png": "image 1",
        },
    )
    return [folder / "validation" / f"step-000002{suffix}.png" for suffix in ("", "-0", "-1")]


LORA_REPO_FILES = [
    "README.md",
    "pytorch_lora_weights.safetensors",
    "validation/step-000002.png",
    "validation/step-000002-0.png",
    "validation/step-000002-1.png",
]


def test_a_lora_repo_gets_the_card_weights_and_shown_images_only(tmp_path: Path) -> None:
    shown = project_with_a_lora_run(tmp_path)
    (tmp_path / "src" / "linked.safetensors").symlink_to(tmp_path / ".env")
    assert model_repo_files(tmp_path, use_lora=True, card_images=shown) == LORA_REPO_FILES


def test_a_full_fine_tune_repo_gets_the_components_its_index_lists(tmp_path: Path) -> None:
    index: dict[str, object] = {"_class_name": "StableDiffusionPipeline"}
    index |= {"unet": ["diffusers", "UNet"]}
    index |= {"vae": ["diffusers", "AutoencoderKL"], "safety_checker": [None, None]}
    write_files(
        tmp_path,
        {
            "model_index.json": json.dumps(index),
            "README.md": "card",
            "unet/config.json": "{}",
            "unet/diffusion_pytorch_model.safetensors": "w",
            "vae/config.json": "{}",
            "safety_checker/config.json": "not listed",
            "text_encoder/config.json": "not listed",
            "pytorch_lora_weights.safetensors": "not this run's kind",
            ".env": "secret",
        },
    )
    (tmp_path / "unet" / "elsewhere").symlink_to(tmp_path / "text_encoder")
    assert model_repo_files(tmp_path, use_lora=False) == [
        "README.md",
        "model_index.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "vae/config.json",
    ]


class TestPushToHub:
    def test_only_the_model_goes_up_and_the_token_is_written_nowhere(
        self, loopback_hub: HubServer, tmp_path: Path
    ) -> None:
        shown = project_with_a_lora_run(tmp_path)
        files = model_repo_files(tmp_path, use_lora=True, card_images=shown)
        url = push_to_hub(tmp_path, "dpo", TOKEN, files=files)
        assert url == f"{loopback_hub.url}/test-user/dpo"  # the token's user's namespace
        assert sorted(loopback_hub.files("test-user/dpo", "model")) == sorted(LORA_REPO_FILES)
        assert f"Bearer {TOKEN}" in loopback_hub.authorizations
        assert not any(TOKEN in path.read_text() for path in tmp_path.rglob("*") if path.is_file())

    def test_someone_elses_repo_is_refused_before_anything_is_sent(
        self, loopback_hub: HubServer, tmp_path: Path
    ) -> None:
        theirs = {"README.md": b"---\ntags:\n- my-own\n---\n# mine", "model.bin": b"mine"}
        loopback_hub.seed("org/theirs", dict(theirs), "model")
        project_with_a_lora_run(tmp_path)
        with pytest.raises(ConfigurationError) as refused:
            check_model_repo("org/theirs", TOKEN, overwrite=False)
        message = str(refused.value)
        assert (
            "org/theirs on the Hub holds files and its card (README.md) has no 'agfsync'" in message
        )
        assert "--hub-model-id" in message and "--overwrite" in message
        with pytest.raises(ConfigurationError, match="has no 'agfsync' tag"):
            push_to_hub(tmp_path, "org/theirs", TOKEN, files=LORA_REPO_FILES[:2])
        assert loopback_hub.files("org/theirs", "model") == theirs
        assert loopback_hub.commit_count("org/theirs", "model") == 1

    def test_overwrite_replaces_only_what_agfsync_writes(
        self, loopback_hub: HubServer, tmp_path: Path
    ) -> None:
        theirs = {"README.md": b"# no card data", "model.bin": b"mine"}
        loopback_hub.seed("org/theirs", dict(theirs), "model")
        project_with_a_lora_run(tmp_path)
        check_model_repo("org/theirs", TOKEN, overwrite=True)
        push_to_hub(tmp_path, "org/theirs", TOKEN, files=LORA_REPO_FILES[:2], overwrite=True)
        files = loopback_hub.files("org/theirs", "model")
        assert files["model.bin"] == b"mine" and files["README.md"].startswith(b"---\ntags:")
        # now agfsync's (its card has the tag): a push without --overwrite is accepted
        push_to_hub(tmp_path, "org/theirs", TOKEN, files=LORA_REPO_FILES[:2])
        assert loopback_hub.commit_count("org/theirs", "model") == 3


def test_dataset_and_model_repos_share_one_ownership_check() -> None:
    """`agfsync publish` and `train --push-to-hub` refuse by the same rule, in one place."""
    import agfsync.dataset.publish as publish
    import agfsync.train.outputs as outputs
    from agfsync import hub

    assert publish.check_repo_is_ours is hub.check_repo_is_ours
    assert outputs.check_repo_is_ours is hub.check_repo_is_ours
    assert not hasattr(publish, "_check_repo_is_ours")


def test_every_hub_token_comes_from_one_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    """--hub-token, else HF_TOKEN, else the login `hf auth login` stored."""
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_stored_login")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    assert hub_token("hf_given") == "hf_given"
    assert hub_token(None) == "hf_stored_login"
    _, token = parse_config(["--pretrained-model", "m", "--dataset", "d"])
    assert token == "hf_stored_login"
    monkeypatch.setenv("HF_TOKEN", "hf_environment")
    assert hub_token(None) == "hf_environment"
    assert parse_config(["--pretrained-model", "m", "--dataset", "d"])[1] == "hf_environment"
    _, token = parse_config(["--pretrained-model", "m", "--dataset", "d", "--hub-token", "hf_x"])
    assert token == "hf_x"
