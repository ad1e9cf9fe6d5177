"""Progress of long commands, one way for all of them: a rich bar on a terminal, plain
log lines elsewhere (CI logs, `nohup`, a file), so nothing goes silent for minutes.

    with progress("rendering", total=len(jobs)) as bar:
        for job in jobs:
            ...
            bar.advance(1, loss=0.41)
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

logger = logging.getLogger("agfsync.progress")

PLAIN_INTERVAL_S = 30.0
"""Off a terminal: at most one line per this many seconds (and at 25/50/75/100 %)."""


def _fields(values: dict[str, Any]) -> str:
    return " ".join(
        f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}"
        for key, value in values.items()
    )


class Progress:
    """Counts work done; `advance` also takes named values shown beside the count
    (loss, accuracy, ...). Reports items per second."""

    def __init__(self, description: str, total: int | None, unit: str, initial: int = 0) -> None:
        self.description = description
        self.total = total
        self.unit = unit
        self.done = initial
        self.initial = initial
        """Work done before this command (a resumed run): counted, not in the rate."""
        self.values: dict[str, Any] = {}
        self.started = time.monotonic()
        self._last_line = self.started
        self._next_quarter = 1
        self.logged = initial
        """The count of the last plain line."""
        self._bar: Any = None
        self._task: Any = None

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return (self.done - self.initial) / elapsed if elapsed > 0 else 0.0

    def rate_text(self) -> str:
        return f"{self.rate:.2f} {self.unit}/s"

    def advance(self, count: int = 1, **values: Any) -> None:
        self.done += count
        self.values.update(values)
        if self._bar is not None:
            self._bar.update(
                self._task,
                completed=self.done,
                rate=self.rate_text(),
                values=_fields(self.values),
            )
        else:
            self._maybe_log()

    def _maybe_log(self) -> None:
        now = time.monotonic()
        quarter = self.total and self.done * 4 >= self._next_quarter * self.total
        if quarter:
            while self.total and self.done * 4 >= self._next_quarter * self.total:
                self._next_quarter += 1
        if quarter or now - self._last_line >= PLAIN_INTERVAL_S:
            self._last_line = now
            self.log_line()

    def log_line(self) -> None:
        self.logged = self.done
        of = f"/{self.total}" if self.total is not None else ""
        extra = f", {_fields(self.values)}" if self.values else ""
        logger.info(
            "%s: %d%s %s (%s%s)",
            self.description,
            self.done,
            of,
            self.unit,
            self.rate_text(),
            extra,
        )


@contextmanager
def progress(
    description: str,
    total: int | None = None,
    *,
    unit: str = "items",
    initial: int = 0,
    terminal: bool | None = None,
) -> Iterator[Progress]:
    """A `Progress` for the block: a rich bar when standard error is a terminal (or
    `terminal` says so), else INFO lines on the `agfsync.progress` logger. While the bar
    is shown, log records are printed above it (`log_records_through`)."""
    state = Progress(description, total, unit, initial)
    on_terminal = sys.stderr.isatty() if terminal is None else terminal
    if not on_terminal:
        yield state
        if state.done != state.logged:  # the final count, unless just logged
            state.log_line()
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.progress import Progress as RichProgress

    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[rate]}"),
        TextColumn("{task.fields[values]}"),
    ]
    with (
        RichProgress(*columns, console=bar_console(), transient=False) as bar,
        log_records_through(bar.console),
    ):
        state._bar = bar
        state._task = bar.add_task(
            description, total=total, completed=initial, rate=state.rate_text(), values=""
        )
        yield state


def bar_console() -> Any:
    """The rich console progress bars draw on: standard error."""
    from rich.console import Console

    return Console(stderr=True)


@contextmanager
def log_records_through(console: Any) -> Iterator[None]:
    """For the block, the root logger's stream handlers that write to `console`'s file or
    to a terminal print their lines through `console` instead: above a live bar, not
    glued to its line. Their format is kept; file handlers are left alone."""
    from rich.file_proxy import FileProxy

    swapped: list[tuple[logging.StreamHandler[Any], Any]] = []
    for handler in logging.getLogger().handlers:
        if type(handler) is not logging.StreamHandler:  # not a file, not rich's own
            continue
        stream = handler.stream
        if isinstance(stream, FileProxy) or not _same_screen(stream, console):
            continue
        handler.setStream(FileProxy(console, stream))
        swapped.append((handler, stream))
    try:
        yield
    finally:
        for handler, stream in swapped:
            handler.setStream(stream)


def _same_screen(stream: Any, console: Any) -> bool:
    if stream is console.file:
        return True
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no such method, or a closed stream
        return False


STAGE_ATTRIBUTE = "agfsync_stage"
"""Log-record attribute carrying (stage, count) from a step process to the live count."""


def report_done(logger: logging.Logger, stage: str, count: int, message: str) -> None:
    """Log that a step finished `count` items of `stage` (say, 16 "images"): an INFO line
    in every log, and one more tick of the live count `agfsync generate` shows on a
    terminal (the record crosses distilabel's log queue with its extra attribute)."""
    logger.info(message, extra={STAGE_ATTRIBUTE: (stage, count)})


class StageCounts(logging.Handler):
    """Sums the `report_done` records of a run, per stage, for the live count line."""

    def __init__(self, totals: dict[str, int | None]) -> None:
        super().__init__(logging.INFO)
        self.totals = totals
        self.counts = dict.fromkeys(totals, 0)
        self.live: Any = None

    def emit(self, record: logging.LogRecord) -> None:
        stage = getattr(record, STAGE_ATTRIBUTE, None)
        if stage is None:
            return
        name, count = stage
        self.counts[name] = self.counts.get(name, 0) + int(count)
        if self.live is not None:
            self.live.update(self.line())

    def line(self) -> str:
        parts = []
        for name, count in self.counts.items():
            total = self.totals.get(name)
            parts.append(f"{name} {count}/{total}" if total is not None else f"{name} {count}")
        return " · ".join(parts)


@contextmanager
def live_stage_counts(
    totals: dict[str, int | None], *, terminal: bool | None = None
) -> Iterator[list[logging.Handler]]:
    """On a terminal, a live line of per-stage counts below distilabel's log (which goes
    through the same rich console); yields the handler to pass to `pipeline.run`.
    Elsewhere nothing: the steps' own INFO lines carry the counts."""
    if not (sys.stderr.isatty() if terminal is None else terminal):
        yield []
        return
    from rich import get_console
    from rich.live import Live

    _leave_the_live_display_in_forked_children()
    counter = StageCounts(totals)
    with Live(counter.line(), console=get_console(), refresh_per_second=2) as live:
        counter.live = live
        yield [counter]


_AT_FORK_REGISTERED = False


def _leave_the_live_display_in_forked_children() -> None:
    """distilabel forks the step processes while the live line runs. Its stdout and
    stderr are then rich's proxies, which write through the live display's lock; a fork
    while the refresh thread holds that lock leaves it held forever in the child, and
    the child's first write (a progress bar while a model loads) would hang the run. So
    a forked child writes to the real streams."""
    global _AT_FORK_REGISTERED
    if not _AT_FORK_REGISTERED:
        os.register_at_fork(after_in_child=_real_streams)
        _AT_FORK_REGISTERED = True


def _real_streams() -> None:
    from rich.file_proxy import FileProxy

    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if isinstance(stream, FileProxy):
            setattr(sys, name, stream.rich_proxied_file)
