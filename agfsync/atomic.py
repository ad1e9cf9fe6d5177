"""Files that appear all at once or not at all."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path


def write_atomically(
    path: Path, write: Callable[[Path], object], *, partial_dir: Path | None = None
) -> None:
    """Create or replace `path` with what `write(partial)` writes to a file beside it.

    The partial file is renamed into place only once `write` has returned, so a reader
    never sees half a file and a crash at any moment leaves the old file or the new one.
    Its name carries the process and thread ids, so concurrent writers (replicas of a
    step, writer threads) do not rename each other's half-written files. `partial_dir`
    (on the same file system) keeps it out of a folder whose every file is read, such as
    distilabel's outputs.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = f"{os.getpid()}-{threading.get_ident()}"
    partial = (partial_dir or path.parent) / f".{path.name}.{writer}.partial"
    partial.parent.mkdir(parents=True, exist_ok=True)
    try:
        write(partial)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
