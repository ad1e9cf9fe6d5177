"""GeminiLLM against a loopback server speaking the Gemini API, over real HTTP.

The real `google-genai` client sends every request; the server checks what it got
and answers from a script (see `tests/gemini_server.py`).
"""

import base64
import json
import logging
import time
from typing import Any

import pytest
import yaml
from pydantic import BaseModel
from pytest_httpserver import HTTPServer

from agfsync.llm import gemini
from agfsync.llm.gemini import GeminiLLM
from agfsync.steps.qa_decomposition import QADecomposition
from tests.gemini_server import BlockedPrompt, HTTPError, ScriptedGemini, Slow

genai_errors = pytest.importorskip("google.genai.errors")

KEY = "gm-loopback-secret-key"
MODEL = "gemini-test"
CHAT = [
    {"role": "system", "content": "You answer briefly."},
    {"role": "user", "content": "Name a colour."},
    {"role": "assistant", "content": "Red."},
    {"role": "user", "content": "Another one."},
]
from tests.test_qa_decomposition import GOOD as QA_ITEMS  # noqa: E402
from tests.test_qa_decomposition import PROMPT  # noqa: E402


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No key, version or base URL leaks in from the developer's environment."""
    for name in (
        "GEMINI_API_KEY",
        "GOOGLE_API_KEY",
        "GOOGLE_GENAI_API_VERSION",
        "GOOGLE_GEMINI_BASE_URL",
        "GOOGLE_GENAI_USE_VERTEXAI",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The backoff delays GeminiLLM chose, without actually waiting them."""
    chosen: list[float] = []
    real_sleep = gemini._sleep

    async def record(delay: float) -> None:
        chosen.append(delay)
        await real_sleep(0)

    monkeypatch.setattr(gemini, "_sleep", record)
    return chosen


def _llm(server: HTTPServer, script: list[Any], **options: Any) -> tuple[GeminiLLM, ScriptedGemini]:
    scripted = ScriptedGemini(script, **options.pop("server_options", {}))
    llm = GeminiLLM(
        model=MODEL,
        api_key=options.pop("api_key", KEY),
        base_url=scripted.install(server),
        **{"max_retries": 0, "retry_initial_delay": 0.01, "retry_max_delay": 0.05, **options},
    )
    llm.load()
    return llm, scripted


def _generate(llm: GeminiLLM, chat: Any = CHAT, **kwargs: Any) -> dict[str, Any]:
    (output,) = llm.generate_outputs(inputs=[chat], **kwargs)
    return dict(output)


class TestRequestAndResponse:
    def test_good_response(self, httpserver: HTTPServer) -> None:
        llm, server = _llm(httpserver, [["Blue.", "Green."]])
        output = _generate(llm, num_generations=2, temperature=0.3, max_new_tokens=256, top_p=0.9)
        assert output["generations"] == ["Blue.", "Green."]
        assert output["statistics"] == {"input_tokens": [11], "output_tokens": [14]}

        (request,) = server.requests
        assert request["model"] == MODEL
        assert request["version"] in ("v1", "v1beta")  # google-genai's default
        assert request["headers"]["X-Goog-Api-Key"] == KEY
        body = request["body"]
        assert body["systemInstruction"]["parts"] == [{"text": "You answer briefly."}]
        assert body["contents"] == [
            {"role": "user", "parts": [{"text": "Name a colour."}]},
            {"role": "model", "parts": [{"text": "Red."}]},
            {"role": "user", "parts": [{"text": "Another one."}]},
        ]
        config = body["generationConfig"]
        assert config["temperature"] == 0.3
        assert config["maxOutputTokens"] == 256
        assert config["candidateCount"] == 2
        assert config["topP"] == 0.9
        assert "responseMimeType" not in config and "responseSchema" not in config

    def test_defaults_and_plain_string_input(self, httpserver: HTTPServer) -> None:
        llm, server = _llm(httpserver, ["Hi."])
        assert _generate(llm, chat="Hello")["generations"] == ["Hi."]
        body = server.requests[0]["body"]
        assert "systemInstruction" not in body
        assert body["contents"] == [{"role": "user", "parts": [{"text": "Hello"}]}]
        assert body["generationConfig"] == {
            "temperature": 1.0,
            "maxOutputTokens": 1024,
            "candidateCount": 1,
        }

    def test_api_version_is_pinnable(self, httpserver: HTTPServer) -> None:
        llm, server = _llm(httpserver, ["ok"], api_version="v1beta")
        _generate(llm)
        assert server.requests[0]["path"] == f"/v1beta/models/{MODEL}:generateContent"

    def test_image_data_url_is_sent_inline(self, httpserver: HTTPServer) -> None:
        llm, server = _llm(httpserver, ["A dot."])
        png = b"\x89PNG-not-really"
        url = "data:image/png;base64," + base64.b64encode(png).decode()
        chat = [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": url}},
                ],
            }
        ]
        _generate(llm, chat=chat)
        parts = server.requests[0]["body"]["contents"][0]["parts"]
        assert parts[0] == {"text": "What is this?"}
        inline = parts[1]["inlineData"]
        # Snake case from google-genai 3.6 here too (see test_thinking_budget).
        assert inline.get("mimeType", inline.get("mime_type")) == "image/png"
        assert base64.b64decode(inline["data"]) == png

    def test_image_links_are_refused(self, httpserver: HTTPServer) -> None:
        llm, server = _llm(httpserver, ["unused"])
        chat = [
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": "https://x.test/a.png"}}],
            }
        ]
        with pytest.raises(ValueError, match="data:"):
            _generate(llm, chat=chat)
        assert server.requests == []

    def test_not_loaded(self) -> None:
        llm = GeminiLLM(model=MODEL, api_key=KEY)
        with pytest.raises(RuntimeError, match="loaded"):
            _generate(llm)


class TestStructuredOutput:
    def test_schema_sets_json_mime_type(self, httpserver: HTTPServer) -> None:
        llm, server = _llm(httpserver, ['["red", "blue"]'])
        schema = {"type": "array", "items": {"type": "string"}}
        output = _generate(llm, response_schema=schema)
        assert json.loads(output["generations"][0]) == ["red", "blue"]
        config = server.requests[0]["body"]["generationConfig"]
        assert config["responseMimeType"] == "application/json"
        # google-genai sends its OpenAPI-style Schema: upper-case type names.
        assert config["responseSchema"]["type"] == "ARRAY"
        assert config["responseSchema"]["items"]["type"] == "STRING"

    def test_explicit_mime_type_is_kept(self, httpserver: HTTPServer) -> None:
        llm, server = _llm(httpserver, ["red"])
        schema = {"type": "string", "enum": ["red", "blue"]}
        _generate(llm, response_schema=schema, response_mime_type="text/x.enum")
        config = server.requests[0]["body"]["generationConfig"]
        assert config["responseMimeType"] == "text/x.enum"
        assert config["responseSchema"]["enum"] == ["red", "blue"]

    def test_distilabel_structured_input(self, httpserver: HTTPServer) -> None:
        class Colour(BaseModel):
            name: str
            warm: bool

        llm, server = _llm(httpserver, ['{"name": "red", "warm": true}'])
        _generate(llm, chat=(CHAT, {"format": "json", "schema": Colour}))
        config = server.requests[0]["body"]["generationConfig"]
        assert config["responseMimeType"] == "application/json"
        assert set(config["responseSchema"]["properties"]) == {"name", "warm"}


class TestCandidatesAndStatistics:
    def test_blocked_candidate_is_none(self, httpserver: HTTPServer) -> None:
        llm, _ = _llm(httpserver, [["Blue.", None]])
        output = _generate(llm, num_generations=2)
        assert output["generations"] == ["Blue.", None]
        assert output["statistics"] == {"input_tokens": [11], "output_tokens": [7]}

    def test_blocked_prompt_gives_none_for_every_generation(self, httpserver: HTTPServer) -> None:
        llm, _ = _llm(httpserver, [BlockedPrompt()])
        output = _generate(llm, num_generations=3)
        assert output["generations"] == [None, None, None]
        assert output["statistics"] == {"input_tokens": [11], "output_tokens": [0]}

    def test_thinking_tokens_count_as_output(self, httpserver: HTTPServer) -> None:
        llm, _ = _llm(httpserver, ["ok"], server_options={"thoughts_tokens": 30})
        output = _generate(llm, num_generations=2)
        assert output["statistics"] == {"input_tokens": [11], "output_tokens": [7 * 2 + 30]}

    def test_generations_beyond_the_per_request_limit_are_split(
        self, httpserver: HTTPServer
    ) -> None:
        llm, server = _llm(httpserver, ["ok"], max_candidates_per_request=2)
        output = _generate(llm, num_generations=5)
        assert output["generations"] == ["ok"] * 5
        counts = sorted(r["body"]["generationConfig"]["candidateCount"] for r in server.requests)
        assert counts == [1, 2, 2]
        assert output["statistics"]["input_tokens"] == [11, 11, 11]
        assert sorted(output["statistics"]["output_tokens"]) == [7, 14, 14]

    def test_model_without_multiple_candidates_falls_back_to_one_per_request(
        self, httpserver: HTTPServer
    ) -> None:
        def answer(body: dict[str, Any]) -> Any:
            if body["generationConfig"]["candidateCount"] > 1:
                return HTTPError(400, message=f"Multiple candidates is not enabled for {MODEL}")
            return "ok"

        llm, server = _llm(httpserver, [answer])
        assert _generate(llm, num_generations=3)["generations"] == ["ok"] * 3
        counts = [r["body"]["generationConfig"]["candidateCount"] for r in server.requests]
        assert counts == [3, 1, 1, 1]
        # Remembered: the next call goes straight to one candidate per request.
        assert _generate(llm, num_generations=2)["generations"] == ["ok"] * 2
        counts = [r["body"]["generationConfig"]["candidateCount"] for r in server.requests]
        assert counts == [3, 1, 1, 1, 1, 1]

    def test_fallback_with_concurrent_inputs_warns_once(
        self, httpserver: HTTPServer, caplog: pytest.LogCaptureFixture
    ) -> None:
        def answer(body: dict[str, Any]) -> Any:
            if body["generationConfig"]["candidateCount"] > 1:
                return HTTPError(400, message="Only one candidate can be specified")
            return "ok"

        llm, server = _llm(httpserver, [answer])
        outputs = llm.generate_outputs(inputs=[CHAT, CHAT, CHAT], num_generations=2)
        assert [output["generations"] for output in outputs] == [["ok", "ok"]] * 3
        counts = [r["body"]["generationConfig"]["candidateCount"] for r in server.requests]
        assert sorted(counts) == [1] * 6 + [2] * 3
        assert caplog.text.count("rejects several candidates") == 1

    def test_thinking_budget(self, httpserver: HTTPServer) -> None:
        llm, server = _llm(httpserver, ["ok"])
        _generate(llm, thinking_budget=0)
        config = server.requests[0]["body"]["generationConfig"]
        # google-genai 3.6 copies nested config objects with their Python (snake
        # case) field names; the API's proto-JSON parser takes either spelling.
        assert config["thinkingConfig"] in ({"thinkingBudget": 0}, {"thinking_budget": 0})


class TestRetries:
    def test_rate_limit_honours_retry_after(
        self, httpserver: HTTPServer, sleeps: list[float]
    ) -> None:
        script = [HTTPError(429, {"Retry-After": "7"}), "ok"]
        llm, server = _llm(httpserver, script, max_retries=2, retry_max_delay=60)
        assert _generate(llm)["generations"] == ["ok"]
        assert len(server.requests) == 2
        assert sleeps == [7.0]

    def test_rate_limit_honours_retry_info(
        self, httpserver: HTTPServer, sleeps: list[float]
    ) -> None:
        retry_info = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "2.5s"}
        script = [HTTPError(429, details=[retry_info]), "ok"]
        llm, _ = _llm(httpserver, script, max_retries=2, retry_max_delay=60)
        assert _generate(llm)["generations"] == ["ok"]
        assert sleeps == [2.5]

    def test_server_delay_is_capped(self, httpserver: HTTPServer, sleeps: list[float]) -> None:
        script = [HTTPError(429, {"Retry-After": "3600"}), "ok"]
        llm, _ = _llm(httpserver, script, max_retries=1, retry_max_delay=30)
        assert _generate(llm)["generations"] == ["ok"]
        assert sleeps == [30.0]

    def test_backoff_grows_exponentially_within_bounds(
        self, httpserver: HTTPServer, sleeps: list[float]
    ) -> None:
        llm, server = _llm(
            httpserver,
            [HTTPError(503)] * 4 + ["ok"],
            max_retries=4,
            retry_initial_delay=1.0,
            retry_max_delay=4.0,
        )
        assert _generate(llm)["generations"] == ["ok"]
        assert len(server.requests) == 5
        ceilings = [1.0, 2.0, 4.0, 4.0]  # jitter picks within [ceiling / 2, ceiling]
        assert all(c / 2 <= s <= c for s, c in zip(sleeps, ceilings, strict=True))

    def test_rate_limit_then_success_for_real(self, httpserver: HTTPServer) -> None:
        script = [HTTPError(429, {"Retry-After": "0"}), "ok"]
        llm, server = _llm(httpserver, script, max_retries=2)
        assert _generate(llm)["generations"] == ["ok"]
        assert len(server.requests) == 2

    def test_server_errors_until_retries_are_spent_raise(self, httpserver: HTTPServer) -> None:
        """Spent retries raise the client's error (never `None` generations)."""
        llm, server = _llm(httpserver, [HTTPError(500)], max_retries=3)
        started = time.monotonic()
        with pytest.raises(genai_errors.ServerError) as raised:
            _generate(llm)
        assert time.monotonic() - started < 3
        assert raised.value.code == 500
        assert len(server.requests) == 4  # 1 try + 3 retries

    def test_client_errors_are_not_retried(self, httpserver: HTTPServer) -> None:
        llm, server = _llm(httpserver, [HTTPError(403, message="API key not valid")], max_retries=3)
        with pytest.raises(genai_errors.ClientError):
            _generate(llm)
        assert len(server.requests) == 1

    def test_timeout_is_retried(
        self, httpserver: HTTPServer, caplog: pytest.LogCaptureFixture
    ) -> None:
        # The loopback server answers one request at a time: the retry is served
        # once the slow answer is over, about 0.1 s after it was sent.
        llm, server = _llm(httpserver, [Slow(0.3, "late"), "ok"], max_retries=2, timeout=0.2)
        started = time.monotonic()
        assert _generate(llm)["generations"] == ["ok"]
        assert time.monotonic() - started < 3
        assert len(server.requests) >= 2
        assert "Timeout" in caplog.text


class TestApiKey:
    def test_missing_key_fails_at_load(self) -> None:
        llm = GeminiLLM(model=MODEL)
        with pytest.raises(ValueError, match="GEMINI_API_KEY or GOOGLE_API_KEY") as raised:
            llm.load()
        assert "\n" not in str(raised.value)

    def test_blank_key_counts_as_missing(self) -> None:
        with pytest.raises(ValueError, match="GEMINI_API_KEY"):
            GeminiLLM(model=MODEL, api_key="  ").load()

    @pytest.mark.parametrize(
        ("env", "expected"),
        [
            ({"GOOGLE_API_KEY": "google-key"}, "google-key"),
            ({"GEMINI_API_KEY": "gemini-key", "GOOGLE_API_KEY": "google-key"}, "gemini-key"),
        ],
    )
    def test_key_from_environment(
        self,
        httpserver: HTTPServer,
        monkeypatch: pytest.MonkeyPatch,
        env: dict[str, str],
        expected: str,
    ) -> None:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        scripted = ScriptedGemini(["ok"])
        llm = GeminiLLM(model=MODEL, base_url=scripted.install(httpserver))
        llm.load()
        _generate(llm)
        assert scripted.requests[0]["headers"]["X-Goog-Api-Key"] == expected

    def test_key_is_never_dumped_or_logged(
        self, httpserver: HTTPServer, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.DEBUG)
        llm, server = _llm(httpserver, [HTTPError(429, {"Retry-After": "0"}), "ok"], max_retries=1)
        _generate(llm)
        assert server.requests[-1]["headers"]["X-Goog-Api-Key"] == KEY
        assert "retry 1/1" in caplog.text
        task = QADecomposition(name="decompose", llm=llm)
        for text in (
            caplog.text,
            repr(llm),
            str(llm.dump()),
            yaml.dump(llm.dump()),
            yaml.dump(task.dump()),
        ):
            assert KEY not in text
        assert "api_key" not in llm.dump()
        assert llm.dump()["base_url"] == httpserver.url_for("/")


class TestQADecomposition:
    def test_qa_pairs_from_gemini_are_validated(self, httpserver: HTTPServer) -> None:
        scripted = ScriptedGemini([QA_ITEMS])
        task = QADecomposition(
            name="decompose",
            llm=GeminiLLM(
                model=MODEL,
                api_key=KEY,
                base_url=scripted.install(httpserver),
                max_retries=0,
                generation_kwargs={"temperature": 0.7, "max_new_tokens": 512},
            ),
            num_generations=2,
        )
        task.load()
        (row,) = next(task.process([{"prompt": PROMPT}]))

        assert [pair["question"] for pair in row["qa_pairs"]] == [
            "Is there a lighthouse?",
            "Is the lighthouse red?",
        ]
        assert all(pair["valid"] for pair in row["qa_pairs"])
        reasons = sorted(entry["reason"] for entry in row["qa_rejected"])
        assert reasons == [
            "duplicate",
            "duplicate",
            "element_not_in_prompt",
            "element_not_in_prompt",
        ]
        assert row["qa_error"] is None
        assert row["qa_model"] == MODEL
        assert row["qa_usage"] == {"input_tokens": 11, "output_tokens": 14}  # one request

        (request,) = scripted.requests
        body = request["body"]
        assert body["generationConfig"]["candidateCount"] == 2
        assert body["generationConfig"]["temperature"] == 0.7
        assert body["generationConfig"]["maxOutputTokens"] == 512
        system = body["systemInstruction"]["parts"][0]["text"]
        assert "atomic yes/no questions" in system and "at least 15 questions" in system
        assert body["contents"] == [{"role": "user", "parts": [{"text": f"Description: {PROMPT}"}]}]

    def test_request_failures_are_recorded_on_the_row(self, httpserver: HTTPServer) -> None:
        scripted = ScriptedGemini([HTTPError(500)])
        task = QADecomposition(
            name="decompose",
            llm=GeminiLLM(
                model=MODEL,
                api_key=KEY,
                base_url=scripted.install(httpserver),
                max_retries=1,
                retry_initial_delay=0.01,
                retry_max_delay=0.02,
            ),
            num_generations=1,
            max_format_retries=1,
        )
        task.load()
        (row,) = next(task.process([{"prompt": PROMPT}]))
        assert len(scripted.requests) == 4  # (1 try + 1 retry) x (1 + 1 task attempts)
        assert row["qa_pairs"] == []
        assert "request failed" in row["qa_error"] and KEY not in row["qa_error"]
