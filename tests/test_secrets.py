"""Secrets in the environment never reach a produced file: a run, its distilabel
cache and logs, the dataset and card, a publish, the Argilla records and a training
run are scanned for fake keys set throughout."""

import json
import uuid
from pathlib import Path

import argilla as rg
from pytest_httpserver import HTTPServer

from agfsync.testing.openai_server import ScriptedChatCompletions
from tests.argilla_server.fixture import ArgillaServer
from tests.helpers import run_command
from tests.test_text_preset import yes_questions

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
        "--validation-steps", "0", "--report-to", "tensorboard", "--output", "trained",
    )  # fmt: skip

    assert (tmp_path / "distilabel-cache").is_dir() and (tmp_path / "trained").is_dir()
    assert hits(tmp_path) == []
    for output in outputs:
        assert not any(key in output for key in FAKE_KEYS.values())
    dataset = client.datasets(name="secrets", workspace=workspace)
    records = [str(record.to_dict()) for record in dataset.records]
    assert len(records) == 4
    assert not any(key in record for record in records for key in FAKE_KEYS.values())


def test_credentials_in_a_base_url_are_never_written(
    httpserver: HTTPServer, tmp_path: Path
) -> None:
    """`OPENAI_BASE_URL=http://user:password@host/v1` (a proxy with basic auth): the run
    uses it, and neither the cache, the dataset (pipeline.yaml, pipeline.log) nor the
    output hold the password; a second run, which distilabel resumes from the cached
    pipeline.yaml, still reaches the server."""
    password = "pw-FAKE-9e8d7c"
    completions = ScriptedChatCompletions(
        [lambda body: json.dumps(yes_questions(["fox"]) if "Description" in str(body) else
                                 ["a red fox in the snow at dawn"])]
    )  # fmt: skip
    url = completions.install(httpserver).replace("http://", f"http://agfsync:{password}@")
    (tmp_path / "categories.yaml").write_text(
        '- name: Animals\n  description: animals\n  examples: ["a fox"]\n'
    )
    env = {
        "OPENAI_BASE_URL": url,
        "OPENAI_API_KEY": FAKE_KEYS["OPENAI_API_KEY"],
        "DISTILABEL_CACHE_DIR": str(tmp_path / "cache"),
    }
    command = [
        "agfsync", "generate", "--preset", "text-openai", "-o", "out", "--dedup", "minhash",
        "--categories", "categories.yaml", "--prompts-per-category", "1",
    ]  # fmt: skip
    outputs = []
    for _ in range(2):
        result = run_command(command, tmp_path, env)
        assert result.returncode == 0, result.stderr[-3000:]
        outputs.append(result.stdout + result.stderr)
    assert completions.requests  # the run did talk to the server
    assert (tmp_path / "out" / "pipeline.yaml").is_file()
    assert "http://***@" in (tmp_path / "out" / "pipeline.yaml").read_text()
    leaks = [
        str(path)
        for path in tmp_path.rglob("*")
        if path.is_file() and password.encode() in path.read_bytes()
    ]
    assert leaks == [] and not any(password in output for output in outputs)
