"""Running the installed commands the way a user does."""

import atexit
import collections
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import yaml

from tests.warm_runner import import_time_differences

REPO_ROOT = Path(__file__).resolve().parents[1]
BIN_DIR = Path(sys.executable).parent


def run_command(
    args: list[str],
    cwd: Path,
    env: dict[str, str] | None = None,
    fresh_process: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run a console script of the active environment (`python` included: `-m MODULE`,
    `-c CODE`, `SCRIPT`) and capture its output.

    The command runs in a child forked from `tests.warm_runner` (libraries already
    imported) when its environment allows it, else, or with `fresh_process=True`, in a
    new process: the same entry point, argv, environment, folder and streams either way."""
    command_env = {**os.environ, **(env or {})}
    if fresh_process:
        WARM_RUNNER.new_processes["fresh_process=True"] += 1
    else:
        served = WARM_RUNNER.run([str(BIN_DIR / args[0]), *args[1:]], cwd, command_env)
        if served is not None:
            return served
    return subprocess.run(
        [str(BIN_DIR / args[0]), *args[1:]],
        cwd=cwd,
        env=command_env,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )


COMMAND_TIMEOUT = 600


class WarmRunner:
    """The client of one `tests.warm_runner` process, started on first use."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        self._env: dict[str, str] = {}
        self._pending = b""
        self.forked = 0
        self.cpu_seconds = 0.0
        """CPU time of the commands forked so far (not counted in this process's children:
        the runner waits for them)."""
        self.new_processes: collections.Counter[str] = collections.Counter()
        """Commands run in a new process, by the variables that asked for one."""
        atexit.register(self.stop)

    def run(
        self, argv: list[str], cwd: Path, env: dict[str, str]
    ) -> subprocess.CompletedProcess[str] | None:
        """The finished command, or None when the runner cannot serve it."""
        if not self._started():
            return None
        differences = import_time_differences(env, self._env)
        if differences:
            self.new_processes[", ".join(differences)] += 1
            return None
        assert self._process is not None and self._process.stdin is not None
        with tempfile.TemporaryDirectory(prefix="agfsync-command-") as streams:
            stdout, stderr = Path(streams) / "stdout", Path(streams) / "stderr"
            request = {"argv": argv, "env": env, "cwd": str(cwd)}
            request |= {"stdout": str(stdout), "stderr": str(stderr)}
            self._process.stdin.write((json.dumps(request) + "\n").encode())
            self._process.stdin.flush()
            answer = self._answer(timeout=60)
            if "pid" not in answer:  # the runner is gone: a new process runs the command
                return None
            self.forked += 1
            try:
                ended = self._answer(timeout=COMMAND_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.kill(answer["pid"], signal.SIGKILL)
                self.cpu_seconds += self._answer(timeout=60).get("cpu_seconds", 0.0)
                raise
            returncode = ended["returncode"]
            self.cpu_seconds += ended["cpu_seconds"]
            output = stdout.read_text(errors="replace"), stderr.read_text(errors="replace")
            return subprocess.CompletedProcess(argv, returncode, *output)

    def _started(self) -> bool:
        if self._process is not None and self._process.poll() is None:
            return True
        self._env = dict(os.environ)
        self._pending = b""
        self._process = subprocess.Popen(
            [sys.executable, "-m", "tests.warm_runner"],
            cwd=REPO_ROOT,
            env=self._env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
        )
        return bool(self._answer(timeout=300).get("ready"))

    def stop(self) -> None:
        """End the runner and wait for it (so that its CPU time is counted where the
        tests' is, by `time` or a CI's accounting)."""
        if self._process is None or self._process.poll() is not None:
            return
        assert self._process.stdin is not None
        self._process.stdin.close()  # the runner's loop ends at end of input
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def _answer(self, timeout: float) -> dict[str, Any]:
        """The runner's next line, within `timeout` seconds."""
        assert self._process is not None and self._process.stdout is not None
        deadline = time.monotonic() + timeout
        while b"\n" not in self._pending:
            remaining = deadline - time.monotonic()
            readable, _, _ = select.select([self._process.stdout], [], [], max(remaining, 0))
            if not readable:
                raise subprocess.TimeoutExpired("tests.warm_runner", timeout)
            chunk = os.read(self._process.stdout.fileno(), 65536)
            if not chunk:
                return {}
            self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        answer: dict[str, Any] = json.loads(line)
        return answer


WARM_RUNNER = WarmRunner()


def write_files(folder: Path, files: dict[str, str] | dict[str, bytes]) -> None:
    """Write each file of `files` (relative path -> contents) under `folder`."""
    for name, data in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            path.write_text(data)


def generate_offline_run(output: Path, num_prompts: int) -> Path:
    """`agfsync generate` on the offline preset's first `num_prompts` prompts; it prints
    nothing from its libraries that a user cannot act on (`assert_no_library_noise`)."""
    result = run_command(
        ["agfsync", "generate", "-o", str(output), "--num-prompts", str(num_prompts)],
        cwd=output.parent,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert_no_library_noise(result.stderr)
    return output


LIBRARY_NOISE = (
    "UnsupportedFieldAttributeWarning",  # pydantic, about distilabel's step class
    "requires torchvision",  # transformers, about the processors agfsync does not use
    "Loading pipeline components",  # diffusers' bar
    "Loading weights",  # transformers' bar
    "Generating train split",  # datasets' bars
    "Creating parquet",
    "No LoRA keys associated",  # diffusers, about the text encoder of a UNet-only LoRA
    "Token indices sequence length",  # transformers, per long prompt
    "The following part of your input was truncated",  # diffusers, per long prompt
)
"""What agfsync's commands keep their libraries from printing."""


def assert_no_library_noise(stderr: str) -> None:
    """None of `LIBRARY_NOISE` and at most one note about long prompts in `stderr`."""
    from agfsync.logs import PROMPT_TRUNCATION_NOTE

    for noise in LIBRARY_NOISE:
        assert noise not in stderr, f"{noise!r} printed:\n{stderr[-3000:]}"
    assert stderr.count(PROMPT_TRUNCATION_NOTE) <= 1, stderr[-3000:]
    assert stderr.count("77 tokens") == stderr.count(PROMPT_TRUNCATION_NOTE), stderr[-3000:]


def closed_port() -> int:
    """A loopback port nothing listens on (bound, read, released): connecting fails fast."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def assert_same_dataset(produced: Path, expected: Path) -> None:
    """Two dataset folders of `agfsync generate` hold the same rows (every column, in
    order, embedded images included) and the same candidate image files, byte for byte."""
    expected_rows = pq.read_table(expected / "data")
    produced_rows = pq.read_table(produced / "data")
    assert produced_rows.num_rows == expected_rows.num_rows
    assert produced_rows.schema == expected_rows.schema
    for column in expected_rows.column_names:
        assert (
            produced_rows.column(column).to_pylist() == expected_rows.column(column).to_pylist()
        ), column
    expected_images = sorted((expected / "artifacts").rglob("*.png"))
    produced_images = sorted((produced / "artifacts").rglob("*.png"))
    assert [path.relative_to(produced) for path in produced_images] == [
        path.relative_to(expected) for path in expected_images
    ]
    for produced_image, expected_image in zip(produced_images, expected_images, strict=True):
        assert produced_image.read_bytes() == expected_image.read_bytes(), produced_image


def card_listing(files: list[str], folder: Path) -> str:
    """A minimal dataset card whose metadata lists `files` as the train split (the
    `card` argument of `agfsync.dataset.folder.write_dataset_folder`)."""
    config = {"config_name": "default", "data_files": [{"split": "train", "path": files}]}
    return "---\n" + yaml.safe_dump({"configs": [config]}) + "---\n"
