"""Paths built from data: prompt ids, categories, split and repo names, file names.

Prompt files come from other people (Hub datasets, LLM output, colleagues), so any
value that becomes part of a path is untrusted. Two rules keep such paths inside the
folders agfsync owns:

- `path_component(value)` turns any value into one safe file name: values that are
  already safe (letters, digits, `.`, `_`, `-`, at most 80 characters, not starting
  with `.` or `-`) are used as they are; any other value becomes a readable slug plus
  a digest of the whole value, so distinct values never share a name (`../x` and `x`
  get different folders). The name used is recorded where the path is (the rows'
  `image_paths`), so nothing has to be recomputed to find a file.
- `inside(root, relative)` resolves a relative path read from data and refuses one
  that leaves `root` (`..`, an absolute path, a symbolic link pointing out).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from agfsync.errors import ConfigurationError

SAFE_COMPONENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,79}")
_SLUG_CHARACTERS = re.compile(r"[^A-Za-z0-9._-]+")


def path_component(value: str) -> str:
    """A file name for `value`: itself when safe, else `<slug>-<digest>`."""
    if SAFE_COMPONENT.fullmatch(value) and value not in (".", ".."):
        return value
    slug = _SLUG_CHARACTERS.sub("_", value).strip("._-")[:40]
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{slug}-{digest}" if slug else digest


class UnsafePathError(ConfigurationError):
    """A path read from data points outside the folder it must stay in."""


def inside(root: Path, relative: str | Path) -> Path:
    """`root / relative`, resolved, and checked to stay inside `root`."""
    if not str(relative) or "\x00" in str(relative):
        raise UnsafePathError(f"Empty or invalid path {str(relative)!r} under {root}.")
    base = root.resolve()
    path = (base / relative).resolve()
    if path != base and base not in path.parents:
        raise UnsafePathError(
            f"Path {str(relative)!r} leaves {root}; a dataset's file paths must stay inside "
            "its folder (was the dataset edited by hand?)."
        )
    return path
