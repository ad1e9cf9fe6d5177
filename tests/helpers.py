"""Running the installed commands the way a user does."""

import os
import socket
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
BIN_DIR = Path(sys.executable).parent


def run_command(
    args: list[str], cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a console script of the active environment and capture its output."""
    executable = BIN_DIR / args[0]
    return subprocess.run(
        [str(executable), *args[1:]],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def generate_offline_run(output: Path, num_prompts: int) -> Path:
    """`agfsync generate` on the offline preset's first `num_prompts` prompts."""
    result = run_command(
        ["agfsync", "generate", "-o", str(output), "--num-prompts", str(num_prompts)],
        cwd=output.parent,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return output


def closed_port() -> int:
    """A loopback port nothing listens on (bound, read, released): connecting fails fast."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
