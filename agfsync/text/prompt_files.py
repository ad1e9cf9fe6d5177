"""Reading prompt files: the shipped offline sample or a user's own JSONL/JSON."""

from __future__ import annotations

import hashlib
import json
import unicodedata
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from agfsync.errors import ConfigurationError
from agfsync.input_files import read_text
from agfsync.safe_paths import path_component
from agfsync.text.qa import QAPair

SAMPLE_PROMPTS_PATH = Path(__file__).parents[1] / "data" / "offline_prompts.jsonl"
"""24 hand-written prompts with QA pairs, two per AGFSync category."""

REQUIRED_FIELDS = ("prompt", "category")


def prompt_id_for(category: str, prompt: str) -> str:
    """A stable id from the text, used when a prompt file gives none.

    Stable ids make image file names and seeds reproducible across runs.
    """
    return hashlib.sha1(f"{category}\n{prompt}".encode()).hexdigest()[:12]


def _read_rows(path: Path) -> list[tuple[str, Any]]:
    """(where, value) of every row: `path:line` for JSONL, `path item N` for JSON."""
    text = read_text(path)
    if path.suffix == ".json":
        try:
            items = json.loads(text)
        except json.JSONDecodeError as error:
            raise ConfigurationError(
                f"{path}:{error.lineno} is not valid JSON ({error.msg})."
            ) from None
        if not isinstance(items, list):
            raise ConfigurationError(f"{path} must hold a JSON list of objects.")
        return [(f"{path} item {index}", item) for index, item in enumerate(items, start=1)]
    rows: list[tuple[str, Any]] = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append((f"{path}:{line_number}", json.loads(line)))
        except json.JSONDecodeError as error:
            raise ConfigurationError(
                f"{path}:{line_number} is not valid JSON ({error.msg}); "
                "each line must be one JSON object."
            ) from None
    return rows


def _text_field(where: str, row: dict[str, Any], name: str) -> str:
    value = row.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ConfigurationError(
            f"{where} lacks {name}; every row needs {', '.join(REQUIRED_FIELDS)} as non-empty text."
        )
    if not isinstance(value, str):
        raise ConfigurationError(
            f"{where}: {name} must be text, not {_json_type(value)} ({json.dumps(value)[:40]})."
        )
    return value


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, str):
        return "text"
    return type(value).__name__


def _prompt_id(where: str, row: dict[str, Any]) -> str:
    """The row's id as given (text or an integer), else one derived from its text."""
    value = row.get("prompt_id")
    if value is None:
        return prompt_id_for(row["category"], row["prompt"])
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ConfigurationError(
            f"{where}: prompt_id must be text or an integer, not {_json_type(value)}; fix it or "
            "leave it out (a stable id is then derived from the prompt)."
        )
    text = str(value)
    if not text.strip() or any(unicodedata.category(char) == "Cc" for char in text):
        raise ConfigurationError(
            f"{where}: prompt_id {text!r} is blank or holds control characters; fix it or leave "
            "it out (a stable id is then derived from the prompt)."
        )
    return text


def load_prompt_records(
    path: str | Path | None = None,
    *,
    num_prompts: int | None = None,
    require_qa_pairs: bool = False,
) -> list[dict[str, Any]]:
    """Read and validate a prompt file (JSONL, or `.json` holding a list); with
    `num_prompts`, return its first ones only. With `require_qa_pairs` (a preset whose
    judges need QA pairs and that writes none itself), a returned row without them is
    refused with its line.

    Each row is an object with `prompt` and `category` (non-empty text); `prompt_id`
    (text or an integer) is derived when absent, `prompt_model` defaults to `human`,
    and `qa_pairs`, when present, must follow the `QAPair` schema. Ids must be unique,
    also as file names (`agfsync.safe_paths.path_component`, ignoring case), since each
    names its images' folder. Raises `ConfigurationError` naming the file, the line and
    the fix for a missing, unreadable, empty or malformed file.
    """
    source = Path(path) if path is not None else SAMPLE_PROMPTS_PATH
    if source.is_dir():
        raise ConfigurationError(
            f"Prompt file {source} is a folder; pass a JSONL file (see agfsync/data/README.md "
            "for the format)."
        )
    if not source.is_file():
        raise ConfigurationError(
            f"Prompt file {source} does not exist; pass an existing JSONL file "
            "(see agfsync/data/README.md for the format)."
        )
    rows = _read_rows(source)
    if not rows:
        raise ConfigurationError(
            f"Prompt file {source} holds no prompts; add at least one JSON line "
            'such as {"prompt": "...", "category": "..."}.'
        )
    records = []
    wheres = []
    first_seen: dict[str, str] = {}
    for where, row in rows:
        if not isinstance(row, dict):
            raise ConfigurationError(
                f"{where} is {_json_type(row)}, not a JSON object such as "
                '{"prompt": "...", "category": "..."}.'
            )
        prompt = _text_field(where, row, "prompt")
        category = _text_field(where, row, "category")
        raw_pairs = row.get("qa_pairs")
        if raw_pairs is not None and not isinstance(raw_pairs, list):
            raise ConfigurationError(
                f"{where}: qa_pairs must be a list of question objects, not "
                f"{_json_type(raw_pairs)}."
            )
        try:
            qa_pairs = [QAPair.model_validate(pair).model_dump() for pair in raw_pairs or []]
        except ValidationError as error:
            raise ConfigurationError(
                f"{where} has an invalid qa_pairs entry: "
                f"{error.errors()[0]['loc']} {error.errors()[0]['msg']}."
            ) from None
        prompt_id = _prompt_id(where, {**row, "prompt": prompt, "category": category})
        folder = path_component(prompt_id).casefold()
        if folder in first_seen:
            raise ConfigurationError(
                f"{where} repeats prompt_id {prompt_id!r} of {first_seen[folder]} (ids must be "
                "unique, also ignoring case, since each names a folder of images)."
            )
        first_seen[folder] = where
        records.append(
            {
                "prompt_id": prompt_id,
                "prompt": prompt,
                "category": category,
                "prompt_model": str(row.get("prompt_model") or "human"),
                "qa_pairs": qa_pairs,
            }
        )
        wheres.append(where)
    records, wheres = records[:num_prompts], wheres[:num_prompts]
    if require_qa_pairs:
        _check_qa_pairs(source, records, wheres)
    return records


def _check_qa_pairs(source: Path, records: list[dict[str, Any]], wheres: list[str]) -> None:
    """Every row has QA pairs, else the lines (or items) of those without are named."""
    missing = [w for record, w in zip(records, wheres, strict=True) if not record["qa_pairs"]]
    if not missing:
        return
    numbers = [where.rsplit(":" if source.suffix != ".json" else " ", 1)[1] for where in missing]
    noun = "item" if source.suffix == ".json" else "line"
    shown = ", ".join(numbers[:10]) + (
        f" and {len(numbers) - 10} more" if len(numbers) > 10 else ""
    )
    raise ConfigurationError(
        f"{source} {noun}{'s' if len(numbers) > 1 else ''} {shown}: no qa_pairs, which this "
        "preset's VQA judge needs and none of its steps writes; add qa_pairs to those rows "
        "(`agfsync generate --preset text-image-preferences --prompts FILE` writes them)."
    )
