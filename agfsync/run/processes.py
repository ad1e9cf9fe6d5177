"""The processes of a run: one run per cache, no orphans, a prompt stop.

distilabel runs each step in a process forked from the main one. Three things keep a
run from hurting other runs or the machine:

- `RunLock`: two runs of one pipeline share its cache folder (distilabel keys it by
  the pipeline's name and settings, not by the output folder) and would overwrite
  each other's bookkeeping. A run holds an exclusive lock on the pipeline's cache
  folder; a second run stops at once, naming the first one (its PID, output folder and
  start time). The lock is a POSIX record lock: the system releases it when the holder
  dies, however it dies, so a stale lock cannot block anyone.
- `children_die_with_this_process`: a step process whose main process is gone (killed
  with SIGKILL, the out-of-memory killer) would keep its GPU memory and go on writing
  to the cache; each process forked by the main one asks the kernel to kill it when
  the main process dies (`PR_SET_PDEATHSIG`).
- `stop_promptly_on_interrupt`: distilabel's Ctrl-C waits for every batch in flight
  to finish, which against a hanging LLM server takes minutes. agfsync stops the step
  processes at once instead; everything finished is already on disk (journals, atomic
  image files), so the same command resumes from there.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import importlib
import json
import multiprocessing
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from multiprocessing.pool import TERMINATE
from pathlib import Path
from typing import IO, Any

from agfsync.errors import ConfigurationError

LOCK_FILE = "agfsync-run.lock"
_PR_SET_PDEATHSIG = 1


def is_alive(pid: int | None) -> bool:
    """Whether a process with this id exists (on this machine)."""
    if pid is None or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """An exclusive claim on a folder for the duration of a run (see the module)."""

    def __init__(self, folder: Path, *, about: dict[str, Any], what: str) -> None:
        self.path = folder / LOCK_FILE
        self.about = about
        self.what = what
        self._handle: IO[str] | None = None

    def __enter__(self) -> RunLock:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = self.path.open("a+", encoding="utf-8")
        except OSError as error:
            raise ConfigurationError(
                f"Cannot write to {self.what}: {error.strerror or error}; set "
                "DISTILABEL_CACHE_DIR to a folder you can write to."
            ) from None
        try:
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            handle.close()
            if error.errno not in (errno.EACCES, errno.EAGAIN):
                raise
            raise ConfigurationError(self._held_message()) from None
        record = {
            **self.about,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(record) + "\n")
        handle.flush()
        self._handle = handle
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.close()  # releases the lock
            self._handle = None

    def _held_message(self) -> str:
        try:
            holder = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            holder = {}
        described = ", ".join(
            f"{key} {holder[key]}" for key in ("pid", "output", "started") if key in holder
        )
        return (
            f"Another agfsync run is using {self.what} ({described or 'details unknown'}); "
            "wait for it to finish or stop it, or give this run its own cache with "
            "DISTILABEL_CACHE_DIR."
        )


_main_pid: int | None = None


def _die_with_main_process() -> None:
    """Runs in each forked child: be killed when the main process dies."""
    if _main_pid is None or os.getppid() != _main_pid:
        return  # a grandchild (forked by a step process): left to its parent
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return  # not Linux: no parent-death signal
    if os.getppid() != _main_pid:  # the main process died while this one was forked
        os._exit(1)


def children_die_with_this_process() -> None:
    """Make every process this one forks from now on die when this one dies."""
    global _main_pid
    if _main_pid == os.getpid():
        return
    _main_pid = os.getpid()
    os.register_at_fork(after_in_child=_die_with_main_process)


def import_before_fork(pipeline: Any) -> None:
    """Import the libraries of the pipeline's steps (`shared_imports`) in this process.
    distilabel forks one process per step; what is imported before the fork is imported
    once and shared, instead of once in each step process that needs it (diffusers and
    transformers take seconds of CPU to import)."""
    if multiprocessing.get_start_method() != "fork":
        return
    for name in pipeline.dag:
        for module in getattr(pipeline.dag.get_step(name)["step"], "shared_imports", ()):
            importlib.import_module(module)


def kill_children() -> None:
    """SIGKILL every process this one started with multiprocessing."""
    for child in multiprocessing.active_children():
        with suppress(ProcessLookupError):
            os.kill(child.pid or 0, signal.SIGKILL)


@contextmanager
def stop_promptly_on_interrupt(pipeline: Any) -> Iterator[None]:
    """While `pipeline.run` runs, Ctrl-C (SIGINT) and SIGTERM kill the step processes
    at once and raise KeyboardInterrupt in the main process, instead of distilabel's
    wait for the batches in flight."""

    def stop(signum: int, frame: Any) -> None:
        pool = getattr(pipeline, "_pool", None)
        if pool is not None:
            # No new workers in place of the ones killed below.
            pool._worker_handler._state = TERMINATE
            # A worker killed while waiting for a task holds the pool's queue lock, so
            # the pool's own terminate (run on the way out) would wait for it forever;
            # the workers are gone already.
            pool.terminate = lambda: None
        kill_children()
        # The pipeline's threads now fail talking to dead processes: expected, silent.
        threading.excepthook = lambda args: None
        raise KeyboardInterrupt

    def install() -> Any:
        signal.signal(signal.SIGTERM, stop)
        return signal.signal(signal.SIGINT, stop)

    previous = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    pipeline._handle_keyboard_interrupt = install
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous[0])
        signal.signal(signal.SIGTERM, previous[1])
