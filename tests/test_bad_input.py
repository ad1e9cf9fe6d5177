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
