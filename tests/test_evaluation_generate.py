"""Paired generation: same prompts and seeds for both models, LoRA on the base, cache."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from agfsync.evaluation.generate import ImageCache, ModelUnderTest, Sampling, render_missing
from agfsync.evaluation.suites import PromptItem

PROMPTS = [
    PromptItem(id="hpsv2-photo-000", prompt="A man drinking from a fountain.", group="photo"),
    PromptItem(id="coco/42", prompt="A red bus on a bridge.", group="coco"),
]
SAMPLING = Sampling(num_inference_steps=2, images_per_prompt=2)


def make_tiny_lora(base: str, target: Path) -> Path:
    """A LoRA for the tiny SD UNet with random (non-zero) weights, saved the way
    `agfsync train` saves one (diffusers' `save_lora_weights`)."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    pipeline = StableDiffusionPipeline.from_pretrained(base)
    pipeline.unet.add_adapter(
        LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"])
    )
    torch.manual_seed(1)
    for name, parameter in pipeline.unet.named_parameters():
        if "lora_B" in name:
            parameter.data.normal_(0.0, 0.5)
    StableDiffusionPipeline.save_lora_weights(
        target,
        unet_lora_layers=convert_state_dict_to_diffusers(get_peft_model_state_dict(pipeline.unet)),
        safe_serialization=True,
    )
    return target


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


@pytest.fixture(scope="module")
def tiny_lora(tiny_sd_path: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(make_tiny_lora(tiny_sd_path, tmp_path_factory.mktemp("lora")))


class TestModelUnderTest:
    def test_a_lora_folder_goes_on_top_of_the_base(self, tiny_lora: str) -> None:
        assert ModelUnderTest.tuned(tiny_lora, "tiny:stable-diffusion") == ModelUnderTest(
            "tiny:stable-diffusion", tiny_lora
        )

    def test_a_pipeline_folder_or_hub_id_is_a_model_of_its_own(self, tiny_sd_path: str) -> None:
        assert ModelUnderTest.tuned(tiny_sd_path, "base").lora is None
        assert ModelUnderTest.tuned("org/tuned-model", "base") == ModelUnderTest("org/tuned-model")

    def test_cache_key_follows_what_changes_the_pixels(
        self, tiny_lora: str, tmp_path: Path
    ) -> None:
        model = ModelUnderTest("tiny:stable-diffusion", tiny_lora)
        key = model.cache_key(SAMPLING)
        assert key == model.cache_key(SAMPLING.model_copy(update={"images_per_prompt": 5}))
        assert key != model.cache_key(SAMPLING.model_copy(update={"seed": 1}))
        assert key != model.cache_key(SAMPLING.model_copy(update={"num_inference_steps": 3}))
        # Retraining into the same folder changes the weights, hence the key.
        retrained = tmp_path / "retrained"
        retrained.mkdir()
        for file in Path(tiny_lora).iterdir():
            (retrained / file.name).write_bytes(file.read_bytes())
        same = ModelUnderTest("tiny:stable-diffusion", str(retrained))
        before = same.cache_key(SAMPLING)
        weights = next(retrained.glob("*.safetensors"))
        weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
        assert same.cache_key(SAMPLING) != before


class TestPairedGeneration:
    def test_same_seeds_for_both_models_and_the_lora_changes_the_images(
        self, tiny_sd_path: str, tiny_lora: str, tmp_path: Path
    ) -> None:
        # The same weights under two references: rendered separately, they must agree
        # pixel for pixel, which holds only if prompts and seeds are the same.
        base = ImageCache(tmp_path, ModelUnderTest("tiny:stable-diffusion"), SAMPLING)
        twin = ImageCache(tmp_path, ModelUnderTest(tiny_sd_path), SAMPLING)
        tuned = ImageCache(tmp_path, ModelUnderTest.tuned(tiny_lora, tiny_sd_path), SAMPLING)
        assert len({base.folder, twin.folder, tuned.folder}) == 3
        for cache in (base, twin, tuned):
            assert render_missing(cache, PROMPTS[:1], device="cpu") == 2
        for prompt in PROMPTS[:1]:
            first, second = (pixels(base.path(prompt, index)) for index in (0, 1))
            assert not np.array_equal(first, second)  # each image index has its own seed
            for index in (0, 1):
                base_pixels = pixels(base.path(prompt, index))
                assert np.array_equal(base_pixels, pixels(twin.path(prompt, index)))
                assert np.abs(base_pixels - pixels(tuned.path(prompt, index))).mean() > 1.0

    def test_rerunning_renders_only_what_is_missing(
        self, tiny_sd_path: str, tmp_path: Path
    ) -> None:
        cache = ImageCache(tmp_path, ModelUnderTest(tiny_sd_path), SAMPLING)
        assert render_missing(cache, PROMPTS[:1], device="cpu") == 2
        first = cache.path(PROMPTS[0], 0)
        stamp = first.stat().st_mtime_ns
        # Another suite sharing a prompt id renders only its new prompt.
        assert render_missing(cache, PROMPTS, device="cpu") == 2
        assert render_missing(cache, PROMPTS, device="cpu") == 0
        assert first.stat().st_mtime_ns == stamp
        # The same id with an edited prompt is a new image, not a stale one.
        edited = PromptItem(id=PROMPTS[1].id, prompt="A blue bus on a bridge.", group="coco")
        assert render_missing(cache, [edited], device="cpu") == 2
        assert (cache.folder / "key.json").is_file()
        assert not list(cache.folder.glob("*.partial.png"))
