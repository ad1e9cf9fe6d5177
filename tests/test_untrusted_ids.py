"""Ids and names from data never leave the folders agfsync owns.

A prompt id becomes a folder of images. Ids are untrusted input (prompt files come
from other people), so an id that is not a plain file name gets a folder named after
it plus a digest (`agfsync.safe_paths.path_component`), recorded in `image_paths`.
"""

import io
import json
import re
from collections.abc import Sequence
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from agfsync.errors import ConfigurationError
from agfsync.safe_paths import UnsafePathError, inside, path_component
from agfsync.text.prompt_files import load_prompt_records
from tests.helpers import run_command


class TestPathComponent:
    @pytest.mark.parametrize("value", ["landscapes-001", "a1b2c3", "x_y.z", "42"])
    def test_a_plain_name_is_kept(self, value: str) -> None:
        assert path_component(value) == value

    @pytest.mark.parametrize(
        "value", ["../../../../tmp/x", "x/../../y", "./alias", "alias/.", "..", ".", "a b", "é"]
    )
    def test_anything_else_is_one_safe_name(self, value: str) -> None:
        name = path_component(value)
        assert "/" not in name and not name.startswith(".") and name not in (".", "..")
        assert len(name) <= 80

    def test_distinct_values_never_share_a_name(self) -> None:
        values = ["alias", "./alias", "alias/.", "alias/", "Alias?", "alias?"]
        assert len({path_component(value) for value in values}) == len(values)

    def test_long_values_are_shortened(self) -> None:
        assert len(path_component("x" * 300)) <= 80


class TestInside:
    def test_a_path_below_the_root(self, tmp_path: Path) -> None:
        assert inside(tmp_path, "a/b.png") == (tmp_path / "a" / "b.png").resolve()

    @pytest.mark.parametrize("relative", ["../x", "a/../../x", "/etc/passwd", ""])
    def test_a_path_that_leaves_the_root(self, tmp_path: Path, relative: str) -> None:
        with pytest.raises(UnsafePathError):
            inside(tmp_path, relative)

    def test_a_link_that_points_out(self, tmp_path: Path) -> None:
        (tmp_path / "root").mkdir()
        (tmp_path / "root" / "link").symlink_to(tmp_path)
        with pytest.raises(UnsafePathError):
            inside(tmp_path / "root", "link/secret.txt")


def write_jsonl(path: Path, rows: Sequence[object]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


class TestPromptFileIds:
    def test_duplicate_ids_name_both_lines(self, tmp_path: Path) -> None:
        rows = [{"prompt_id": "a", "prompt": f"p{i}", "category": "c"} for i in range(2)]
        with pytest.raises(ConfigurationError, match=r"prompts.jsonl:2 repeats .*prompts.jsonl:1"):
            load_prompt_records(write_jsonl(tmp_path / "prompts.jsonl", rows))

    def test_ids_that_differ_only_in_case_share_a_folder(self, tmp_path: Path) -> None:
        rows = [
            {"prompt_id": "Alias", "prompt": "p1", "category": "c"},
            {"prompt_id": "alias", "prompt": "p2", "category": "c"},
        ]
        with pytest.raises(ConfigurationError, match="also ignoring case"):
            load_prompt_records(write_jsonl(tmp_path / "prompts.jsonl", rows))

    def test_spellings_of_one_path_are_distinct_ids(self, tmp_path: Path) -> None:
        rows = [
            {"prompt_id": pid, "prompt": f"p{i}", "category": "c"}
            for i, pid in enumerate(["alias", "./alias", "alias/."])
        ]
        records = load_prompt_records(write_jsonl(tmp_path / "prompts.jsonl", rows))
        assert [record["prompt_id"] for record in records] == ["alias", "./alias", "alias/."]

    def test_an_integer_id_becomes_text(self, tmp_path: Path) -> None:
        rows = [{"prompt_id": 7, "prompt": "p", "category": "c"}]
        assert load_prompt_records(write_jsonl(tmp_path / "p.jsonl", rows))[0]["prompt_id"] == "7"

    @pytest.mark.parametrize(
        ("prompt_id", "message"),
        [
            (["a"], "prompt_id must be text or an integer, not a list"),
            (True, "prompt_id must be text or an integer, not a boolean"),
            ("a\u0000b", "blank or holds control characters"),
            ("   ", "blank or holds control characters"),
        ],
    )
    def test_unusable_ids_are_refused_with_the_line(
        self, tmp_path: Path, prompt_id: object, message: str
    ) -> None:
        rows = [
            {"prompt": "ok", "category": "c"},
            {"prompt_id": prompt_id, "prompt": "p", "category": "c"},
        ]
        with pytest.raises(ConfigurationError, match=r"p\.jsonl:2") as error:
            load_prompt_records(write_jsonl(tmp_path / "p.jsonl", rows))
        assert message in str(error.value)


class TestHostileIdsEndToEnd:
    """The offline preset on ids that try to escape or alias each other: every image
    stays under the run's artifacts, each prompt gets its own images, and a
    stranger's files named by an id are neither overwritten nor taken as candidates."""

    def test_no_id_reaches_outside_the_run(self, tmp_path: Path) -> None:
        victim = tmp_path / "victim"
        victim.mkdir()
        stranger = Image.new("RGB", (8, 8), "red")
        for index in range(4):
            stranger.save(victim / f"{index}.png")
        before = {path.name: path.read_bytes() for path in victim.iterdir()}
        escape = "../" * 30 + str(victim).lstrip("/")
        ids = [escape, "x/" + escape, "alias", "./alias", "alias/.", "y" * 300]
        sample = load_prompt_records()
        rows = [
            {**{k: sample[i][k] for k in ("prompt", "category", "qa_pairs")}, "prompt_id": pid}
            for i, pid in enumerate(ids)
        ]
        prompts = write_jsonl(tmp_path / "hostile.jsonl", rows)
        cache = tmp_path / "cache"
        result = run_command(
            ["agfsync", "generate", "--prompts", str(prompts), "-o", str(tmp_path / "out")],
            tmp_path,
            {"DISTILABEL_CACHE_DIR": str(cache)},
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert {path.name: path.read_bytes() for path in victim.iterdir()} == before

        table = pq.read_table(tmp_path / "out" / "data").to_pylist()
        assert sorted(row["prompt_id"] for row in table) == sorted(ids)
        folders = {row["prompt_id"]: {Path(p).parent for p in row["image_paths"]} for row in table}
        assert all(len(found) == 1 for found in folders.values())
        assert len({next(iter(found)) for found in folders.values()}) == len(ids)
        artifacts = (tmp_path / "out" / "artifacts").resolve()
        for row in table:
            for relative in row["image_paths"]:
                assert (artifacts / relative).resolve().is_relative_to(artifacts)
            chosen = Image.open(io.BytesIO(row["jpg_0"])).convert("RGB")
            assert chosen.tobytes() != stranger.resize(chosen.size).tobytes()


class TestTextFromDataInTheCard:
    """HTML, markdown table syntax and newlines in a prompt or a category are shown
    literally on the card, on one line, and break none of its tables."""

    def test_card_cells_are_inert(self, tmp_path: Path) -> None:
        sample = load_prompt_records()[:2]
        hostile = [
            {
                "prompt_id": "html",
                "prompt": 'A cat <img src=x onerror="alert(1)"> | col | ![x](http://evil/x.png)',
                "category": "Cats | <b>bold</b>\nsecond line",
                "qa_pairs": sample[0]["qa_pairs"],
            },
            {**{k: sample[1][k] for k in ("prompt", "category", "qa_pairs")}, "prompt_id": "ok"},
        ]
        prompts = write_jsonl(tmp_path / "hostile.jsonl", hostile)
        result = run_command(
            ["agfsync", "generate", "--prompts", str(prompts), "-o", str(tmp_path / "out")],
            tmp_path,
            {"DISTILABEL_CACHE_DIR": str(tmp_path / "cache")},
        )
        assert result.returncode == 0, result.stderr[-3000:]
        card = (tmp_path / "out" / "README.md").read_text()
        assert "<img" not in card and "<b>" not in card
        assert not re.search(r"(?<!\\)\]\(http://evil", card)  # no link or image made
        assert (
            "&lt;img src=x onerror=" in card
            and "Cats \\| &lt;b&gt;bold&lt;/b&gt; second line" in card
        )
        for table in card.split("\n\n"):
            rows = [line for line in table.splitlines() if line.startswith("|")]
            cells = {len(re.split(r"(?<!\\)\|", row)) for row in rows}
            assert len(cells) <= 1, table  # every row of a table has the same cells
