"""The `argilla_server` fixture: a real Argilla 2.8 server on 127.0.0.1 for the session.

argilla-server pins `typer<0.10` (whose CLI breaks with click 8.2) and old pydantic/httpx
ranges, so it cannot share our virtual environment. The fixture builds one for it, once, under
`~/.cache/agfsync-tests/` (or `$XDG_CACHE_HOME/agfsync-tests/`), in a folder named after a
hash of the pinned requirements and the Python version, so changing either builds a fresh
one; a file lock keeps concurrent sessions from building it twice. The first build downloads
the server and its dependencies (a couple of minutes); later sessions start the server in
seconds.

`launcher.py` runs in that environment with a SQLite database in the session's temp dir,
fakeredis instead of Redis, and the in-memory search engine of `search_engine.py` instead of
Elasticsearch. The server's log is `server.log` next to the database; a start-up failure
raises with its tail.

Users: the fixture's owner (`ArgillaServer.api_key`) may do everything. Annotators come from
`create_annotator`; they cannot bulk-upsert records (the server answers 403), so their
answers go through `submit_response`, the endpoint the web UI uses.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest

# What the server's environment gets. `click<8.2`: argilla-server's `typer<0.10` fails
# with newer click. fakeredis replaces the Redis server argilla-server insists on.
SERVER_REQUIREMENTS = (
    "argilla-server==2.8.*",
    "click<8.2",
    "fakeredis>=2.20,<3",
)
STARTUP_TIMEOUT_S = 120.0
INSTALL_TIMEOUT_S = 1800.0
OWNER_USERNAME = "owner"
OWNER_API_KEY = "agfsync-tests.owner.apikey"
API_KEY_HEADER = "X-Argilla-Api-Key"
LAUNCHER = Path(__file__).with_name("launcher.py")


@dataclass(frozen=True)
class ArgillaServer:
    """A running server: its base URL (no trailing slash) and the owner's API key."""

    url: str
    api_key: str

    def headers(self, api_key: str | None = None) -> dict[str, str]:
        """Request headers authenticating as `api_key`, the owner by default."""
        return {API_KEY_HEADER: api_key or self.api_key}


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "agfsync-tests"


def server_venv_dir() -> Path:
    """Where the server's environment lives for the current requirements and Python."""
    key = "\n".join([f"python{sys.version_info[0]}.{sys.version_info[1]}", *SERVER_REQUIREMENTS])
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return _cache_root() / f"argilla-server-2.8-venv-{digest}"


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _run_or_raise(command: list[str], what: str) -> None:
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, check=False
    )
    if result.returncode != 0:
        output = (result.stdout + result.stderr)[-4000:]
        raise RuntimeError(f"{what} failed (exit {result.returncode}):\n{output}")


def ensure_server_venv() -> Path:
    """The server's virtual environment, built on first use; returns its python."""
    venv = server_venv_dir()
    marker = venv / ".agfsync-complete"
    wanted = "\n".join(SERVER_REQUIREMENTS)
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.with_name(venv.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists() and marker.read_text() == wanted and _venv_python(venv).exists():
            return _venv_python(venv)
        # A half-built environment from an interrupted run is rebuilt from scratch.
        if venv.exists():
            subprocess.run(["rm", "-rf", str(venv)], check=True)
        _run_or_raise([sys.executable, "-m", "venv", str(venv)], "creating the server venv")
        _run_or_raise(
            [
                str(_venv_python(venv)),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                *SERVER_REQUIREMENTS,
            ],
            "installing argilla-server into " + str(venv),
        )
        marker.write_text(wanted)
    return _venv_python(venv)


def _log_tail(log: Path, chars: int = 6000) -> str:
    try:
        return log.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=15)


def _wait_until_up(process: subprocess.Popen[bytes], port_file: Path, log: Path) -> str:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"argilla-server exited with {process.returncode} during start-up; "
                f"log {log}:\n{_log_tail(log)}"
            )
        if port_file.exists():
            url = f"http://127.0.0.1:{port_file.read_text().strip()}"
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/api/v1/status", timeout=5).status_code == 200:
                    return url
        time.sleep(0.2)
    raise RuntimeError(
        f"argilla-server did not answer within {STARTUP_TIMEOUT_S:.0f} s; "
        f"log {log}:\n{_log_tail(log)}"
    )


@contextlib.contextmanager
def run_argilla_server(workdir: Path) -> Iterator[ArgillaServer]:
    """Build (if needed) the server's environment, start the server with its data in
    `workdir`, yield it once it answers, and stop it on exit."""
    python = ensure_server_venv()
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "server.log"
    port_file = workdir / "port"
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}
    }
    env.update(
        {
            "ARGILLA_HOME_PATH": str(workdir / "home"),
            "ARGILLA_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'argilla.db'}",
            "ARGILLA_SEARCH_ENGINE": "inmemory",
            "ARGILLA_REDIS_URL": "redis://fakeredis:6379/0",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    command = [
        str(python),
        str(LAUNCHER),
        "--owner-username",
        OWNER_USERNAME,
        "--owner-api-key",
        OWNER_API_KEY,
        "--port-file",
        str(port_file),
    ]
    with open(log, "wb") as log_file:
        process = subprocess.Popen(
            command, cwd=workdir, env=env, stdout=log_file, stderr=subprocess.STDOUT
        )
    try:
        url = _wait_until_up(process, port_file, log)
        server = ArgillaServer(url=url, api_key=OWNER_API_KEY)
        me = _request(server, "GET", "/api/v1/me")
        if me.get("role") != "owner":
            raise RuntimeError(f"the fixture's API key is not the owner's: {me}")
        yield server
    finally:
        _stop(process)


@pytest.fixture(scope="session")
def argilla_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArgillaServer]:
    """A real argilla-server 2.8 for the whole session (see the module docstring)."""
    with run_argilla_server(tmp_path_factory.mktemp("argilla-server")) as server:
        yield server


def _request(
    server: ArgillaServer, method: str, path: str, api_key: str | None = None, **kwargs: Any
) -> Any:
    response = httpx.request(
        method, server.url + path, headers=server.headers(api_key), timeout=60, **kwargs
    )
    if response.is_error:
        raise RuntimeError(f"{method} {path} -> {response.status_code}: {response.text}")
    return response.json()


def workspace_ids(server: ArgillaServer) -> dict[str, str]:
    """Every workspace on the server, name -> id."""
    items = _request(server, "GET", "/api/v1/me/workspaces")["items"]
    return {item["name"]: item["id"] for item in items}


def create_annotator(
    server: ArgillaServer,
    username: str,
    workspaces: Iterable[str] | None = None,
    password: str = "annotator-password",
) -> str:
    """Create a user with role `annotator` (as the owner), make them a member of
    `workspaces` (by name; all workspaces that exist now when None), return their API key.

    Usernames are lowercase letters, digits, `-` and `_`; passwords at least 8 characters.
    """
    user = _request(
        server,
        "POST",
        "/api/v1/users",
        json={
            "first_name": username,
            "username": username,
            "role": "annotator",
            "password": password,
        },
    )
    known = workspace_ids(server)
    names = list(known) if workspaces is None else list(workspaces)
    for name in names:
        if name not in known:
            raise ValueError(f"no workspace named {name!r}; there are {sorted(known)}")
        _request(
            server,
            "POST",
            f"/api/v1/workspaces/{known[name]}/users",
            json={"user_id": user["id"]},
        )
    return str(user["api_key"])


def submit_response(
    server: ArgillaServer,
    api_key: str,
    record_id: UUID | str,
    values: dict[str, Any],
    status: str = "submitted",
) -> dict[str, Any]:
    """Answer a record as the user of `api_key`, as the web UI does.

    `record_id` is the server's UUID of the record (`rg.Record._server_id` in the SDK, not
    the `id` the records were logged with); `values` maps question names to plain answers
    (`{"preference": "image_a", "comment": "sharper"}`); `status` is `submitted`, `draft`
    or `discarded` (a discarded response may leave out values). Returns the created
    response. A user answers a record once; a second call fails with 409.
    """
    body: dict[str, Any] = {"status": status}
    if values:
        body["values"] = {question: {"value": value} for question, value in values.items()}
    result: dict[str, Any] = _request(
        server, "POST", f"/api/v1/records/{record_id}/responses", api_key=api_key, json=body
    )
    return result
