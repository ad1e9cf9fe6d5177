"""Reading prompt files: the shipped offline sample or a user's own JSONL/JSON."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from agfsync.errors import ConfigurationError
from agfsync.qa import QAPair

SAMPLE_PROMPTS_PATH = Path(__file__).parent / "data" / "offline_prompts.jsonl"
"""24 hand-written prompts with QA pairs, two per AGFSync category."""

REQUIRED_FIELDS = ("prompt", "category")


def prompt_id_for(category: str, prompt: str) -> str:
    """A stable id from the text, used when a prompt file gives none.

    Stable ids make image file names and seeds reproducible across runs.
    """
    return hashlib.sha1(f"{category}\n{prompt}".encode()).hexdigest()[:12]


def _read_rows(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        rows = json.loads(text)
        if not isinstance(rows, list):
            raise ConfigurationError(f"{path} must hold a JSON list of objects.")
        return rows
    rows = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise ConfigurationError(
                f"{path}:{line_number} is not valid JSON ({error.msg}); "
                "each line must be one JSON object."
            ) from error
    return rows


def load_prompt_records(path: str | Path | None = None) -> list[dict[str, Any]]:
    """Read and validate a prompt file (JSONL, or `.json` holding a list).

    Each row needs `prompt` and `category`; `prompt_id` is derived when absent,
    `prompt_model` defaults to `human`, and `qa_pairs`, when present, must follow
    the `QAPair` schema. Raises `ConfigurationError` naming the file, the row and
    the fix for a missing, empty or malformed file.
    """
    source = Path(path) if path is not None else SAMPLE_PROMPTS_PATH
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
    seen_ids: set[str] = set()
    for index, row in enumerate(rows, start=1):
        missing = [name for name in REQUIRED_FIELDS if not row.get(name)]
        if missing:
            raise ConfigurationError(
                f"Row {index} of {source} lacks {', '.join(missing)}; every row "
                f"needs {', '.join(REQUIRED_FIELDS)}."
            )
        try:
            qa_pairs = [
                QAPair.model_validate(pair).model_dump() for pair in row.get("qa_pairs", [])
            ]
        except ValidationError as error:
            raise ConfigurationError(
                f"Row {index} of {source} has an invalid qa_pairs entry: "
                f"{error.errors()[0]['loc']} {error.errors()[0]['msg']}."
            ) from error
        prompt_id = str(row.get("prompt_id") or prompt_id_for(row["category"], row["prompt"]))
        if prompt_id in seen_ids:
            raise ConfigurationError(
                f"Row {index} of {source} repeats prompt_id {prompt_id!r}; ids must be unique."
            )
        seen_ids.add(prompt_id)
        records.append(
            {
                "prompt_id": prompt_id,
                "prompt": row["prompt"],
                "category": row["category"],
                "prompt_model": row.get("prompt_model", "human"),
                "qa_pairs": qa_pairs,
            }
        )
    return records
