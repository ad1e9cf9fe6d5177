"""Running the installed commands the way a user does."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import yaml

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
