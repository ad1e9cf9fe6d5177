"""Bad input: one-line error naming the problem and the fix, non-zero exit, no dataset."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from agfsync.cli import app

runner = CliRunner()


def _generate(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["generate", *args])
    return result.exit_code, result.output


class TestGenerateRejectsBadInput:
    def test_missing_prompt_file(self, tmp_path: Path) -> None:
        code, output = _generate(
            "--prompts", str(tmp_path / "nope.jsonl"), "-o", str(tmp_path / "out")
        )
        assert code != 0
        assert "nope.jsonl does not exist" in output and "pass an existing JSONL file" in output
        assert not (tmp_path / "out").exists()

    def test_empty_prompt_file(self, tmp_path: Path) -> None:
        empty = tmp_path / "empty.jsonl"
        empty.write_text("\n")
        code, output = _generate("--prompts", str(empty), "-o", str(tmp_path / "out"))
        assert code != 0
        assert "holds no prompts" in output and "add at least one JSON line" in output
        assert not (tmp_path / "out").exists()

    def test_row_without_category(self, tmp_path: Path) -> None:
        bad = tmp_path / "bad.jsonl"
        bad.write_text('{"prompt": "a cat"}\n')
        code, output = _generate("--prompts", str(bad), "-o", str(tmp_path / "out"))
        assert code != 0
        assert "bad.jsonl:1 lacks category" in output

    def test_unknown_preset(self, tmp_path: Path) -> None:
        code, output = _generate("--preset", "nonsense", "-o", str(tmp_path / "out"))
        assert code != 0
        assert "Unknown preset 'nonsense'" in output and "offline" in output

    def test_unwritable_output_dir(self, tmp_path: Path) -> None:
        blocker = tmp_path / "a-file"
        blocker.write_text("")
        code, output = _generate("-o", str(blocker / "dataset"))
        assert code != 0
        assert "Cannot write to --output" in output and "choose a folder you can write to" in output

    @pytest.mark.parametrize("count", ["1", "0"])
    def test_fewer_than_two_candidates(self, tmp_path: Path, count: str) -> None:
        code, output = _generate("--num-images", count, "-o", str(tmp_path / "out"))
        assert code != 0
        assert f"--num-images {count} cannot form a pair" in output
        assert not (tmp_path / "out").exists()

    def test_errors_are_one_line(self, tmp_path: Path) -> None:
        _, output = _generate("--preset", "nonsense", "-o", str(tmp_path / "out"))
        assert len(output.strip().splitlines()) == 1


def _prompt_file(tmp_path: Path, content: bytes, name: str = "prompts.jsonl") -> str:
    path = tmp_path / name
    path.write_bytes(content)
    return str(path)


class TestPromptFiles:
    """Each bad file: exit 2, one line naming the file and line, no output folder."""

    @pytest.mark.parametrize(
        ("content", "expected"),
        [
            (
                '{"prompt": "un café crème", "category": "food"}\n'.encode("latin-1"),
                "prompts.jsonl:1 is not UTF-8 text (byte 0xe9); save the file as UTF-8",
            ),
            (b'["a cat", "animals"]\n', "prompts.jsonl:1 is a list, not a JSON object"),
            (
                b'{"prompt": 42, "category": "c"}\n',
                "prompts.jsonl:1: prompt must be text, not a number",
            ),
            (
                b'{"prompt": ["a"], "category": "c"}\n',
                "prompts.jsonl:1: prompt must be text, not a list",
            ),
            (b'{"prompt": "   ", "category": "c"}\n', "prompts.jsonl:1 lacks prompt"),
            (b'{"prompt": "a cat", "category": " \\t"}\n', "prompts.jsonl:1 lacks category"),
            (
                b'{"prompt": "a cat", "category": "c", "qa_pairs": "yes"}\n',
                "prompts.jsonl:1: qa_pairs must be a list of question objects, not text",
            ),
            (
                b'{"prompt": "a", "category": "c", "prompt_id": ["a"]}\n',
                "prompt_id must be text or an integer, not a list",
            ),
            (b'\n\n{"prompt": "a", "category": "c"\n', "prompts.jsonl:3 is not valid JSON"),
        ],
    )
    def test_refused_with_its_line(self, tmp_path: Path, content: bytes, expected: str) -> None:
        code, output = _generate(
            "--prompts", _prompt_file(tmp_path, content), "-o", str(tmp_path / "out")
        )
        assert code == 2
        assert expected in output
        assert len(output.strip().splitlines()) == 1 and "Traceback" not in output
        assert not (tmp_path / "out").exists()

    def test_rows_without_the_qa_pairs_the_preset_needs(self, tmp_path: Path) -> None:
        """The offline preset's VQA judge reads the file's QA pairs (no step writes any):
        rows without are refused at load time, not after rendering and judging them."""
        from agfsync.text.prompt_files import SAMPLE_PROMPTS_PATH, load_prompt_records

        first = SAMPLE_PROMPTS_PATH.read_bytes().splitlines(keepends=True)[0]
        rows = first + b'{"prompt": "a", "category": "c"}\n{"prompt": "b", "category": "c"}\n'
        path = _prompt_file(tmp_path, rows)
        code, output = _generate("--prompts", path, "-o", str(tmp_path / "out"))
        assert code == 2 and "prompts.jsonl lines 2, 3: no qa_pairs" in output
        assert not (tmp_path / "out").exists()
        assert len(load_prompt_records(path, num_prompts=1, require_qa_pairs=True)) == 1

    def test_null_qa_pairs_read_as_none(self, tmp_path: Path) -> None:
        from agfsync.text.prompt_files import load_prompt_records

        path = _prompt_file(tmp_path, b'{"prompt": "a cat", "category": "c", "qa_pairs": null}\n')
        assert load_prompt_records(path)[0]["qa_pairs"] == []

    def test_a_folder_given_as_the_prompt_file(self, tmp_path: Path) -> None:
        code, output = _generate("--prompts", str(tmp_path), "-o", str(tmp_path / "out"))
        assert code == 2 and "is a folder; pass a JSONL file" in output


LATIN_1 = "caf\u00e9".encode("latin-1")
CATEGORY = b"- name: Animals\n  description: pets\n  examples: ['a fox']\n"


class TestOtherInputFiles:
    """Categories, judge weights and estimate tables: exit 2, one line naming the file,
    its line and the fix, before any work."""

    @pytest.mark.parametrize(
        ("option", "content", "expected"),
        [
            ("--categories", b"# " + LATIN_1 + b"\n" + CATEGORY, "in.yaml:1 is not UTF-8 text"),
            ("--categories", b"- name: [\n", "in.yaml:2 is not valid YAML"),
            (
                "--categories",
                CATEGORY.replace(b"Animals", b"'   '"),
                "in.yaml: category 1 is invalid (name: String should have at least 1 character",
            ),
            ("--weights", b"weights:\n  clip: 1  # " + LATIN_1 + b"\n", "in.yaml:2 is not UTF-8"),
            ("--weights", b"weights: {clip: 1\n", "in.yaml:2 is not valid YAML"),
        ],
    )
    def test_generate_refuses(
        self, tmp_path: Path, option: str, content: bytes, expected: str
    ) -> None:
        path = _prompt_file(tmp_path, content, "in.yaml")
        preset = "text-openai" if option == "--categories" else "offline"
        result = runner.invoke(
            app,
            ["generate", "--preset", preset, option, path, "-o", str(tmp_path / "out")],
            env={"OPENAI_API_KEY": "sk-test"},
        )  # fmt: skip
        assert result.exit_code == 2 and expected in result.output
        assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
        assert not (tmp_path / "out").exists()

    def test_estimate_tables_not_utf8(self, tmp_path: Path) -> None:
        path = _prompt_file(tmp_path, b"# " + LATIN_1 + b"\nprofiles: {}\n", "tables.yaml")
        result = runner.invoke(
            app, ["estimate", "--preset", "offline", "--num-prompts", "10", "--tables", path]
        )
        assert result.exit_code == 2 and "tables.yaml:1 is not UTF-8 text" in result.output


class TestOptions:
    @pytest.mark.parametrize(
        ("args", "expected"),
        [
            (["--min-margin", "nan"], "--min-margin nan is not a number"),
            (["--min-margin", "-1"], "--min-margin -1.0 must be 0 or more"),
            (["--llm-time-limit", "0"], "--llm-time-limit 0.0 must be a positive number"),
            (["--resolution", "100"], "--resolution 100 must be a positive multiple of 8"),
        ],
    )
    def test_refused(self, tmp_path: Path, args: list[str], expected: str) -> None:
        code, output = _generate(*args, "-o", str(tmp_path / "out"))
        assert code == 2 and expected in output

    @pytest.mark.parametrize(
        ("suite", "expected"),
        [
            (
                "bogus",
                "--suite[0]: Input should be 'tifa', 'dsg', 'hpsv2', 'vlm' or 'heldout' "
                "(got 'bogus')",
            ),
            ("", "--suite '' names an empty suite"),
            ("dsg,", "--suite 'dsg,' names an empty suite"),
        ],
    )
    def test_evaluate_suites(self, tmp_path: Path, suite: str, expected: str) -> None:
        result = runner.invoke(
            app,
            ["evaluate", "--base", "tiny:stable-diffusion", "--tuned", "tiny:stable-diffusion",
             "--suite", suite, "-o", str(tmp_path / "eval")],
        )  # fmt: skip
        assert result.exit_code == 2 and expected in result.output
        assert "errors.pydantic.dev" not in result.output and not (tmp_path / "eval").exists()

    @pytest.mark.parametrize(
        ("content", "expected"),
        [
            ("profiles: 3\n", "profiles: Input should be a valid dictionary (got 3)"),
            ("a: [\n", "tables.yaml:2 is not valid YAML"),
        ],
    )
    def test_estimate_tables(self, tmp_path: Path, content: str, expected: str) -> None:
        tables = tmp_path / "tables.yaml"
        tables.write_text(content)
        result = runner.invoke(
            app, ["estimate", "--preset", "offline", "--num-prompts", "10", "--tables", str(tables)]
        )
        assert result.exit_code == 2 and expected in result.output
        assert "errors.pydantic.dev" not in result.output

    def test_estimate_tables_missing(self, tmp_path: Path) -> None:
        result = runner.invoke(
            app, ["estimate", "--preset", "offline", "--num-prompts", "10", "--tables", "nope.yaml"]
        )
        assert result.exit_code == 2 and "Estimate tables nope.yaml do not exist" in result.output


class TestOptionsThePresetDoesNotTake:
    """An option with no step to set in the preset: refused before any work, naming the
    option, the preset and the presets that take it (never dropped while calls go on)."""

    @pytest.mark.parametrize(
        ("preset", "option", "taken_by"),
        [
            (
                "text-openai",
                ["--prompts", "p.jsonl"],
                "offline, ray-offline, text-image-preferences",
            ),
            ("text-openai", ["--num-images", "3"], "agfsync-sd15"),
            ("text-openai", ["--num-prompts", "3"], "text-image-preferences"),
            ("offline", ["--categories", "c.yaml"], "text-openai"),
            ("text-image-preferences", ["--categories", "c.yaml"], "agfsync-sd15"),
            ("offline", ["--prompts-per-category", "3"], "text-gemini"),
            ("text-gemini", ["--min-margin", "2"], "offline"),
        ],
    )
    def test_refused(self, tmp_path: Path, preset: str, option: list[str], taken_by: str) -> None:
        keys = {"OPENAI_API_KEY": "sk-test", "GEMINI_API_KEY": "g-test"}
        result = runner.invoke(
            app, ["generate", "--preset", preset, *option, "-o", str(tmp_path / "out")], env=keys
        )
        assert result.exit_code == 2
        assert f"{option[0]} does not apply to preset {preset!r}" in result.output
        assert taken_by in result.output and len(result.output.strip().splitlines()) == 1
        assert not (tmp_path / "out").exists()


class TestRunsWithNothingUsable:
    def test_a_run_in_which_no_prompt_gets_a_pair(self, tmp_path: Path) -> None:
        from tests.helpers import run_command

        result = run_command(
            ["agfsync", "generate", "--num-prompts", "2", "--min-margin", "1000", "-o", "out"],
            tmp_path,
        )
        assert result.returncode == 1
        message = result.stderr.strip().splitlines()[-1]
        # counted by kind, not once per margin value
        assert "No prompt got a preference pair (2 prompts: 2 x score margin below " in message
        assert "--min-margin 1000); nothing was written" in message
        assert "nothing was written" in message and not (tmp_path / "out").exists()
        assert "Keys mismatch" not in result.stderr


class TestTrainAndPublishInputs:
    def test_train_on_a_folder_without_pairs(self, tmp_path: Path) -> None:
        (tmp_path / "empty").mkdir()
        result = runner.invoke(
            app,
            ["train", "--pretrained-model", "tiny:stable-diffusion", "--dataset",
             str(tmp_path / "empty"), "--output", str(tmp_path / "trained")],
        )  # fmt: skip
        assert result.exit_code == 2
        assert "Cannot load split 'train' of dataset" in result.output
        assert "Traceback" not in result.output


class TestErrorLines:
    """Whatever ends a command: one line, credentials in URLs as `***`, no traceback."""

    def test_a_folder_of_another_kind_is_named(self, tmp_path: Path) -> None:
        from agfsync.errors import ConfigurationError
        from agfsync.ownership import FolderKind, check_output_folder, write_folder

        write_folder(tmp_path / "out", FolderKind.DATASET, lambda staging: None, flag="-o")
        with pytest.raises(
            ConfigurationError,
            match="kind 'dataset', and this command writes kind 'evaluation'; choose",
        ):
            check_output_folder(tmp_path / "out", FolderKind.EVALUATION, flag="-o")

    def test_argilla_url_credentials_are_redacted(self, tmp_path: Path) -> None:
        from tests.helpers import closed_port

        url = f"http://carol:argpw@127.0.0.1:{closed_port()}"
        result = runner.invoke(
            app,
            ["argilla", "pull", "r", "-o", str(tmp_path / "out"), "--retries", "1"],
            env={"ARGILLA_API_URL": url, "ARGILLA_API_KEY": "k"},
        )
        assert result.exit_code == 2 and "Argilla pull failed" in result.output
        assert "http://***@127.0.0.1" in result.output and "argpw" not in result.output

    def test_hub_url_credentials_are_redacted(self, tmp_path: Path) -> None:
        from tests.helpers import closed_port

        env = {
            "HF_HUB_OFFLINE": "0",
            "HF_ENDPOINT": f"http://bob:hubpw@127.0.0.1:{closed_port()}",
            "OPENAI_API_KEY": "sk-test",
        }
        args = ["--preset", "text-openai", "-o", str(tmp_path / "out")]
        result = runner.invoke(app, ["generate", *args], env=env)
        assert result.exit_code == 2 and "cannot be reached" in result.output
        assert "http://***@127.0.0.1" in result.output and "hubpw" not in result.output

    def test_an_agfsync_error_from_anywhere_is_redacted(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from agfsync.errors import PublishError

        def refuse(*args: object, **kwargs: object) -> None:
            raise PublishError("http://dave:pubpw@hub.example is not the Hub's API")

        monkeypatch.setattr("agfsync.evaluation.report.render_dataset_report", refuse)
        result = runner.invoke(app, ["report", str(tmp_path)])
        assert result.exit_code == 1
        assert result.output == "error: http://***@hub.example is not the Hub's API\n"

    def test_an_unexpected_error_is_one_line_without_locals(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        def crash(*args: object, **kwargs: object) -> None:
            password = "local" + "pw"  # a local variable, which rich would show
            raise KeyError(f"http://erin:{password.replace('local', 'msg')}@example.org")

        monkeypatch.setattr("agfsync.evaluation.report.render_dataset_report", crash)
        result = runner.invoke(app, ["report", str(tmp_path)])
        assert result.exit_code == 1
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: unexpected KeyError: ")
        assert "(at agfsync.cli:" in lines[0] and "AGFSYNC_DEBUG=1" in lines[0]
        assert "msgpw" not in result.output

        result = runner.invoke(app, ["report", str(tmp_path)], env={"AGFSYNC_DEBUG": "1"})
        assert result.output.startswith("Traceback (most recent call last):\n")
        assert "its traceback is above" in result.output.splitlines()[-1]
        assert "localpw" not in result.output and "msgpw" not in result.output
        assert "╭" not in result.output
        for off in ("0", "false", "off"):
            quiet = runner.invoke(app, ["report", str(tmp_path)], env={"AGFSYNC_DEBUG": off})
            assert "Traceback" not in quiet.output, off

    def test_the_installed_command_prints_no_rich_traceback(self, tmp_path: Path) -> None:
        """distilabel installs rich's traceback hook at import; the command line's own
        entry point still ends an unexpected error with one line."""
        from tests.helpers import run_command

        code = (
            "import distilabel, sys\n"
            "import agfsync.cli as cli\n"
            "def crash(*args, **kwargs): raise RuntimeError('boom')\n"
            "import agfsync.evaluation.report as report\n"
            "report.render_dataset_report = crash\n"
            "sys.argv = ['agfsync', 'report', '.']\n"
            "cli.app()\n"
        )
        result = run_command(["python", "-c", code], tmp_path)
        assert result.returncode == 1, result.stderr
        assert result.stderr.startswith("error: unexpected RuntimeError: boom (at ")
        assert len(result.stderr.strip().splitlines()) == 1
