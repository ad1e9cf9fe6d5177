"""The Diffusion-DPO trainer end to end on tiny SD-1.x- and SDXL-shaped models."""

import math
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from huggingface_hub import ModelCard
from PIL import Image

from agfsync.errors import ConfigurationError
from agfsync.models import resolve_model
from agfsync.train.config import DPOTrainingConfig, ModelFamily
from agfsync.train.data import BatchPlan, PairedTransform, PairReader, epoch_batches
from agfsync.train.data import open_preference_pairs as open_pairs
from agfsync.train.dpo import FLAGS, build_parser, main, parse_config
from agfsync.train.loop import TrainingResult, find_checkpoint, train
from agfsync.train.models import (
    AdapterDisabledReference,
    add_lora,
    inspect_base_model,
    load_components,
    predict_noise,
)
from agfsync.train.outputs import write_model_card
from tests.helpers import run_command
from tests.hub_server import HubServer
from tests.test_train_data import (
    LABELLED_FEATURES,
    RED,
    write_colour_preference_dataset,
    write_parquet_dataset,
)

pytestmark = pytest.mark.slow  # `make test-fast` skips this module

TOKEN = "hf_test_secret_token_4242"
LN2 = math.log(2.0)
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def sharp_sd_path(tiny_sd_path: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The tiny SD model with a VAE whose latents keep colours apart.

    The random tiny VAE encodes every image to nearly the same distribution (mean
    differences ~0.15 against a standard deviation ~1, then scaled by 0.18), so no
    preference between two flat colours survives into its latents and nothing can be
    learnt through it. Here the log-variance is pinned to -20 (a near-deterministic
    encoder), the mean amplified 10x and the scaling factor set to 1.
    """
    from diffusers import AutoencoderKL

    target = tmp_path_factory.mktemp("sharp") / "sd"
    shutil.copytree(tiny_sd_path, target)
    vae: Any = AutoencoderKL.from_pretrained(target / "vae")
    channels = vae.config.latent_channels
    with torch.no_grad():
        vae.quant_conv.weight[:channels] *= 10
        vae.quant_conv.bias[:channels] *= 10
        vae.quant_conv.weight[channels:] = 0
        vae.quant_conv.bias[channels:] = -20
    vae.register_to_config(scaling_factor=1.0)
    vae.save_pretrained(target / "vae")
    return str(target)


@pytest.fixture(scope="module")
def colour_dataset(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(write_colour_preference_dataset(tmp_path_factory.mktemp("colours") / "ds"))


def _config(model: str, dataset: str, output_dir: Path, **overrides: Any) -> DPOTrainingConfig:
    """A tiny, fast run: 4 pairs per step, no trackers, no validation unless asked."""
    values: dict[str, Any] = {
        "pretrained_model": model,
        "dataset": dataset,
        "output_dir": output_dir,
        "train_batch_size": 4,
        "effective_batch_size": 4,
        "max_train_steps": 1,
        "report_to": "none",
        "validation_steps": 0,
        "validation_inference_steps": 2,
        "lr_scheduler": "constant",
    }
    return DPOTrainingConfig(**(values | overrides))


def _losses(result: TrainingResult) -> list[float]:
    return [metrics["loss"] for metrics in result.history]


# -- the loss at the start, learning, outputs ---------------------------------------------


@pytest.mark.parametrize("use_lora", [True, False], ids=["lora", "full"])
def test_first_step_loss_is_ln2_because_policy_equals_reference(
    use_lora: bool, tiny_sd_path: str, colour_dataset: str, tmp_path: Path
) -> None:
    config = _config(tiny_sd_path, colour_dataset, tmp_path / "out", use_lora=use_lora)
    [first] = train(config).history
    assert abs(first["loss"] - LN2) < 1e-6
    assert first["reward_margin"] == 0.0
    assert first["mse_w"] == pytest.approx(first["ref_mse_w"], abs=0.0)
    if not use_lora:  # full fine-tuning saves a whole pipeline
        from diffusers import StableDiffusionPipeline

        pipeline = StableDiffusionPipeline.from_pretrained(tmp_path / "out", safety_checker=None)
        assert pipeline.unet.config.sample_size == 16


@pytest.fixture(scope="module")
def trained_lora(
    sharp_sd_path: str, colour_dataset: str, tmp_path_factory: pytest.TempPathFactory
) -> TrainingResult:
    """24 steps of LoRA DPO, 2 micro-batches of 2 pairs per step, with tensorboard and a
    validation grid at the end."""
    output = tmp_path_factory.mktemp("trained") / "lora"
    config = _config(
        sharp_sd_path,
        colour_dataset,
        output,
        max_train_steps=24,
        train_batch_size=2,
        learning_rate=1e-2,
        beta=1000.0,
        report_to="tensorboard",
        validation_steps=24,
        validation_prompts=["a red square", "a blue square"],
    )
    return train(config)


def test_dpo_lowers_the_loss_and_raises_implicit_accuracy(trained_lora: TrainingResult) -> None:
    losses = _losses(trained_lora)
    accuracies = [metrics["implicit_accuracy"] for metrics in trained_lora.history]
    assert len(losses) == 24 and abs(losses[0] - LN2) < 1e-6
    assert np.mean(losses[-6:]) < 0.5 * np.mean(losses[:6])
    assert np.mean(accuracies[-6:]) > np.mean(accuracies[:6])
    assert np.mean(accuracies[-6:]) >= 0.9
    # The policy moved away from the reference in the preferred direction.
    last = trained_lora.history[-1]
    assert last["reward_margin"] > 0
    assert last["mse_w"] - last["ref_mse_w"] < last["mse_l"] - last["ref_mse_l"]


def test_run_writes_tensorboard_logs_grid_and_model_card(trained_lora: TrainingResult) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    output = trained_lora.config.output_dir
    runs = {events.parent for events in (output / "logs").rglob("events.out.tfevents.*")}
    # TensorBoard's own reader: the metrics and the validation images, at their step.
    run = min(runs, key=lambda folder: len(folder.parts))  # hparams write a sub-run
    accumulator = EventAccumulator(str(run), size_guidance={"images": 0})
    accumulator.Reload()
    assert {"loss", "implicit_accuracy"} <= set(accumulator.Tags()["scalars"])
    images = [event for tag in accumulator.Tags()["images"] for event in accumulator.Images(tag)]
    [image] = images  # the batch of validation prompts, tiled side by side
    assert (image.step, image.width, image.height) == (24, 2 * 32, 32)
    [grid] = trained_lora.validation_grids
    assert grid == output / "validation" / "step-000024.png"
    assert Image.open(grid).size == (2 * 32, 32)  # two prompts side by side
    card = (output / "README.md").read_text()
    metadata = ModelCard.load(output / "README.md").data.to_dict()
    # A local base model is not a Hub id: no base_model, and the license is said unknown.
    assert "base_model" not in metadata and metadata["license"] == "other"
    assert "diffusers-training" in metadata["tags"] and "lora" in metadata["tags"]
    assert metadata["widget"] == [
        {"text": prompt, "output": {"url": f"validation/step-000024-{index}.png"}}
        for index, prompt in enumerate(["a red square", "a blue square"])
    ]
    for entry in metadata["widget"]:
        assert Image.open(output / entry["output"]["url"]).size == (32, 32)
    assert "| learning_rate | `0.01` |" in card
    assert "| ties skipped | 0 |" in card
    assert f"| loss | {trained_lora.history[-1]['loss']} |" in card
    assert "pipe.load_lora_weights(" in card


def test_card_of_a_hub_base_model_names_it_with_its_license(tmp_path: Path) -> None:
    config = DPOTrainingConfig(
        pretrained_model="stabilityai/stable-diffusion-xl-base-1.0",
        dataset="my-org/my-agfsync-dataset",
        output_dir=tmp_path,
    )
    write_model_card(
        tmp_path, config=config, final_metrics={}, data_summary={}, validation_grid=None
    )
    metadata = ModelCard.load(tmp_path / "README.md").data.to_dict()
    assert metadata["base_model"] == "stabilityai/stable-diffusion-xl-base-1.0"
    assert metadata["license"] == "openrail++"
    assert metadata["datasets"] == ["my-org/my-agfsync-dataset"]
    assert "stable-diffusion-xl" in metadata["tags"] and "widget" not in metadata


def test_saved_lora_loads_into_a_pipeline_and_reproduces_the_trained_model(
    trained_lora: TrainingResult, sharp_sd_path: str
) -> None:
    from diffusers import StableDiffusionPipeline

    config = trained_lora.config
    pipeline: Any = StableDiffusionPipeline.from_pretrained(sharp_sd_path, safety_checker=None)
    pipeline.set_progress_bar_config(disable=True)

    def render() -> np.ndarray:
        image = pipeline(
            config.validation_prompts[0],
            num_inference_steps=config.validation_inference_steps,
            height=32,
            width=32,
            generator=torch.Generator().manual_seed(config.validation_seed),
        ).images[0]
        return np.asarray(image, dtype=np.int16)

    before = render()
    pipeline.load_lora_weights(config.output_dir)
    after = render()
    assert np.abs(after - before).max() > 10
    # The trainer rendered the same prompt and seed with its in-memory model.
    grid = np.asarray(Image.open(trained_lora.validation_grids[0]), dtype=np.int16)
    assert np.abs(after - grid[:, :32]).max() <= 1


def test_lora_reference_equals_the_base_model(tiny_sd_path: str) -> None:
    from diffusers import UNet2DConditionModel

    info = inspect_base_model(tiny_sd_path)
    components = load_components(info, vae_model=None, device=CPU, frozen_dtype=torch.float32)
    unet = components.unet
    add_lora(unet, rank=4, alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"])
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a LoRA that has learnt something
        for name, parameter in unet.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator))
    base: Any = UNet2DConditionModel.from_pretrained(tiny_sd_path, subfolder="unet")
    conditioning = components.conditioning(
        ["a cat", "a dog"], torch.zeros(2, 2), torch.zeros(2, 2), 32
    )
    noisy = torch.randn(2, 4, 16, 16, generator=generator)
    timesteps = torch.tensor([10, 700])

    with torch.no_grad():
        expected = predict_noise(base, noisy, timesteps, conditioning)
        policy = predict_noise(unet, noisy, timesteps, conditioning)
    reference = AdapterDisabledReference(unet)(noisy, timesteps, conditioning)

    torch.testing.assert_close(reference, expected, rtol=0, atol=1e-6)
    assert (policy - expected).abs().max() > 1e-2
    with torch.no_grad():  # the adapters are back on afterwards
        torch.testing.assert_close(predict_noise(unet, noisy, timesteps, conditioning), policy)


# -- resume -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("use_lora", "checkpoint_step"),
    [(True, 3), (False, 2)],
    ids=["lora-mid-epoch", "full-epoch-boundary"],
)
def test_resume_continues_with_the_same_losses(
    use_lora: bool, checkpoint_step: int, sharp_sd_path: str, colour_dataset: str, tmp_path: Path
) -> None:
    # 8 pairs, 2 per micro-batch, 2 micro-batches per step: an epoch is 2 steps, so
    # checkpoint 3 lies mid-epoch and checkpoint 2 at an epoch's end. Order, augmentation,
    # noise, optimizer state and the warm-up + cosine schedule all have to resume.
    settings: dict[str, Any] = {
        "use_lora": use_lora,
        "max_train_steps": 6,
        "train_batch_size": 2,
        "learning_rate": 1e-3 if use_lora else 1e-4,
        "beta": 1000.0,
        "lr_scheduler": "cosine",
        "lr_warmup_steps": 2,
        "checkpointing_steps": checkpoint_step,
    }
    whole = train(_config(sharp_sd_path, colour_dataset, tmp_path / "whole", **settings))
    checkpoint = tmp_path / "whole" / f"checkpoint-{checkpoint_step}"
    assert checkpoint.is_dir()
    if use_lora:  # the adapter only, not the frozen base UNet
        assert (checkpoint / "lora_adapter.safetensors").is_file()
        assert not list(checkpoint.glob("model*.safetensors"))

    resumed = train(
        _config(
            sharp_sd_path,
            colour_dataset,
            tmp_path / "resumed",
            resume_from_checkpoint=str(checkpoint),
            **settings,
        )
    )
    expected = whole.history[checkpoint_step:]
    assert [m["step"] for m in resumed.history] == list(range(checkpoint_step + 1, 7))
    np.testing.assert_allclose(_losses(resumed), _losses(whole)[checkpoint_step:], rtol=1e-6)
    np.testing.assert_allclose(
        [m["lr"] for m in resumed.history], [m["lr"] for m in expected], rtol=1e-9
    )
    assert len({round(m["loss"], 6) for m in expected}) == len(expected)  # not trivial


def test_resume_latest_and_checkpoint_limit(
    tiny_sd_path: str, colour_dataset: str, tmp_path: Path
) -> None:
    settings: dict[str, Any] = {
        "resume_from_checkpoint": "latest",
        "checkpointing_steps": 1,
        "checkpoints_total_limit": 2,
    }
    output = tmp_path / "out"
    first = train(_config(tiny_sd_path, colour_dataset, output, max_train_steps=3, **settings))
    assert [m["step"] for m in first.history] == [1, 2, 3]  # no checkpoint yet: from scratch
    assert sorted(path.name for path in output.glob("checkpoint-*")) == [
        "checkpoint-2",
        "checkpoint-3",
    ]
    again = train(_config(tiny_sd_path, colour_dataset, output, max_train_steps=4, **settings))
    assert [m["step"] for m in again.history] == [4]


def _checkpoint_folders(output: Path, *names: str) -> None:
    for name in names:
        (output / name).mkdir(parents=True)
        (output / name / "state").write_text(name)


def _save_checkpoint(output: Path, step: int, limit: int) -> None:
    """`DPOTrainer._save_checkpoint`'s housekeeping, with a stand-in for accelerate's save."""
    from types import SimpleNamespace

    from accelerate import PartialState

    from agfsync.train.loop import DPOTrainer

    PartialState()  # the trainer's logger needs it
    trainer = SimpleNamespace(
        config=SimpleNamespace(output_dir=output, checkpoints_total_limit=limit),
        accelerator=SimpleNamespace(
            is_main_process=True, save_state=lambda path: Path(path).mkdir()
        ),
    )
    DPOTrainer._save_checkpoint(trainer, step)


def test_a_checkpoint_folder_of_another_name_is_left_alone(tmp_path: Path) -> None:
    output = tmp_path / "out"
    _checkpoint_folders(output, "checkpoint-2", "checkpoint-10", "checkpoint-best", "checkpoint-1")
    (output / "checkpoint-notes.txt").write_text("mine")
    assert find_checkpoint(output, "latest") == output / "checkpoint-10"  # not 2 (by number)
    _save_checkpoint(output, 11, limit=2)
    assert sorted(path.name for path in output.iterdir()) == [
        "checkpoint-10",
        "checkpoint-11",
        "checkpoint-best",
        "checkpoint-notes.txt",
    ]


def test_a_symlinked_checkpoint_is_neither_followed_nor_deleted(tmp_path: Path) -> None:
    output, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    _checkpoint_folders(output, "checkpoint-2", "checkpoint-3")
    _checkpoint_folders(elsewhere, "checkpoint-1", "checkpoint-9")
    (output / "checkpoint-1").symlink_to(elsewhere / "checkpoint-1", target_is_directory=True)
    (output / "checkpoint-9").symlink_to(elsewhere / "checkpoint-9", target_is_directory=True)
    assert find_checkpoint(output, "latest") == output / "checkpoint-3"
    _save_checkpoint(output, 4, limit=2)
    assert sorted(path.name for path in output.iterdir()) == [
        "checkpoint-1",
        "checkpoint-3",
        "checkpoint-4",
        "checkpoint-9",
    ]
    assert (elsewhere / "checkpoint-1" / "state").read_text() == "checkpoint-1"
    assert (output / "checkpoint-1").is_symlink()


# -- SDXL, SFT, latent cache ---------------------------------------------------------------


def test_sdxl_conditions_on_pooled_embeddings_and_size_crop_time_ids(
    tmp_path: Path, isolated_caches: dict[str, str]
) -> None:
    sdxl = resolve_model("tiny:stable-diffusion-xl")
    wide = [Image.new("RGB", (96, 64), RED), Image.new("RGB", (96, 64), (0, 0, 255))]
    dataset = write_parquet_dataset(
        tmp_path / "ds",
        {
            "caption": ["red", "blue"],
            "jpg_0": wide,
            "jpg_1": wide[::-1],
            "label_0": [1.0, 0.0],
        },
        LABELLED_FEATURES,
    )
    info = inspect_base_model(sdxl)
    assert (info.family, info.native_resolution) == (ModelFamily.STABLE_DIFFUSION_XL, 64)
    components = load_components(info, vae_model=None, device=CPU, frozen_dtype=torch.float32)
    pairs = open_pairs(str(dataset))
    reader = PairReader(pairs.columns, PairedTransform(64, False, False), seed=0)
    [batch] = epoch_batches(pairs, reader, BatchPlan(batch_size=2, seed=0), epoch=0)
    conditioning = components.conditioning(
        batch.captions, batch.original_sizes, batch.crop_top_lefts, 64
    )
    assert conditioning.added_cond_kwargs is not None
    # original (h, w) = (64, 96); centre crop of the 96-wide image starts at x = 16.
    assert conditioning.added_cond_kwargs["time_ids"].tolist() == [[64, 96, 0, 16, 64, 64]] * 2
    assert conditioning.added_cond_kwargs["text_embeds"].shape == (2, 32)
    assert conditioning.encoder_hidden_states.shape == (2, 77, 64)  # two encoders side by side

    result = train(
        _config(
            sdxl,
            str(dataset),
            tmp_path / "out",
            train_batch_size=2,
            effective_batch_size=2,
            max_train_steps=2,
            learning_rate=1e-2,
            gradient_checkpointing=True,
        )
    )
    assert abs(result.history[0]["loss"] - LN2) < 1e-6
    # The LoRA moved: gradients reach it through the checkpointed blocks.
    assert result.history[1]["loss"] != pytest.approx(LN2, abs=1e-6)

    from diffusers import StableDiffusionXLPipeline

    pipeline: Any = StableDiffusionXLPipeline.from_pretrained(sdxl)
    pipeline.load_lora_weights(tmp_path / "out")
    assert any("lora" in name for name, _ in pipeline.unet.named_parameters())


def test_sft_baseline_trains_on_winners_only(
    tiny_sd_path: str, colour_dataset: str, tmp_path: Path
) -> None:
    result = train(
        _config(tiny_sd_path, colour_dataset, tmp_path / "out", loss="sft", max_train_steps=2)
    )
    for metrics in result.history:
        assert set(metrics) == {"step", "loss", "mse_w", "lr"}
        assert metrics["loss"] == metrics["mse_w"] > 0


def test_cached_latents_train_exactly_like_uncached(
    sharp_sd_path: str, colour_dataset: str, tmp_path: Path
) -> None:
    settings: dict[str, Any] = {"max_train_steps": 4, "learning_rate": 1e-3, "beta": 1000.0}
    plain = train(_config(sharp_sd_path, colour_dataset, tmp_path / "plain", **settings))
    cached = train(
        _config(sharp_sd_path, colour_dataset, tmp_path / "cached", cache_latents=True, **settings)
    )
    np.testing.assert_allclose(_losses(cached), _losses(plain), rtol=1e-4)
    entries = list((tmp_path / "cached" / "latents-cache").rglob("*.safetensors"))
    # Two colours, each flipped or not: at most 4 distinct VAE inputs over 2 epochs.
    assert 2 <= len(entries) <= 4


def test_cache_latents_refuses_random_crops() -> None:
    with pytest.raises(ValueError, match="cache_latents needs a deterministic crop"):
        DPOTrainingConfig(pretrained_model="m", dataset="d", cache_latents=True, random_crop=True)


# -- configuration and command line ------------------------------------------------------


def test_defaults_resolve_per_model_family() -> None:
    config = DPOTrainingConfig(pretrained_model="m", dataset="d")
    sd = config.resolved(ModelFamily.STABLE_DIFFUSION, 512)
    assert (sd.learning_rate, sd.effective_batch_size, sd.resolution) == (1e-5, 128, 512)
    assert sd.lora_alpha == 8 and sd.max_train_steps == 1000 and sd.beta == 5000.0
    full = config.model_copy(update={"use_lora": False})
    assert full.resolved(ModelFamily.STABLE_DIFFUSION, 512).learning_rate == 5e-7
    sdxl = full.resolved(ModelFamily.STABLE_DIFFUSION_XL, 1024)
    assert (sdxl.learning_rate, sdxl.effective_batch_size, sdxl.resolution) == (1e-6, 64, 1024)
    assert sdxl.gradient_accumulation_steps(num_processes=8) == 8
    with pytest.raises(ConfigurationError, match="not a multiple"):
        sdxl.model_copy(update={"train_batch_size": 3}).gradient_accumulation_steps(1)


def test_help_documents_every_option_with_default_and_source(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for name in DPOTrainingConfig.model_fields:
        flags = FLAGS.get(name, (f"--{name.replace('_', '-')}",))
        assert all(flag in text for flag in flags), name
    assert "--output-dir" not in text  # the old spelling works, hidden
    assert text.count("[default: ") >= len(DPOTrainingConfig.model_fields)
    for source in ("AGFSync", "Diffusion-DPO", "diffusers' DPO example"):
        assert source in text
    assert "[default: 1000]" in text and "[default: 5000.0]" in text


def test_output_is_the_flag_and_the_old_spelling_still_works(
    capsys: pytest.CaptureFixture[str],
) -> None:
    base = ["--pretrained-model", "tiny:stable-diffusion", "--dataset", "ds"]
    assert parse_config([*base, "-o", "a"])[0].output_dir == Path("a")
    assert parse_config([*base, "--output", "b"])[0].output_dir == Path("b")
    assert capsys.readouterr().err == ""
    assert parse_config([*base, "--output-dir", "c"])[0].output_dir == Path("c")
    assert capsys.readouterr().err == (
        "note: --output-dir is now --output; the old name will be removed.\n"
    )


def test_training_logs_as_every_command_with_credentials_redacted(tmp_path: Path) -> None:
    """`accelerate launch -m agfsync.train.dpo` runs `main` without the `agfsync` command:
    it sets up agfsync's logging itself (a fresh process, so nothing set it up before)."""
    code = (
        "import logging, agfsync.train.dpo as dpo\n"
        "try:\n"
        "    dpo.main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "logging.getLogger('agfsync.train').info('pushing to https://me:s3cret@hub.example/x')\n"
    )
    result = run_command(["python", "-c", code], tmp_path, fresh_process=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "INFO agfsync.train: pushing to https://***@hub.example/x" in result.stderr
    assert "s3cret" not in result.stderr


def test_yaml_config_with_command_line_overrides(tmp_path: Path) -> None:
    config_file = tmp_path / "run.yaml"
    config_file.write_text(
        yaml.safe_dump(
            {
                "pretrained_model": "tiny:stable-diffusion",
                "dataset": "my/dataset",
                "max_train_steps": 50,
                "beta": 2500,
                "validation_prompts": ["a", "b"],
            }
        )
    )
    config, token = parse_config(
        [
            "--config",
            str(config_file),
            "--max-train-steps",
            "7",
            "--no-use-lora",
            "--hub-token",
            "hf_test_token",
        ]
    )
    assert (config.max_train_steps, config.beta, config.use_lora) == (7, 2500.0, False)
    assert config.validation_prompts == ["a", "b"] and config.dataset == "my/dataset"
    assert token == "hf_test_token" and "hf_test_token" not in config.model_dump_json()
    with pytest.raises(ConfigurationError, match="max_train_steps"):
        parse_config(["--config", str(config_file), "--max-train-steps", "0"])
    config_file.write_text("pretrained_model: m\ndataset: d\nlearning_rat: 1\n")
    with pytest.raises(ConfigurationError, match="learning_rat"):
        parse_config(["--config", str(config_file)])
    assert build_parser().parse_args([]) is not None


def test_push_to_hub_from_a_project_folder_uploads_the_model_only(
    loopback_hub: HubServer, tiny_sd_path: str, colour_dataset: str, tmp_path: Path
) -> None:
    """`-o . --overwrite` in a project: the user's files (`.env`, source) stay local, as
    do the marker, logs, checkpoints and latent cache; the token is written nowhere."""
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / ".env").write_text("OPENAI_API_KEY=sk-mine")
    (project / "src" / "app.py").write_text("print('mine')")
    config = _config(
        tiny_sd_path,
        colour_dataset,
        project,
        overwrite=True,
        push_to_hub=True,
        hub_model_id="me/dpo",
        report_to="tensorboard",
        checkpointing_steps=1,
        cache_latents=True,
        validation_steps=1,
        validation_prompts=["a red square"],
    )
    result = train(config, hub_token=TOKEN)
    assert result.hub_url == f"{loopback_hub.url}/me/dpo"
    assert sorted(loopback_hub.files("me/dpo", "model")) == [
        "README.md",
        "pytorch_lora_weights.safetensors",
        "validation/step-000001-0.png",
        "validation/step-000001.png",
    ]
    assert (project / "checkpoint-1").is_dir() and (project / "logs").is_dir()
    assert not any(
        TOKEN in path.read_bytes().decode("latin-1")
        for path in project.rglob("*")
        if path.is_file()
    )


def test_push_to_hub_into_someone_elses_repo_stops_before_training(
    loopback_hub: HubServer, tiny_sd_path: str, colour_dataset: str, tmp_path: Path
) -> None:
    loopback_hub.seed("org/theirs", {"README.md": b"# mine", "model.bin": b"mine"}, "model")
    config = _config(
        tiny_sd_path, colour_dataset, tmp_path / "out", push_to_hub=True, hub_model_id="org/theirs"
    )
    with pytest.raises(ConfigurationError, match=r"has no 'agfsync' tag.*--hub-model-id"):
        train(config, hub_token=TOKEN)
    assert not (tmp_path / "out").exists()
    assert loopback_hub.commit_count("org/theirs", "model") == 1


def test_eight_bit_adam_without_bitsandbytes_is_a_clear_error() -> None:
    from importlib.util import find_spec

    from agfsync.train.loop import _optimizer_class

    if find_spec("bitsandbytes") is not None:
        pytest.skip("bitsandbytes is installed")
    config = DPOTrainingConfig(pretrained_model="m", dataset="d", use_8bit_adam=True)
    with pytest.raises(ConfigurationError, match="pip install bitsandbytes"):
        _optimizer_class(config)


# -- a dataset published by the offline preset, through `agfsync train` --------------------


def test_offline_preset_dataset_trains_with_agfsync_train(
    tmp_path: Path, tiny_sd_path: str
) -> None:
    generated = run_command(
        ["agfsync", "generate", "--preset", "offline", "--num-prompts", "4", "-o", "ds"],
        cwd=tmp_path,
    )
    assert generated.returncode == 0, generated.stderr[-2000:]
    trained = run_command(
        [
            "agfsync",
            "train",
            "--pretrained-model",
            "tiny:stable-diffusion",
            "--dataset",
            "ds",
            "--max-train-steps",
            "2",
            "--train-batch-size",
            "2",
            "--effective-batch-size",
            "2",
            "--validation-steps",
            "0",
            "--report-to",
            "none",
            "--output",
            "out",
        ],
        cwd=tmp_path,
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "Training finished" in trained.stdout
    assert "4 pairs, 0 ties removed" in trained.stderr
    # Not a terminal: plain progress lines with the metrics and the rate.
    assert re.search(
        r"training: 2/2 steps \(\d+\.\d+ steps/s, loss \S+ implicit_accuracy \S+ lr \S+\)",
        trained.stderr,
    ), trained.stderr[-2000:]

    from diffusers import StableDiffusionPipeline

    pipeline: Any = StableDiffusionPipeline.from_pretrained(tiny_sd_path, safety_checker=None)
    pipeline.load_lora_weights(tmp_path / "out")
    assert any("lora" in name for name, _ in pipeline.unet.named_parameters())


def test_accelerate_launch_runs_the_module_in_bf16(colour_dataset: str, tmp_path: Path) -> None:
    """The README's launcher, with mixed precision, on the CPU (one process)."""
    launched = run_command(
        [
            *("accelerate", "launch", "--num_processes", "1", "--cpu"),
            *("-m", "agfsync.train.dpo", "--pretrained-model", "tiny:stable-diffusion"),
            *("--dataset", colour_dataset, "--mixed-precision", "bf16"),
            *("--max-train-steps", "2", "--train-batch-size", "2", "--effective-batch-size", "2"),
            *("--validation-steps", "0", "--report-to", "none", "--output", "out"),
        ],
        cwd=tmp_path,
    )
    assert launched.returncode == 0, launched.stderr[-3000:]
    card = (tmp_path / "out" / "README.md").read_text()
    assert "bf16" in card
    assert (tmp_path / "out" / "pytorch_lora_weights.safetensors").is_file()
