"""Long commands say where they are: plain lines off a terminal, and on a terminal
`agfsync generate` keeps a live per-stage count (checked on a real pseudo-terminal)."""

import fcntl
import io
import logging
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import pytest

from agfsync.progress import StageCounts, live_stage_counts, progress, report_done
from tests.helpers import BIN_DIR
from tests.test_train_data import write_colour_preference_dataset


def test_plain_lines_give_quarters_the_final_count_rate_and_values(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="agfsync.progress")
    with progress("judging", total=8, unit="images", terminal=False) as bar:
        for _ in range(8):
            bar.advance(1, loss=0.5)
    lines = [record.getMessage() for record in caplog.records]
    assert [line.split(" (")[0] for line in lines] == [
        "judging: 2/8 images",
        "judging: 4/8 images",
        "judging: 6/8 images",
        "judging: 8/8 images",
    ]
    assert re.fullmatch(r"judging: 8/8 images \(\d+\.\d+ images/s, loss 0\.5\)", lines[-1])


def test_resumed_work_counts_but_is_not_in_the_rate(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="agfsync.progress")
    with progress("training", total=10, unit="steps", initial=9, terminal=False) as bar:
        assert bar.rate == 0.0
        bar.advance()
    assert caplog.records[-1].getMessage().startswith("training: 10/10 steps")


COLOURS = re.compile(r"\x1b\[[0-9;]*m")
CURSOR = re.compile(r"\x1b\[[0-9;?]*[A-Za-ln-z]|[\r\n]")
"""Any cursor movement, erasure, carriage return or newline."""


def screen_lines(output: str) -> list[str]:
    """The runs of text a terminal shows between cursor moves, colours removed: a log
    line written into a bar's line (no cursor move between them) stays one run."""
    return [line for line in CURSOR.split(COLOURS.sub("", output)) if line.strip()]


def test_the_bar_shows_the_rate_and_log_lines_go_above_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a terminal: the bar has a steps/s column, and a log record written while the
    bar is live is a line of its own, never glued to the bar's line."""
    from rich.console import Console

    screen = io.StringIO()
    console = Console(force_terminal=True, file=screen, width=160)
    monkeypatch.setattr("agfsync.progress.bar_console", lambda: console)
    handler = logging.StreamHandler(screen)  # as `agfsync.logs` sets it up, on that screen
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    # Only this handler on the root logger, as in a command (handlers earlier tests of
    # this process left there, their streams closed since, are not the code under test).
    monkeypatch.setattr(logging.getLogger(), "handlers", [handler])
    logger = logging.getLogger("agfsync.train")
    monkeypatch.setattr(logger, "level", logging.INFO)
    with progress("training", total=3, unit="steps", terminal=True) as bar:
        bar.advance(1, loss=0.5, lr=5.392e-06)
        logger.info("Saved checkpoint checkpoint-1")
        bar.advance(2, loss=0.25)
    assert handler.stream is screen  # given back after the bar
    lines = screen_lines(screen.getvalue())
    logged = [line for line in lines if "Saved checkpoint" in line]
    assert logged == ["INFO agfsync.train: Saved checkpoint checkpoint-1"], lines
    assert re.search(r"3/3 .* \d+\.\d+ steps/s loss 0\.25 lr 5\.392e-06", lines[-1]), lines


def test_stage_counts_sum_the_steps_reports_across_a_log_queue() -> None:
    counter = StageCounts({"images": 16, "pairs": None})
    logger = logging.getLogger("distilabel.step.test")
    logger.addHandler(counter)
    logger.setLevel(logging.INFO)
    try:
        report_done(logger, "images", 8, "8 images")
        report_done(logger, "images", 8, "8 images")
        report_done(logger, "pairs", 2, "2 pairs")
        logger.info("an ordinary line")
    finally:
        logger.removeHandler(counter)
    assert counter.line() == "images 16/16 · pairs 2"


def test_a_process_forked_under_the_live_count_writes_without_waiting(monkeypatch) -> None:
    """distilabel forks its step processes while the live line runs; a fork while the
    refresh thread holds the display's lock must not leave the child's writes waiting
    for it (a run once hung here, the judge's model-loading bar its first write)."""
    from rich.console import Console

    monkeypatch.setattr("rich._console", Console(force_terminal=True, file=io.StringIO()))
    with live_stage_counts({"images": 1}, terminal=True) as handlers:
        live = handlers[0].live  # type: ignore[attr-defined]
        assert type(sys.stderr).__name__ == "FileProxy"  # the display holds stderr
        held, release = threading.Event(), threading.Event()

        def refresh_thread() -> None:
            with live._lock:
                held.set()
                release.wait()

        thread = threading.Thread(target=refresh_thread)
        thread.start()
        held.wait()
        pid = os.fork()
        if pid == 0:  # the child: write as a progress bar would, then leave
            sys.stderr.write("loading weights\n")
            sys.stderr.flush()
            os._exit(0)
        release.set()
        thread.join()
        deadline = time.monotonic() + 20
        while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        if done[0] == 0:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        assert done[0] == pid, "the forked child hung writing to stderr"
        assert os.waitstatus_to_exitcode(done[1]) == 0


def on_a_terminal(command: list[str], cwd: Path) -> str:
    """Run `command` on a pseudo-terminal (160 columns) until it ends; what it wrote.
    Fails with the output if it fails."""
    controller, terminal = pty.openpty()
    # A real terminal's size: tqdm (diffusers' bars) asks the terminal, rich reads COLUMNS.
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
    process = subprocess.Popen(
        command,
        cwd=cwd,
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        env={**os.environ, "COLUMNS": "160", "TERM": "xterm"},
    )
    os.close(terminal)
    output = b""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        ready, _, _ = select.select([controller], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the terminal closed: the command ended
                break
            if not chunk:
                break
            output += chunk
        elif process.poll() is not None:
            break
    os.close(controller)
    assert process.wait(timeout=60) == 0, output.decode(errors="replace")[-3000:]
    return output.decode(errors="replace")


@pytest.mark.slow
def test_generate_on_a_terminal_shows_the_live_count(tmp_path: Path) -> None:
    command = ["generate", "--num-prompts", "2", "--no-use-cache", "-o", "run"]
    lines = screen_lines(on_a_terminal([str(BIN_DIR / "agfsync"), *command], tmp_path))
    # The offline preset: 2 prompts x 4 candidates, all judged, one pair each.
    count = "prompts 2/2 · images 8/8 · judged 8/8 · pairs 2"
    assert any(count in line for line in lines), lines[-20:]


@pytest.mark.slow
def test_train_on_a_terminal_shows_a_bar_with_the_rate_and_log_lines_above_it(
    tmp_path: Path,
) -> None:
    """A tiny `agfsync train` that checkpoints and validates every step, so log lines
    and the validation pipeline's loading come while its bar is live."""
    dataset = write_colour_preference_dataset(tmp_path / "ds", 4)
    output = on_a_terminal(
        [
            *(str(BIN_DIR / "agfsync"), "train", "--pretrained-model", "tiny:stable-diffusion"),
            *("--dataset", str(dataset), "--max-train-steps", "2", "--train-batch-size", "2"),
            *("--effective-batch-size", "2", "--checkpointing-steps", "1"),
            *("--validation-steps", "1", "--validation-inference-steps", "1"),
            *("--report-to", "none", "--output", "out"),
        ],
        tmp_path,
    )
    lines = screen_lines(output)
    bars = [line for line in lines if line.startswith("training ")]
    assert re.search(r" 2/2 .* \d+\.\d+ steps/s loss \S+ implicit_accuracy", bars[-1]), bars
    logged = [line for line in lines if "INFO " in line]
    assert sum("Saved checkpoint" in line for line in logged) == 2, lines
    assert sum("Validation images" in line for line in logged) == 2, lines
    assert all(line.startswith("INFO ") for line in logged), logged  # none glued to a bar
    assert not [line for line in lines if "Loading pipeline components" in line], lines


def test_help_shows_defaults_and_old_option_names_still_work(tmp_path: Path) -> None:
    """Plain help: every default and environment variable visible, no `<bool>` types; a
    renamed option's old spelling is accepted, with a notice, and hidden from help."""
    shown = subprocess.run(
        [str(BIN_DIR / "agfsync"), "publish", "--help"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "COLUMNS": "200"},
    ).stdout
    shown = " ".join(shown.split())  # click wraps at the terminal's width
    assert "[default: $HF_TOKEN, else the login]" in shown and "[default: train]" in shown
    assert "<bool>" not in shown and "--token" not in shown.replace("--hub-token", "")
    old = subprocess.run(
        [str(BIN_DIR / "agfsync"), "presets", "export", "--directory", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert old.returncode == 0, old.stderr[-2000:]
    assert "--directory is now --output" in old.stderr
    assert (tmp_path / "offline.yaml").is_file()
