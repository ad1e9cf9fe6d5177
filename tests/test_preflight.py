"""Checks before the first paid call or long job: a run that is certain to fail stops
in its first seconds, naming the model or resource and what to do instead."""

from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from agfsync.errors import ConfigurationError
from agfsync.run.preflight import ModelNeed, check_disk, check_model
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
