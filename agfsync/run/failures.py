"""Rows of a run that failed in a way that running the same command again can fix.

Every step keeps a row it could not finish and records why in one of its own
columns: a request that failed after the client's retries, an image that could not
be rendered or read, a judge that raised (a step that crashes on a batch leaves its
outputs None, which counts too). Such a row is not final: a step does not record a
unit of work in its journal while one of its rows has a failure in a column the step
reads or writes, and the next run of the same command redoes the steps that wrote
those columns while reusing everything else. Data-driven outcomes are
final and not listed here: a margin below `--min-margin`, no candidate passing the
thresholds, a category whose LLM answers repeated themselves.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

FAILED_STEP = "the step failed on this row; see the log"


class FailureKind(StrEnum):
    """Failures a step records on a row, by kind: the kind starts the message, so the
    dataset keeps plain strings and a resumed run reads the kind back with `of`."""

    REQUEST_FAILED = "request failed"
    """An LLM or API request failed after the client's retries (or the step's time
    limit): the next run asks again."""
    UNREADABLE_IMAGE = "unreadable image"
    """A judge could not read an image file: the image step renders it again."""

    def message(self, detail: object) -> str:
        """The recorded message: `<kind>: <detail>`."""
        return f"{self.value}: {detail}"

    @classmethod
    def of(cls, message: str | None) -> FailureKind | None:
        """The kind a recorded message starts with; None for other messages."""
        return next((kind for kind in cls if (message or "").startswith(kind.value)), None)


@dataclass(frozen=True)
class RowFailure:
    column: str
    """The column recording the failure: the step that writes it is the one to redo."""
    reason: str


def row_failures(row: Mapping[str, Any]) -> list[RowFailure]:
    """The retryable failures recorded on `row`."""
    failures = []
    for column in ("prompt_error", "rewrite_error", "generation_error", "export_error"):
        if row.get(column):
            failures.append(RowFailure(column, row[column]))
    if row.get("prompt") and row.get("qa_error"):
        failures.append(RowFailure("qa_error", row["qa_error"]))
    # distilabel fills the outputs of a step that raised with None and goes on.
    for column in ("qa_pairs", "image_paths", "weighted_scores"):
        if column in row and row[column] is None:
            failures.append(RowFailure(column, f"no {column} ({FAILED_STEP})"))
    explained = ("prompt_generation_notes", "prompt_error", "rewrite_error")
    if "prompt" in row and row["prompt"] is None and not any(row.get(c) for c in explained):
        failures.append(RowFailure("prompt", f"no prompt ({FAILED_STEP})"))
    for error in row.get("judging_errors") or []:
        if error:
            # A file that cannot be read is rendered again, then judged again.
            unreadable = FailureKind.of(error) is FailureKind.UNREADABLE_IMAGE
            failures.append(RowFailure("image_paths" if unreadable else "judging_errors", error))
            break
    if "chosen_index" in row and row["chosen_index"] is None and not row.get("pair_error"):
        failures.append(RowFailure("chosen_index", f"no pair ({FAILED_STEP})"))
    return failures
