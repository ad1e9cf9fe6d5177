"""The model card's usage snippet names only what a reader can load: the base model's
Hub id, or a placeholder that says what to put there."""

import re
from pathlib import Path

from agfsync.train.config import DPOTrainingConfig
from agfsync.train.outputs import write_model_card


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
