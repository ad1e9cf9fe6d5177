"""The text-openai preset end to end against a loopback OpenAI-compatible server."""

import itertools
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import datasets
import pyarrow.parquet as pq
import pytest
from pytest_httpserver import HTTPServer
from typer.testing import CliRunner

from agfsync.cli import app
from agfsync.testing.openai_server import ScriptedChatCompletions
from tests.gemini_server import ScriptedGemini
from tests.helpers import REPO_ROOT, run_command

pytestmark = pytest.mark.slow  # `make test-fast` skips this module

SECRET = "sk-loopback-never-written"
CATEGORIES = """
- name: Animals
  description: wild animals and pets
  examples: ["a fox in the snow"]
- name: Food and Beverages
  description: dishes and drinks
  examples: ["a bowl of ramen"]
"""
SUBJECTS = {
    "Animals": ["fox", "heron", "tortoise", "otter", "lynx", "camel"],
    "Food and Beverages": ["pancakes", "espresso", "dumplings", "lemonade", "tacos", "sushi"],
}


def _respond(counter: itertools.count) -> Any:
    def respond(body: dict[str, Any]) -> str:
        system, user = body["messages"][0]["content"], body["messages"][1]["content"]
        if "text-to-image model" in system:
            category = re.search(r"Category: (.+?) \(", user).group(1)  # type: ignore[union-attr]
            call = next(counter)
            colors = ["red", "green", "blue", "golden"]
            return json.dumps(
                [
                    f"a {colors[(call + i) % 4]} {subject} on a wooden table in soft light"
                    for i, subject in enumerate(SUBJECTS[category])
                ][:3]
            )
        prompt = user.removeprefix("Description: ")
        words = [word for word in re.findall(r"[a-z]+", prompt) if len(word) > 3][:4]
        # One question about something the prompt does not mention, rejected every round.
        return json.dumps([*yes_questions(words), *yes_questions(["dragon"], "animal")])

    return respond


def yes_questions(elements: list[str], element_type: str = "object") -> list[dict[str, Any]]:
    """A decomposition round as the QA prompt asks for it: one yes-question per element."""
    return [
        {
            "question": f"Is there {element}?",
            "answer": "yes",
            "element_type": element_type,
            "element": element,
            "flag": 1,
        }
        for element in elements
    ]


def _generate_text(
    preset: str, tmp_path: Path, env: dict[str, str], *options: str
) -> subprocess.CompletedProcess[str]:
    """`agfsync generate --preset PRESET -o out --dedup minhash OPTIONS` in tmp_path."""
    result = run_command(
        ["agfsync", "generate", "--preset", preset, "-o", "out", "--dedup", "minhash", *options],
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture
def loopback_openai(httpserver: HTTPServer, tmp_path: Path) -> tuple[dict[str, str], Any]:
    completions = ScriptedChatCompletions([_respond(itertools.count())])
    env = {"OPENAI_BASE_URL": completions.install(httpserver), "OPENAI_API_KEY": SECRET}
    (tmp_path / "categories.yaml").write_text(CATEGORIES)
    return env, completions


class TestTextOpenAIPreset:
    def test_agfsync_generate_writes_prompts_with_validated_qa(
        self, loopback_openai: tuple[dict[str, str], Any], tmp_path: Path
    ) -> None:
        env, completions = loopback_openai
        result = _generate_text(
            "text-openai",
            tmp_path,
            env,
            "--categories",
            "categories.yaml",
            "--prompts-per-category",
            "3",
            "--qa-model",
            "qa-model",
        )
        assert "words per prompt" in result.stdout and "paper 26.06" in result.stdout
        # 6 prompts x 6 rounds: one foreign element per round, the same 4 questions again.
        assert "element_not_in_prompt 36, duplicate 120" in result.stdout
        assert "tokens: 88 in, 56 out" in result.stdout  # 2 prompt + 6 QA requests
        dataset = datasets.load_dataset(str(tmp_path / "out"), split="train")
        assert dataset.num_rows == 6
        assert sorted(set(dataset["category"])) == ["Animals", "Food and Beverages"]
        for row in dataset:
            assert len(row["qa_pairs"]) == 4
            assert all(pair["element"] in row["prompt"] for pair in row["qa_pairs"])
            assert [entry["reason"] for entry in row["qa_rejected"]].count(
                "element_not_in_prompt"
            ) == 6  # one dragon per round, 6 rounds
            assert row["qa_model"] == "qa-model" and row["prompt_model"] == "gpt-4o-mini"
        models = {request["body"]["model"] for request in completions.requests}
        assert models == {"gpt-4o-mini", "qa-model"}
        formats = {
            request["body"]["response_format"]["json_schema"]["name"]
            for request in completions.requests
        }
        assert formats == {"prompts", "qa_pairs"}

    def test_another_qa_model_reuses_the_written_prompts(
        self, loopback_openai: tuple[dict[str, str], Any], tmp_path: Path
    ) -> None:
        """Only the QA step runs again. With distilabel alone this run waits forever: the
        stage before the global dedup step is all cached and never reports its end."""
        env, completions = loopback_openai
        env = {**env, "DISTILABEL_CACHE_DIR": str(tmp_path / "cache")}
        options = ("--categories", "categories.yaml", "--prompts-per-category", "2")
        _generate_text("text-openai", tmp_path, env, *options, "--qa-model", "qa-a")
        completions.requests.clear()
        _generate_text("text-openai", tmp_path, env, *options, "--qa-model", "qa-b")
        assert [request["body"]["model"] for request in completions.requests] == ["qa-b"] * 4
        dataset = datasets.load_dataset(str(tmp_path / "out"), split="train")
        assert dataset.num_rows == 4 and set(dataset["qa_model"]) == {"qa-b"}

    def test_structured_output_can_be_turned_off(
        self, loopback_openai: tuple[dict[str, str], Any], tmp_path: Path
    ) -> None:
        env, completions = loopback_openai
        _generate_text(
            "text-openai",
            tmp_path,
            env,
            "--categories",
            "categories.yaml",
            "--prompts-per-category",
            "1",
            "--no-structured-output",
        )
        assert all("response_format" not in request["body"] for request in completions.requests)

    def test_no_file_it_writes_holds_the_api_key(
        self, loopback_openai: tuple[dict[str, str], Any], tmp_path: Path
    ) -> None:
        env, _ = loopback_openai
        result = _generate_text(
            "text-openai",
            tmp_path,
            env,
            "--categories",
            "categories.yaml",
            "--prompts-per-category",
            "1",
        )
        assert SECRET not in result.stdout + result.stderr
        for path in (tmp_path / "out").rglob("*"):
            if path.is_file():
                assert SECRET.encode() not in path.read_bytes(), path

    def test_distilabel_runs_the_committed_yaml(
        self, loopback_openai: tuple[dict[str, str], Any], tmp_path: Path
    ) -> None:
        env, _ = loopback_openai
        cache = tmp_path / "cache"
        result = run_command(
            [
                "distilabel",
                "pipeline",
                "run",
                "--config",
                str(REPO_ROOT / "pipelines" / "text-openai.yaml"),
                "--param",
                "load_categories.categories_file=categories.yaml",
                "--param",
                "load_categories.prompts_per_category=2",
                "--param",
                "deduplicate_prompts.method=minhash",
                # The YAML records the endpoint it was exported with; point both LLMs here.
                "--param",
                f"write_prompts.llm.base_url={env['OPENAI_BASE_URL']}",
                "--param",
                f"decompose_prompts.llm.base_url={env['OPENAI_BASE_URL']}",
            ],
            cwd=tmp_path,
            env={**env, "DISTILABEL_CACHE_DIR": str(cache)},
        )
        assert result.returncode == 0, result.stderr[-3000:]
        outputs = list(cache.rglob("steps_outputs/decompose_prompts/*.parquet"))
        rows = [row for path in outputs for row in pq.read_table(path).to_pylist()]
        assert len(rows) == 4
        assert all(len(row["qa_pairs"]) == 4 for row in rows)

    def test_missing_key_is_a_one_line_error_before_any_work(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        monkeypatch.delenv("OPENAI_API_KEY", raising=False)
        result = CliRunner().invoke(
            app, ["generate", "--preset", "text-openai", "-o", str(tmp_path / "out")]
        )
        assert result.exit_code != 0
        assert "needs OPENAI_API_KEY" in result.output
        assert len(result.output.strip().splitlines()) == 1


class TestTextGeminiPreset:
    def test_qa_comes_from_gemini(
        self,
        loopback_openai: tuple[dict[str, str], Any],
        httpserver: HTTPServer,
        tmp_path: Path,
    ) -> None:
        env, completions = loopback_openai
        respond = _respond(itertools.count())

        def gemini_answer(body: dict[str, Any]) -> str:
            system = body["systemInstruction"]["parts"][0]["text"]
            user = body["contents"][0]["parts"][0]["text"]
            return respond({"messages": [{"content": system}, {"content": user}]})

        gemini = ScriptedGemini([gemini_answer])
        env = {
            **env,
            "GOOGLE_GEMINI_BASE_URL": gemini.install(httpserver),
            "GEMINI_API_KEY": "gemini-loopback-secret",
        }
        _generate_text(
            "text-gemini",
            tmp_path,
            env,
            "--categories",
            "categories.yaml",
            "--prompts-per-category",
            "2",
        )
        dataset = datasets.load_dataset(str(tmp_path / "out"), split="train")
        assert dataset.num_rows == 4
        assert set(dataset["qa_model"]) == {"gemini-2.0-flash"}
        assert all(len(pairs) == 4 for pairs in dataset["qa_pairs"])
        assert {request["model"] for request in gemini.requests} == {"gemini-2.0-flash"}
        config = gemini.requests[0]["body"]["generationConfig"]
        assert config["responseMimeType"] == "application/json"
        assert config["responseSchema"]["type"] == "OBJECT"
        assert all(
            request["headers"]["X-Goog-Api-Key"] == "gemini-loopback-secret"
            for request in gemini.requests
        )
        # Prompts still come from the OpenAI-compatible endpoint.
        assert {request["body"]["model"] for request in completions.requests} == {"gpt-4o-mini"}


class TestImagePreferencesPreset:
    def test_seeds_are_rewritten_per_style_and_complexity(
        self, httpserver: HTTPServer, tmp_path: Path
    ) -> None:
        qa = _respond(itertools.count())

        def respond(body: dict[str, Any]) -> str:
            system, user = body["messages"][0]["content"], body["messages"][1]["content"]
            if "into a given visual style" in system:
                style = re.search(r"Style: ([^(:]+)", user).group(1).strip()  # type: ignore[union-attr]
                seed = user.split("Prompt: ")[1]
                detail = "short" if "10 to 20 words" in system else "richly lit detailed"
                return f'"{seed.rstrip(".")}, {detail}, {style.lower()} style"'
            return qa(body)

        completions = ScriptedChatCompletions([respond])
        seeds = tmp_path / "seeds.jsonl"
        seeds.write_text(
            '{"prompt": "a red kite above green hills", "category": "seed"}\n'
            '{"prompt": "a copper kettle on a stove", "category": "seed"}\n'
        )
        _generate_text(
            "text-image-preferences",
            tmp_path,
            {"OPENAI_BASE_URL": completions.install(httpserver), "OPENAI_API_KEY": SECRET},
            "--prompts",
            "seeds.jsonl",
        )
        dataset = datasets.load_dataset(str(tmp_path / "out"), split="train")
        assert dataset.num_rows == 4
        assert sorted(dataset["complexity"]) == ["complex", "complex", "simplified", "simplified"]
        styles = {
            "Cinematic",
            "Photographic",
            "Anime",
            "Manga",
            "Digital art",
            "Pixel art",
            "Fantasy art",
            "Neonpunk",
            "3D Model",
            "Painting",
            "Animation",
            "Illustration",
        }
        for row in dataset:
            assert row["category"] in styles
            assert row["prompt"].startswith(row["seed_prompt"])
            assert row["prompt"].endswith(f"{row['category'].lower()} style")
            assert len(row["qa_pairs"]) == 4 and row["rewrite_error"] is None
        # Both complexities of a seed share its style.
        by_seed: dict[str, set[str]] = {}
        for row in dataset:
            by_seed.setdefault(row["seed_prompt"], set()).add(row["category"])
        assert all(len(found) == 1 for found in by_seed.values())
