"""The processes of a run: one run per cache, no orphans, a prompt stop, a time limit.

These run `agfsync generate` as a user does (a subprocess) and look at the machine's
processes from outside.
"""

import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers import BIN_DIR

pytestmark = pytest.mark.slow  # `make test-fast` skips this module

CATEGORY = """
- name: Animals
  description: wild animals and pets
  examples: ["a fox in the snow"]
"""


def wait_for(
    condition: Callable[[], bool],
    seconds: float,
    what: str,
    details: Callable[[], object] = lambda: "",
) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what} {details()}")
        time.sleep(0.1)


def command_line(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return f"{pid} (gone)"


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pids: list[int]) -> list[int]:
    living = []
    for pid in pids:
        try:
            state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            living.append(pid)
    return living


def start(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(BIN_DIR / "agfsync"), *args],
        cwd=cwd,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


class HangingServer:
    """Accepts connections and never answers (an LLM server that hangs)."""

    def __init__(self) -> None:
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(64)
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.socket.getsockname()[1]}/v1"

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.socket.accept()
            except OSError:
                return
            self.connections.append(connection)

    def close(self) -> None:
        self.socket.close()
        for connection in self.connections:
            connection.close()


@pytest.fixture
def hanging_llm(tmp_path: Path) -> Iterator[tuple[HangingServer, dict[str, str]]]:
    server = HangingServer()
    (tmp_path / "categories.yaml").write_text(CATEGORY)
    env = {
        "OPENAI_BASE_URL": server.url,
        "OPENAI_API_KEY": "sk-test",
        "DISTILABEL_CACHE_DIR": str(tmp_path / "cache"),
    }
    yield server, env
    server.close()


TEXT_RUN = [
    "generate", "--preset", "text-openai", "-o", "out", "--dedup", "minhash",
    "--categories", "categories.yaml", "--prompts-per-category", "1",
]  # fmt: skip


class TestStopping:
    def test_ctrl_c_stops_a_run_waiting_on_a_hanging_llm_within_seconds(
        self, hanging_llm: tuple[HangingServer, dict[str, str]], tmp_path: Path
    ) -> None:
        server, env = hanging_llm
        run = start(TEXT_RUN, tmp_path, env)
        wait_for(lambda: len(server.connections) > 0, 120, "the first LLM request")
        children = children_of(run.pid)
        assert children
        run.send_signal(signal.SIGINT)
        stopped_at = time.monotonic()
        _, stderr = run.communicate(timeout=30)
        assert time.monotonic() - stopped_at < 10
        assert run.returncode == 130
        assert "Stopped. Finished work is kept" in stderr.strip().splitlines()[-1]
        wait_for(lambda: not alive(children), 5, "the step processes to end")
        requests = len(server.connections)
        time.sleep(2)
        assert len(server.connections) == requests  # nothing is sent after the stop

    def test_a_time_limit_bounds_what_an_llm_step_waits(
        self, hanging_llm: tuple[HangingServer, dict[str, str]], tmp_path: Path
    ) -> None:
        _, env = hanging_llm
        started = time.monotonic()
        run = start([*TEXT_RUN, "--llm-time-limit", "3"], tmp_path, env)
        _, stderr = run.communicate(timeout=300)
        assert time.monotonic() - started < 120
        assert run.returncode == 1
        assert "time limit of 3 s reached" in stderr.strip().splitlines()[-1]

    def test_killing_the_main_process_leaves_no_orphans(self, tmp_path: Path) -> None:
        run = start(["generate", "-o", "out", "--no-use-cache"], tmp_path, {})
        wait_for(lambda: len(children_of(run.pid)) >= 5, 120, "the step processes")
        children = children_of(run.pid)
        run.kill()
        run.wait()
        # Within seconds (more on a machine busy with other tests); an orphan never dies.
        wait_for(
            lambda: not alive(children),
            30,
            "the step processes to die with it",
            lambda: [command_line(pid) for pid in alive(children)],
        )


class TestOneRunPerCache:
    def test_a_second_run_stops_at_once_naming_the_first(self, tmp_path: Path) -> None:
        env = {"DISTILABEL_CACHE_DIR": str(tmp_path / "cache")}
        first = start(["generate", "-o", "first", "--num-prompts", "8"], tmp_path, env)
        lock = tmp_path / "cache" / "agfsync-offline" / "agfsync-run.lock"
        wait_for(lambda: lock.is_file() and lock.read_text().strip() != "", 120, "the lock")
        second = start(["generate", "-o", "second", "--num-prompts", "8"], tmp_path, env)
        _, stderr = second.communicate(timeout=120)
        assert second.returncode == 2
        message = stderr.strip().splitlines()[-1]
        assert f"pid {first.pid}" in message and str(tmp_path / "first") in message
        assert not (tmp_path / "second").exists()
        _, first_stderr = first.communicate(timeout=600)
        assert first.returncode == 0, first_stderr[-2000:]

    def test_the_lock_of_a_dead_run_does_not_block(self, tmp_path: Path) -> None:
        env = {"DISTILABEL_CACHE_DIR": str(tmp_path / "cache")}
        lock = tmp_path / "cache" / "agfsync-offline" / "agfsync-run.lock"
        lock.parent.mkdir(parents=True)
        lock.write_text(json.dumps({"pid": 999999, "output": "/gone"}) + "\n")
        run = start(["generate", "-o", "out", "--num-prompts", "2"], tmp_path, env)
        _, stderr = run.communicate(timeout=600)
        assert run.returncode == 0, stderr[-2000:]


def test_a_lock_in_a_folder_nobody_can_create_is_a_configuration_error(tmp_path: Path) -> None:
    from agfsync.errors import ConfigurationError
    from agfsync.run.processes import RunLock

    (tmp_path / "a-file").write_text("")
    lock = RunLock(tmp_path / "a-file" / "cache", about={}, what="the cache of preset offline")
    with pytest.raises(ConfigurationError, match="Cannot write to the cache of preset offline"):
        lock.__enter__()
