"""QADecomposition against a loopback OpenAI-compatible server, over real HTTP."""

import json
from typing import Any

from distilabel.models.llms import OpenAILLM
from pytest_httpserver import HTTPServer

from agfsync.steps.qa_decomposition import QADecomposition
from agfsync.testing.openai_server import HTTPError, ScriptedChatCompletions

PROMPT = "A red lighthouse on a rocky cliff at sunset."
GOOD = json.dumps(
    [
        {
            "question": "Is there a lighthouse?",
            "answer": "yes",
            "element_type": "object",
            "element": "lighthouse",
            "flag": 1,
        },
        {
            "question": "Is the lighthouse red?",
            "answer": "yes",
            "element_type": "color",
            "element": "red",
            "flag": 1,
        },
        {
            "question": "Is there a boat?",
            "answer": "yes",
            "element_type": "object",
            "element": "boat",
            "flag": 1,
        },
    ]
)


def _run(server: HTTPServer, script: list[Any], rounds: int = 2, **options: Any) -> tuple:
    completions = ScriptedChatCompletions(script)
    task = QADecomposition(
        name="decompose",
        llm=OpenAILLM(
            model="qa-model",
            base_url=completions.install(server),
            api_key="sk-loopback",
            max_retries=options.pop("client_retries", 0),
            generation_kwargs={"temperature": 0.7, "max_new_tokens": 512},
        ),
        num_generations=rounds,
        **options,
    )
    task.load()
    rows = next(task.process([{"prompt": PROMPT}]))
    return rows[0], completions.requests


class TestQADecomposition:
    def test_good_json_is_validated_merged_and_counted(self, httpserver: HTTPServer) -> None:
        row, _ = _run(httpserver, [GOOD])
        assert [pair["question"] for pair in row["qa_pairs"]] == [
            "Is there a lighthouse?",
            "Is the lighthouse red?",
        ]
        reasons = sorted(entry["reason"] for entry in row["qa_rejected"])
        assert reasons == [
            "duplicate",
            "duplicate",
            "element_not_in_prompt",
            "element_not_in_prompt",
        ]
        assert row["qa_error"] is None
        assert row["qa_model"] == "qa-model"
        assert row["qa_usage"] == {"input_tokens": 11, "output_tokens": 7}  # one request

    def test_request_carries_instructions_prompt_and_model(self, httpserver: HTTPServer) -> None:
        _, requests = _run(httpserver, [GOOD])
        (request,) = requests
        body = request["body"]
        assert body["model"] == "qa-model" and body["n"] == 2
        assert body["messages"][0]["role"] == "system"
        assert "atomic yes/no questions" in body["messages"][0]["content"]
        assert "at least 15 questions" in body["messages"][0]["content"]
        assert body["messages"][1] == {"role": "user", "content": f"Description: {PROMPT}"}
        assert request["headers"]["Authorization"] == "Bearer sk-loopback"

    def test_fenced_json_is_read(self, httpserver: HTTPServer) -> None:
        row, _ = _run(httpserver, [f"Sure!\n```json\n{GOOD}\n```"], rounds=1)
        assert len(row["qa_pairs"]) == 2

    def test_malformed_round_is_asked_again(self, httpserver: HTTPServer) -> None:
        row, requests = _run(httpserver, [["not json", GOOD], GOOD])
        assert [request["body"]["n"] for request in requests] == [2, 1]
        assert len(row["qa_pairs"]) == 2 and row["qa_error"] is None

    def test_always_malformed_is_recorded_and_the_row_kept(self, httpserver: HTTPServer) -> None:
        row, requests = _run(httpserver, ["I cannot do that."], max_format_retries=2)
        assert len(requests) == 3
        assert row["qa_pairs"] == []
        assert row["qa_error"].startswith("no usable output after 6 failures")
        assert "no JSON list or object" in row["qa_error"]

    def test_rate_limit_with_retry_after_then_success(self, httpserver: HTTPServer) -> None:
        script = [HTTPError(429, {"Retry-After": "0"}), GOOD]
        row, requests = _run(httpserver, script, rounds=1, client_retries=2)
        assert len(requests) == 2
        assert len(row["qa_pairs"]) == 2

    def test_server_errors_until_retries_are_spent(self, httpserver: HTTPServer) -> None:
        row, requests = _run(
            httpserver, [HTTPError(500)], rounds=1, client_retries=1, max_format_retries=1
        )
        assert len(requests) == 4  # (1 try + 1 client retry) x (1 + 1 task attempts)
        assert row["qa_pairs"] == []
        assert "request failed" in row["qa_error"]
