"""Checks before the first paid call or long job: a run that is certain to fail stops
in its first seconds, naming the model or resource and what to do instead."""

from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from agfsync.errors import ConfigurationError
from agfsync.run.preflight import ModelNeed, check_disk, check_model, png_bytes
from agfsync.testing.openai_server import ScriptedChatCompletions
from tests.helpers import REPO_ROOT, closed_port, run_command

CATEGORY = """
- name: Animals
  description: wild animals and pets
  examples: ["a fox in the snow"]
"""


@pytest.fixture
def loopback_llm(httpserver: HTTPServer, tmp_path: Path) -> tuple[dict[str, str], Any]:
    completions = ScriptedChatCompletions(['["a red fox in the snow at dawn"]'])
    env = {"OPENAI_BASE_URL": completions.install(httpserver), "OPENAI_API_KEY": "sk-test"}
    (tmp_path / "categories.yaml").write_text(CATEGORY)
    return env, completions


class TestModelsAreCheckedBeforeAnyLLMCall:
    def test_an_unavailable_dedup_model_stops_before_the_first_request(
        self, loopback_llm: tuple[dict[str, str], Any], tmp_path: Path
    ) -> None:
        env, completions = loopback_llm
        result = run_command(
            ["agfsync", "generate", "--preset", "text-openai", "-o", "out",
             "--categories", "categories.yaml", "--prompts-per-category", "1"],
            tmp_path,
            env,
        )  # fmt: skip
        assert result.returncode == 2
        message = result.stderr.strip().splitlines()[-1]
        assert "BAAI/bge-large-en-v1.5" in message and "HF_HUB_OFFLINE" in message
        assert "--dedup minhash" in message
        assert completions.requests == []  # not one paid request
        assert not (tmp_path / "out").exists()

    def test_an_unreachable_hub(self) -> None:
        need = ModelNeed("org/not-cached-model", "generate_images.model")
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("HF_HUB_OFFLINE", "0")
            patch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
            with pytest.raises(ConfigurationError, match="cannot be reached") as error:
                check_model(need)
        assert "org/not-cached-model (generate_images.model)" in str(error.value)

    def test_a_missing_model_folder(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigurationError, match="does not exist"):
            check_model(ModelNeed(str(tmp_path / "no-such-model"), "--base"))

    def test_an_unknown_tiny_model(self) -> None:
        with pytest.raises(ConfigurationError, match="Unknown tiny model 'tiny:nope'"):
            check_model(ModelNeed("tiny:nope", "judge_images: judge clip"))

    def test_a_local_folder_and_a_tiny_model_pass(self, tmp_path: Path) -> None:
        check_model(ModelNeed(str(tmp_path), "--base"))
        check_model(ModelNeed("tiny:stable-diffusion", "generate_images.model"))


class TestDisk:
    def test_a_run_larger_than_the_free_space_is_refused(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigurationError, match="Not enough disk space") as error:
            check_disk({tmp_path / "out": 10**18}, hint="free some space")
        assert "free some space" in str(error.value)

    def test_needs_on_one_file_system_add_up(self, tmp_path: Path) -> None:
        import shutil

        free = shutil.disk_usage(tmp_path).free
        check_disk({tmp_path / "a": free // 4}, hint="")
        with pytest.raises(ConfigurationError):
            check_disk({tmp_path / "a": free // 2 + 1, tmp_path / "b": free // 2 + 1}, hint="")

    def test_generate_checks_the_disk_before_loading_a_model(self, tmp_path: Path) -> None:
        result = run_command(
            ["python", "-m", "tests.fault_driver", "no-free-disk", "generate", "-o",
             str(tmp_path / "out")],
            REPO_ROOT,
        )  # fmt: skip
        assert result.returncode == 2
        message = result.stderr.strip().splitlines()[-1]
        assert "Not enough disk space" in message and "--output" in message
        assert "Pipeline data will be written" not in result.stderr  # no pipeline started
        assert not (tmp_path / "out").exists()


class TestNothingUsableExitsNonZero:
    def test_a_text_run_whose_every_call_failed(
        self, httpserver: HTTPServer, tmp_path: Path
    ) -> None:
        from agfsync.testing.openai_server import HTTPError

        completions = ScriptedChatCompletions([HTTPError(400)])
        env = {"OPENAI_BASE_URL": completions.install(httpserver), "OPENAI_API_KEY": "sk-test"}
        (tmp_path / "categories.yaml").write_text(CATEGORY)
        result = run_command(
            ["agfsync", "generate", "--preset", "text-openai", "-o", "out", "--dedup",
             "minhash", "--categories", "categories.yaml", "--prompts-per-category", "1"],
            tmp_path,
            env,
        )  # fmt: skip
        assert result.returncode == 1, result.stdout
        assert "Dataset ready" not in result.stdout
        message = result.stderr.strip().splitlines()[-1]
        assert "wrote no prompt with QA pairs" in message and "write_prompts" in message
        assert "400" in message and not (tmp_path / "out").exists()


class TestAFailedStepIsNamed:
    def test_the_last_line_names_the_step_and_its_error(self, tmp_path: Path) -> None:
        result = run_command(
            ["python", "-m", "tests.fault_driver", "image-model-fails-to-load", "generate",
             "-o", str(tmp_path / "out"), "--num-prompts", "2"],
            REPO_ROOT,
            {"DISTILABEL_CACHE_DIR": str(tmp_path / "cache")},
        )  # fmt: skip
        assert result.returncode == 1
        last = result.stderr.strip().splitlines()[-1]
        assert "step 'generate_images' failed to load" in last
        assert "the checkpoint's unet is truncated" in last
        assert "see the log above" not in last

    def test_logs_are_plain_lines_without_a_terminal(self, tmp_path: Path) -> None:
        """Captured output (CI, nohup) has distilabel's lines unwrapped, no rich boxes."""
        result = run_command(
            ["python", "-m", "tests.fault_driver", "image-model-fails-to-load", "generate",
             "-o", str(tmp_path / "out"), "--num-prompts", "2"],
            REPO_ROOT,
            {"DISTILABEL_CACHE_DIR": str(tmp_path / "cache")},
        )  # fmt: skip
        lines = result.stderr.splitlines()
        assert any(line.startswith("['distilabel.pipeline']") for line in lines)
        assert not any(char in result.stderr for char in "│╭╰")
        assert (
            "['distilabel.pipeline'] ❌ Failed to load step 'generate_images': Step load "
            "failed: simulated: the checkpoint's unet is truncated"
        ) in lines
        assert "Traceback" not in result.stderr


class TestTrainAndEvaluateCheckTheirModels:
    def test_evaluate(self, tmp_path: Path) -> None:
        from typer.testing import CliRunner

        from agfsync.cli import app

        result = CliRunner().invoke(
            app,
            ["evaluate", "--base", "tiny:stable-diffusion", "--tuned", "tiny:stable-diffusion",
             "--suite", "dsg", "--vqa-model", "org/vqa-not-cached", "-o", str(tmp_path / "e")],
        )  # fmt: skip
        assert result.exit_code == 2
        assert "Model org/vqa-not-cached (--vqa-model) is not in the Hugging Face cache" in (
            result.output
        )
        assert not (tmp_path / "e").exists()

    def test_train(self, offline_run: Path, tmp_path: Path) -> None:
        from typer.testing import CliRunner

        from agfsync.cli import app

        result = CliRunner().invoke(
            app,
            ["train", "--pretrained-model", str(tmp_path / "no-model"), "--dataset",
             str(offline_run), "--output", str(tmp_path / "t")],
        )  # fmt: skip
        assert result.exit_code == 2
        assert "(--pretrained-model) does not exist" in result.output
        assert not (tmp_path / "t").exists()


# -- train and evaluate: the same preflight, before any folder is claimed ----------------


def _invoke(args: list[str]) -> Any:
    from typer.testing import CliRunner

    from agfsync.cli import app

    return CliRunner().invoke(app, args)


def _last_line(output: str) -> str:
    return output.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def colour_pairs(tmp_path_factory: pytest.TempPathFactory) -> str:
    from tests.test_train_data import write_colour_preference_dataset

    return str(write_colour_preference_dataset(tmp_path_factory.mktemp("pairs") / "ds", 2))


@pytest.fixture
def nearly_full_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every file system reports 1 kB free (to the disk check only)."""
    import shutil

    usage = shutil.disk_usage

    def nearly_full(path: Any) -> Any:
        total, used, _free = usage(path)
        return type(usage(path))(total, used, 1000)

    monkeypatch.setattr("agfsync.run.preflight.shutil.disk_usage", nearly_full)


class TestTrainPreflight:
    """Each refusal comes before a weight is loaded and leaves no output folder."""

    def train(self, tiny_sd_path: str, colour_pairs: str, output: Path, *extra: str) -> Any:
        return _invoke(
            ["train", "--pretrained-model", tiny_sd_path, "--dataset", colour_pairs,
             "--output", str(output), "--max-train-steps", "2", "--report-to", "none",
             *extra],
        )  # fmt: skip

    def test_push_to_hub_without_a_token(
        self, tiny_sd_path: str, colour_pairs: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.delenv("HF_TOKEN", raising=False)
        result = self.train(tiny_sd_path, colour_pairs, tmp_path / "t", "--push-to-hub")
        assert result.exit_code == 2, result.output
        message = _last_line(result.output)
        assert "--push-to-hub uploads to t but there is no Hugging Face token" in message
        assert "HF_TOKEN" in message and "hf auth login" in message
        assert not (tmp_path / "t").exists()

    def test_push_to_hub_offline(
        self, tiny_sd_path: str, colour_pairs: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("HF_TOKEN", "hf_test")
        result = self.train(tiny_sd_path, colour_pairs, tmp_path / "t", "--push-to-hub")
        assert result.exit_code == 2, result.output
        message = _last_line(result.output)
        assert "HF_HUB_OFFLINE is set" in message and "without --push-to-hub" in message
        assert not (tmp_path / "t").exists()

    def test_a_vae_that_does_not_exist(
        self, tiny_sd_path: str, colour_pairs: str, tmp_path: Path
    ) -> None:
        result = self.train(
            tiny_sd_path, colour_pairs, tmp_path / "t", "--vae-model", "nobody/novae"
        )
        assert result.exit_code == 2, result.output
        message = _last_line(result.output)
        assert "Model nobody/novae (--vae-model) is not in the Hugging Face cache" in message
        assert "leave --vae-model out" in message
        assert not (tmp_path / "t").exists()

    def test_no_room_for_the_checkpoints(
        self, tiny_sd_path: str, colour_pairs: str, tmp_path: Path, nearly_full_disk: None
    ) -> None:
        result = self.train(tiny_sd_path, colour_pairs, tmp_path / "t")
        assert result.exit_code == 2, result.output
        message = _last_line(result.output)
        assert "Not enough disk space" in message and "--checkpoints-total-limit" in message
        assert not (tmp_path / "t").exists()

    def test_an_unwritable_latent_cache(
        self, tiny_sd_path: str, colour_pairs: str, tmp_path: Path
    ) -> None:
        (tmp_path / "afile").write_text("")  # below a file: unwritable even for root
        cache = tmp_path / "afile" / "latents"
        result = self.train(
            tiny_sd_path, colour_pairs, tmp_path / "t", "--cache-latents",
            "--latents-cache-dir", str(cache),
        )  # fmt: skip
        assert result.exit_code == 2, result.output
        assert f"Cannot write to --latents-cache-dir {cache}" in _last_line(result.output)
        assert not (tmp_path / "t").exists()

    def test_lora_target_modules_the_unet_lacks(
        self, tiny_sd_path: str, colour_pairs: str, tmp_path: Path
    ) -> None:
        result = self.train(
            tiny_sd_path, colour_pairs, tmp_path / "t", "--lora-target-modules", "nope"
        )
        assert result.exit_code == 2, result.output
        assert "--lora-target-modules nope: Target modules {'nope'} not found" in result.output
        assert not (tmp_path / "t").exists()

    def test_the_disk_estimate_bounds_the_checkpoints(self, tiny_sd_path: str) -> None:
        from agfsync.train.config import DPOTrainingConfig
        from agfsync.train.loop import CHECKPOINT_BYTES_PER_PARAMETER, training_disk_needs
        from agfsync.train.models import inspect_base_model

        info = inspect_base_model(tiny_sd_path)
        config = DPOTrainingConfig(
            pretrained_model=tiny_sd_path,
            dataset="unused",
            output_dir=Path("out"),
            max_train_steps=1000,
            checkpointing_steps=100,
            checkpoints_total_limit=3,
            validation_steps=0,
        ).resolved(info.family, info.native_resolution)
        needs = training_disk_needs(config, info, None)
        lora = 19968  # the tiny UNet's attention projections at rank 8
        assert needs == {Path("out"): 3 * CHECKPOINT_BYTES_PER_PARAMETER * lora + 4 * lora}

    def test_a_resumed_run_counts_only_what_it_still_writes(
        self, tiny_sd_path: str, tmp_path: Path
    ) -> None:
        """Resumed at step 800 of 1000 (checkpoints 600 to 800 and 30 of 40 latents on
        disk): 2 checkpoints, 3 validations and 10 latents are still to come."""
        from agfsync.train.config import DPOTrainingConfig
        from agfsync.train.loop import CHECKPOINT_BYTES_PER_PARAMETER, training_disk_needs
        from agfsync.train.models import inspect_base_model

        output = tmp_path / "out"
        for step in (600, 700, 800):
            (output / f"checkpoint-{step}").mkdir(parents=True)
        (output / "checkpoint-best").mkdir()  # not one of ours: neither counted nor a crash
        for index in range(30):
            entry = output / "latents-cache" / "0123456789abcdef" / f"{index:02d}"[:2]
            entry.mkdir(parents=True, exist_ok=True)
            (entry / f"{index:02d}.safetensors").write_bytes(b"")
        info = inspect_base_model(tiny_sd_path)
        config = DPOTrainingConfig(
            pretrained_model=tiny_sd_path,
            dataset="unused",
            output_dir=output,
            max_train_steps=1000,
            checkpointing_steps=100,
            resume_from_checkpoint="latest",
            validation_steps=100,
            validation_prompts=["a", "b"],
            cache_latents=True,
            random_flip=False,
        ).resolved(info.family, info.native_resolution)
        assert config.resolution is not None
        lora, checkpoint = 19968, CHECKPOINT_BYTES_PER_PARAMETER * 19968
        images = png_bytes(config.resolution, config.resolution, 2 * 2 * 3)
        latent = 2 * 4 * (config.resolution // 8) ** 2 * 4
        needs = training_disk_needs(config, info, 20)  # 20 pairs: 40 latents
        cache = {output / "latents-cache": 10 * latent}
        assert needs == {output: 2 * checkpoint + 4 * lora + images} | cache
        for limit, new in ((3, 0), (4, 1), (10, 2)):  # the oldest make room for new ones
            limited = config.model_copy(update={"checkpoints_total_limit": limit})
            written = training_disk_needs(limited, info, 20)[output]
            assert written == new * checkpoint + 4 * lora + images, limit


class TestHubUpload:
    """`check_hub_upload` before a run that ends by uploading."""

    def test_an_unreachable_hub(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from huggingface_hub import constants

        from agfsync.run.preflight import check_hub_upload

        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{closed_port()}")
        with pytest.raises(ConfigurationError, match="cannot be reached") as error:
            check_hub_upload("hf_test", repo="me/lora", flag="--push-to-hub", alternative="x")
        assert str(error.value).startswith("--push-to-hub uploads to me/lora and the Hub")

    @pytest.mark.parametrize(
        ("status", "answer", "expected"),
        [
            (401, {"error": "Invalid"}, "The Hub rejected the Hugging Face token"),
            (200, {"auth": {"accessToken": {"role": "read"}}}, "token is read-only"),
            (200, {"auth": {"accessToken": {"role": "write"}}}, None),
        ],
    )
    def test_the_hub_judges_the_token(
        self,
        httpserver: HTTPServer,
        monkeypatch: pytest.MonkeyPatch,
        status: int,
        answer: dict[str, Any],
        expected: str | None,
    ) -> None:
        from huggingface_hub import constants

        from agfsync.run.preflight import check_hub_upload

        httpserver.expect_request("/api/whoami-v2").respond_with_json(answer, status=status)
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "ENDPOINT", httpserver.url_for("").rstrip("/"))
        if expected is None:
            check_hub_upload("hf_test", repo="me/lora", flag="--push-to-hub", alternative="x")
            return
        with pytest.raises(ConfigurationError, match=expected):
            check_hub_upload("hf_test", repo="me/lora", flag="--push-to-hub", alternative="x")


class TestEvaluatePreflight:
    def evaluate(self, output: Path, *extra: str) -> Any:
        return _invoke(
            ["evaluate", "--base", "tiny:stable-diffusion", "--tuned", "tiny:stable-diffusion",
             "--suite", "hpsv2", "--prompts-per-suite", "2", "--clip-model", "tiny:clip",
             "--aesthetic-model", "tiny:clip-vit-large", "-o", str(output), *extra],
        )  # fmt: skip

    def test_an_unwritable_image_cache(self, tmp_path: Path) -> None:
        (tmp_path / "afile").write_text("")  # below a file: unwritable even for root
        cache = tmp_path / "afile" / "images"
        result = self.evaluate(tmp_path / "e", "--image-cache", str(cache))
        assert result.exit_code == 2, result.output
        message = _last_line(result.output)
        assert f"Cannot write to the image cache (--image-cache) {cache}" in message
        assert not (tmp_path / "e").exists()

    def test_no_room_for_the_images(self, tmp_path: Path, nearly_full_disk: None) -> None:
        result = self.evaluate(tmp_path / "e")
        assert result.exit_code == 2, result.output
        message = _last_line(result.output)
        assert "Not enough disk space" in message and "--prompts-per-suite" in message
        assert not (tmp_path / "e").exists()


class TestDistilabelCache:
    def test_an_unwritable_cache_stops_generate_in_one_line(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        (tmp_path / "afile").write_text("")  # below a file: unwritable even for root
        monkeypatch.setenv("DISTILABEL_CACHE_DIR", str(tmp_path / "afile" / "cache"))
        result = _invoke(["generate", "--num-prompts", "2", "-o", str(tmp_path / "out")])
        assert result.exit_code == 2, result.output
        message = _last_line(result.output)
        assert "Cannot write to the distilabel cache (DISTILABEL_CACHE_DIR)" in message
        assert "set DISTILABEL_CACHE_DIR to a folder you can write to" in message
        assert "Traceback" not in result.output and not (tmp_path / "out").exists()
