"""CategoryPromptGeneration against a loopback OpenAI-compatible server."""

import json
from typing import Any

from distilabel.models.llms import OpenAILLM
from pytest_httpserver import HTTPServer

from agfsync.steps import CategoryPromptGeneration
from agfsync.testing.openai_server import ScriptedChatCompletions
from agfsync.text.categories import load_categories
from agfsync.text.prompt_files import prompt_id_for

CATEGORY = {
    "category": "Animals",
    "category_description": "wild animals and pets",
    "category_examples": ["a fox in the snow", "a parrot on a branch"],
    "prompts_per_category": 5,
}


def _generate(server: HTTPServer, script: list[Any], **options: Any) -> tuple:
    completions = ScriptedChatCompletions(script)
    task = CategoryPromptGeneration(
        name="write_prompts",
        llm=OpenAILLM(
            model="writer", base_url=completions.install(server), api_key="sk-x", max_retries=0
        ),
        **options,
    )
    task.load()
    return next(task.process([dict(CATEGORY)])), completions.requests


class TestCategoryPromptGeneration:
    def test_keeps_calling_until_the_target_is_reached(self, httpserver: HTTPServer) -> None:
        script = [
            json.dumps(["a heron in reeds", "A fox in the snow.", "an otter on a rock"]),
            "```json\n" + json.dumps(["a heron in reeds", "a lynx at dawn", "a seal"]) + "\n```",
            json.dumps(["a tortoise", "a camel"]),
        ]
        rows, requests = _generate(httpserver, script, prompts_per_call=3, max_calls=5)
        assert [row["prompt"] for row in rows] == [
            "a heron in reeds",
            "an otter on a rock",
            "a lynx at dawn",
            "a seal",
            "a tortoise",
        ]
        assert len(requests) == 3
        assert all(row["prompt_generation_notes"] is None for row in rows)
        assert rows[0]["prompt_id"] == prompt_id_for("Animals", "a heron in reeds")
        assert rows[0]["prompt_usage"] == {"input_tokens": 33, "output_tokens": 21}
        assert rows[1]["prompt_usage"] is None

    def test_request_shows_the_category_and_its_examples(self, httpserver: HTTPServer) -> None:
        _, requests = _generate(
            httpserver, [json.dumps(["a"] * 1)], prompts_per_call=4, max_calls=1
        )
        system, user = (message["content"] for message in requests[0]["body"]["messages"])
        assert "a list of 4 strings" in system and "not repeat" in system
        assert "Category: Animals (wild animals and pets)" in user
        assert "- a fox in the snow\n- a parrot on a branch" in user

    def test_shortfall_is_reported_on_the_rows(self, httpserver: HTTPServer) -> None:
        rows, requests = _generate(
            httpserver, ["not json at all", json.dumps(["a heron"])], max_calls=2
        )
        assert len(requests) == 2
        assert [row["prompt"] for row in rows] == ["a heron"]
        assert rows[0]["prompt_generation_notes"].startswith("1 of 5 prompts after 2 calls")
        assert "no JSON list or object" in rows[0]["prompt_generation_notes"]


class TestShippedCategories:
    def test_twelve_agfsync_categories_with_five_examples(self) -> None:
        categories = load_categories()
        assert [c.name for c in categories][:3] == [
            "Natural Landscapes",
            "Cities and Architecture",
            "People",
        ]
        assert len(categories) == 12
        assert all(len(category.examples) == 5 for category in categories)
