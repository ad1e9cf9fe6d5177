"""Every public step documents itself as distilabel's built-ins do, with an `Examples:`
section, and those examples run as written: each class's code blocks, joined, run as a
script in a fresh interpreter, with tiny models and the LLMs answered by loopback
servers speaking the OpenAI and Gemini APIs. A few lines appended per class check that
the example really produced what its comments say."""

import inspect
import json
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

import agfsync.steps
from agfsync.testing.openai_server import ScriptedChatCompletions
from tests.gemini_server import ScriptedGemini
from tests.helpers import run_command

pytestmark = pytest.mark.slow  # `make test-fast` skips this module

CODE_BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)

CHECKS = {
    "LoadPrompts": "assert rows and all(row['prompt'] and row['qa_pairs'] for row in rows)",
    "LoadCategories": "assert len(rows) == 12 and rows[0]['prompts_per_category'] == 10",
    "CategoryPromptGeneration": (
        "assert [row['category'] for row in rows] == ['Animals'] * 3\n"
        "assert len({row['prompt_id'] for row in rows}) == 3"
    ),
    "QADecomposition": (
        "assert row['qa_error'] is None\n"
        "assert {pair['element'] for pair in row['qa_pairs'] if pair['valid']} >= {'cube'}"
    ),
    "StylePromptRewriting": (
        "assert len(rows) == 2 and all(row['rewrite_error'] is None for row in rows)\n"
        "assert all(row['seed_prompt'] == 'a kite above hills' for row in rows)"
    ),
    "PromptDeduplication": "assert [row['category'] for row in kept] == ['Animals', 'Places']",
    "CandidateImageGeneration": (
        "assert row['prompt_id'] and row['generation_error'] is None\n"
        "assert all((Path('artifacts') / path).is_file() for path in row['image_paths'])"
    ),
    "ImageJudging": (
        "assert len(row['clip_scores']) == 2\n"
        "assert row['weighted_scores'] == pytest.approx(row['clip_scores'])"
    ),
    "PreferencePairSelection": (
        "assert (rows[0]['chosen_index'], rows[0]['rejected_index']) == (1, 2)\n"
        "assert rows[0]['pair_error'] is None and rows[1]['pair_error']"
    ),
    "PreferenceDatasetExport": (
        "import io\nfrom PIL import Image\n"
        "assert len(rows) == 2 and set(rows.column_names) >= {'caption', 'jpg_0', 'jpg_1'}\n"
        "assert Image.open(io.BytesIO(rows[0]['jpg_0'])).size == (64, 64)"
    ),
    "GeminiLLM": "assert output[0]['generations'] and len(output[0]['generations']) == 2",
}
"""What each example must have produced, appended to its code."""


def examples_of(cls: type) -> str:
    doc = inspect.getdoc(cls) or ""
    _, _, examples = doc.partition("Examples:")
    return "\n".join(textwrap.dedent(block) for block in CODE_BLOCK.findall(examples))


def test_every_public_step_has_an_examples_section() -> None:
    missing = [
        name for name in agfsync.steps.__all__ if not examples_of(agfsync.steps.__dict__[name])
    ]
    assert missing == []
    assert set(CHECKS) == set(agfsync.steps.__all__)


def _qa_round(prompt: str) -> str:
    words = [word for word in re.findall(r"[a-z]+", prompt.lower()) if len(word) > 3]
    return json.dumps(
        [
            {
                "question": f"Is there a {word}?",
                "answer": "yes",
                "element_type": "object",
                "element": word,
            }
            for word in words
        ]
    )


def _openai_answer(body: dict[str, Any]) -> str:
    system = body["messages"][0]["content"]
    user = body["messages"][-1]["content"]
    if "text-to-image model" in system:
        return json.dumps(
            [f"a {animal} resting by a river" for animal in ("otter", "lynx", "heron")]
        )
    if "into a given visual style" in system:
        detail = "short" if "10 to 20 words" in system else "richly detailed"
        return f'"{user.split("Prompt: ")[1]}, {detail}"'
    return _qa_round(user.removeprefix("Description: "))


def _gemini_answer(body: dict[str, Any]) -> str:
    schema = body.get("generationConfig", {}).get("responseSchema") or body.get(
        "generationConfig", {}
    ).get("responseJsonSchema")
    return '["red", "green", "blue"]' if schema else "Hello!"


@pytest.mark.parametrize("name", agfsync.steps.__all__)
def test_examples_run_as_written(name: str, httpserver: HTTPServer, tmp_path: Path) -> None:
    openai_url = ScriptedChatCompletions([_openai_answer]).install(httpserver)
    gemini_url = ScriptedGemini([_gemini_answer]).install(httpserver)
    script = tmp_path / "example.py"
    code = examples_of(agfsync.steps.__dict__[name])
    script.write_text(
        "import pytest\nfrom pathlib import Path\n"
        + code
        + "\n\nif __name__ == '__main__':\n"
        + "\n".join("    " + line for line in CHECKS[name].splitlines())
        + "\n"
    )
    env = {
        "OPENAI_BASE_URL": openai_url,
        "OPENAI_API_KEY": "test-key",
        "GEMINI_API_KEY": "test-key",
        "GOOGLE_GEMINI_BASE_URL": gemini_url,
    }
    result = run_command(["python", str(script)], cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
