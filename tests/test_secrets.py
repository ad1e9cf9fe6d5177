"""Secrets in the environment never reach a produced file: a run, its distilabel
cache and logs, the dataset and card, a publish, the Argilla records and a training
run are scanned for fake keys set throughout."""

import uuid
from pathlib import Path

import argilla as rg

from tests.argilla_server.fixture import ArgillaServer
from tests.helpers import run_command

FAKE_KEYS = {
    "OPENAI_API_KEY": "sk-agfsync-FAKE-openai-1f2e3d",
    "GEMINI_API_KEY": "AIzaFAKE-gemini-9a8b7c",
    "GOOGLE_API_KEY": "AIzaFAKE-google-6d5e4f",
    "HF_TOKEN": "hf_FAKE_token_3c4d5e",
}


def hits(folder: Path) -> list[str]:
    """Files under `folder` that contain any fake key."""
    found = []
    for path in folder.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            found += [f"{path}: {name}" for name, key in FAKE_KEYS.items() if key.encode() in data]
    return found


def test_no_produced_file_holds_a_secret(argilla_server: ArgillaServer, tmp_path: Path) -> None:
    env = {**FAKE_KEYS, "DISTILABEL_CACHE_DIR": str(tmp_path / "distilabel-cache")}
    client = rg.Argilla(api_url=argilla_server.url, api_key=argilla_server.api_key)
    workspace = f"secrets-{uuid.uuid4().hex[:8]}"
    rg.Workspace(name=workspace, client=client).create()
    outputs = []

    def agfsync(*args: str, extra: dict[str, str] | None = None) -> None:
        result = run_command(["agfsync", *args], tmp_path, {**env, **(extra or {})})
        assert result.returncode == 0, result.stderr[-3000:]
        outputs.append(result.stdout + result.stderr)

    agfsync("generate", "-o", "run", "--num-prompts", "4")
    agfsync("publish", "run", "--repo-id", "org/pairs", "--dry-run", "staged")
    agfsync(
        "argilla", "push", "run", "--dataset", "secrets", "--workspace", workspace,
        extra={"ARGILLA_API_URL": argilla_server.url, "ARGILLA_API_KEY": argilla_server.api_key},
    )  # fmt: skip
    agfsync(
        "train", "--pretrained-model", "tiny:stable-diffusion", "--dataset", "run",
        "--max-train-steps", "1", "--train-batch-size", "2", "--effective-batch-size", "2",
        "--validation-steps", "0", "--report-to", "tensorboard", "--output-dir", "trained",
    )  # fmt: skip

    assert (tmp_path / "distilabel-cache").is_dir() and (tmp_path / "trained").is_dir()
    assert hits(tmp_path) == []
    for output in outputs:
        assert not any(key in output for key in FAKE_KEYS.values())
    dataset = client.datasets(name="secrets", workspace=workspace)
    records = [str(record.to_dict()) for record in dataset.records]
    assert len(records) == 4
    assert not any(key in record for record in records for key in FAKE_KEYS.values())
