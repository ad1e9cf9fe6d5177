"""Finished work of a step, kept on disk so that a resumed run never redoes it.

A run that is killed, or that ends with some rows failed, is resumed by running
the same command again. The expensive steps (LLM calls, judging) record each
finished unit of work, a prompt or a batch of prompts, in a `Journal` keyed by
the unit's inputs; on the next run they take the recorded outputs instead of
calling the model again. Units that failed are not recorded, so they are retried.

A journal is a folder of small JSON files, one per key, each flushed to disk and
written atomically (`agfsync.atomic`): a crash at any moment leaves either no entry
or a complete one, never a torn file.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from agfsync.atomic import write_atomically


def journal_key(rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """A key for the work done on `rows`: their `columns`, in order, as canonical JSON.

    Two units of work share a key only when every input the step reads is equal, so a
    recorded output is never reused for different inputs.
    """
    values = [[row.get(column) for column in columns] for row in rows]
    return json.dumps(values, sort_keys=True, ensure_ascii=False, default=str)


class Journal:
    """Outputs of finished units of work, by key, in `folder` (created on first write)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _path(self, key: str) -> Path:
        return self.folder / f"{hashlib.sha256(key.encode()).hexdigest()}.json"

    def get(self, key: str) -> Any | None:
        """The value recorded for `key`, or None when that work is not finished."""
        path = self._path(key)
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except ValueError:  # not written by `put` (edited by hand): do the work again
            return None
        # A hash collision or a hand-edited file must not pass for this key's result.
        return entry["value"] if isinstance(entry, dict) and entry.get("key") == key else None

    def put(self, key: str, value: Any) -> None:
        """Record `value` (JSON-serializable; NaN allowed) as the output of `key`."""

        def write(partial: Path) -> None:
            with partial.open("w", encoding="utf-8") as handle:
                json.dump({"key": key, "value": value}, handle, ensure_ascii=False)
                handle.flush()
                os.fsync(handle.fileno())  # on disk, not only in the page cache

        write_atomically(self._path(key), write)
