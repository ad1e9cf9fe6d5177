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
from typing import Any, ClassVar

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


FAILURE_COLUMNS: dict[str, type[RecordsFailures]] = {}
"""Failure column -> the step class that declares it (see `RecordsFailures`)."""


class RecordsFailures:
    """Mixin of a step that keeps a row it could not finish, with the reason in its
    `failure_column` (None once the row is complete). Declaring the column here is
    what makes a resumed run notice the failure and redo the step, and only it."""

    failure_column: ClassVar[str]
    """The output column holding why this step could not finish the row: a string, or
    (for per-image work) a list with one entry per image."""
    final_failures: ClassVar[tuple[str, ...]] = ()
    """Reasons a re-run cannot change (the row's input is missing upstream)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        column = cls.__dict__.get("failure_column")
        if column is not None:
            FAILURE_COLUMNS[column] = cls


@dataclass(frozen=True)
class RowFailure:
    column: str
    """The column recording the failure: the step that writes it is the one to redo."""
    reason: str


def row_failures(row: Mapping[str, Any]) -> list[RowFailure]:
    """The retryable failures recorded on `row`."""
    import agfsync.steps  # noqa: F401  (importing the steps declares their columns)

    failures = []
    for column, reason in row.items():  # in pipeline order: upstream columns come first
        declaring = FAILURE_COLUMNS.get(column)
        if declaring is None:
            continue
        if isinstance(reason, list):  # one entry per image: the first failure says it
            reason = next((entry for entry in reason if entry), None)
            if reason and FailureKind.of(reason) is FailureKind.UNREADABLE_IMAGE:
                # A file that cannot be read is rendered again, then judged again.
                failures.append(RowFailure("image_paths", reason))
                continue
        if reason and reason not in declaring.final_failures:
            failures.append(RowFailure(column, reason))
    # distilabel fills the outputs of a step that raised with None and goes on.
    for column in ("qa_pairs", "image_paths", "weighted_scores"):
        if column in row and row[column] is None:
            failures.append(RowFailure(column, f"no {column} ({FAILED_STEP})"))
    explained = ("prompt_generation_notes", "prompt_error", "rewrite_error")
    if "prompt" in row and row["prompt"] is None and not any(row.get(c) for c in explained):
        failures.append(RowFailure("prompt", f"no prompt ({FAILED_STEP})"))
    if "chosen_index" in row and row["chosen_index"] is None and not row.get("pair_error"):
        failures.append(RowFailure("chosen_index", f"no pair ({FAILED_STEP})"))
    return failures
