"""Reading the text files a user hands agfsync (prompts, categories, weights, estimate
tables): a file that is not UTF-8 or not YAML is refused with one line naming the file,
the line and the fix, never a decoder's traceback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def decode_utf8(data: bytes, path: Path) -> str:
    """`data`, the content of `path`, as text; a byte that is not UTF-8 is refused with
    its line and how to convert the file."""
    from agfsync.errors import ConfigurationError

    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        bad_line = data[: error.start].count(b"\n") + 1
        raise ConfigurationError(
            f"{path}:{bad_line} is not UTF-8 text (byte {data[error.start]:#04x}); save the "
            "file as UTF-8 (for Latin-1: iconv -f latin1 -t utf-8 IN > OUT)."
        ) from None


def read_text(path: Path) -> str:
    """The UTF-8 text of `path` (see `decode_utf8`)."""
    return decode_utf8(path.read_bytes(), path)


def parse_yaml(text: str, path: Path, expected: str) -> Any:
    """`text` (of `path`) read as YAML, which JSON is too; invalid YAML is refused with its
    line, the problem and `expected` (what the file should hold)."""
    from agfsync.errors import ConfigurationError

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(error, "problem", None) or " ".join(str(error).split())
        raise ConfigurationError(f"{where} is not valid YAML ({problem}); {expected}.") from None
