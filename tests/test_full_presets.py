"""The full presets, built as shipped, run end to end with tiny stand-ins for every
model and loopback servers for both LLM providers (see `tests/full_preset_driver.py`)."""

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from agfsync.testing.openai_server import ScriptedChatCompletions
from tests.gemini_server import ScriptedGemini
from tests.helpers import REPO_ROOT, run_command
from tests.test_text_preset import CATEGORIES, _respond

pytestmark = pytest.mark.slow  # `make test-fast` skips this module

TINY_IMAGE_MODELS = {
    "agfsync-sd15": "tiny:stable-diffusion",
    "agfsync-sdxl": "tiny:stable-diffusion-xl",
    "local-llm": "tiny:stable-diffusion",
}


@pytest.mark.parametrize("preset", sorted(TINY_IMAGE_MODELS))
def test_full_preset_runs_with_tiny_stand_ins(
    preset: str, httpserver: HTTPServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    respond = _respond(itertools.count())
    openai = ScriptedChatCompletions([respond])
    openai_url = openai.install(httpserver)

    def gemini_answer(body: dict[str, Any]) -> str:
        system = body["systemInstruction"]["parts"][0]["text"]
        user = body["contents"][0]["parts"][0]["text"]
        return respond({"messages": [{"content": system}, {"content": user}]})

    gemini = ScriptedGemini([gemini_answer])
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", gemini.install(httpserver))
    monkeypatch.setenv("GEMINI_API_KEY", "gemini-test-key")
    (tmp_path / "categories.yaml").write_text(CATEGORIES)

    result = run_command(
        [
            *("python", "-m", "tests.full_preset_driver", preset),
            *(str(tmp_path / "categories.yaml"), openai_url, TINY_IMAGE_MODELS[preset]),
        ],
        cwd=REPO_ROOT,
        env={"OPENAI_API_KEY": "sk-test"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(rows) == 4
    for row in rows:
        assert len(row["qa_pairs"]) == 4
        assert len(row["image_paths"]) == 2
        assert len(row["vqa_scores"]) == len(row["aesthetic_scores"]) == 2
        assert row["pair_error"] is None and row["chosen_index"] != row["rejected_index"]
    qa_from_gemini = preset != "local-llm"
    assert bool(gemini.requests) is qa_from_gemini
