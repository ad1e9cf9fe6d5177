"""The VLM pairwise judge over loopback servers speaking the OpenAI chat-completions and
Gemini generateContent APIs. The servers' judges look at which image comes first in
each request (the base images are red, the tuned ones blue), so position bias and
preference can be scripted: a judge that always answers "first" must come out at a
50% win rate (all ties once both orders are combined), one that always picks the
blue image at 100%."""

import base64
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from pydantic import SecretStr
from pytest_httpserver import HTTPServer

from agfsync.errors import ConfigurationError
from agfsync.evaluation.generate import ImageCache, ModelUnderTest, Sampling
from agfsync.evaluation.metrics import ALL, Comparison, ModelRole, compare
from agfsync.evaluation.run import PairedImages, measure_vlm
from agfsync.evaluation.suites import PromptItem, Suite
from agfsync.evaluation.vlm_judge import JUDGE_QUESTIONS, VLMJudgeConfig, parse_verdict
from agfsync.testing.openai_server import ScriptedChatCompletions
from tests.gemini_server import ScriptedGemini

API_KEY = "sk-judge-secret-0042"
BASE_COLOR = (255, 0, 0)
TUNED_COLOR = (0, 0, 255)
PROMPTS = ["a red fox in snow", "a lighthouse at dusk", "a bowl of ramen", "a paper crane"]
STYLES = ["anime", "photo", "anime", "photo"]

Judge = Callable[[bool], str]
"""Answer of a scripted judge given whether the tuned (blue) image is shown first."""


def always_first(tuned_first: bool) -> str:
    return "First."


def prefers_tuned(tuned_first: bool) -> str:
    return "first" if tuned_first else "The second image."


def prefers_base(tuned_first: bool) -> str:
    return "second" if tuned_first else "first"


def undecided(tuned_first: bool) -> str:
    return "I cannot compare these."


def _color(png: bytes) -> tuple[int, ...]:
    return Image.open(io.BytesIO(png)).convert("RGB").getpixel((0, 0))  # type: ignore[return-value]


def openai_images(body: dict[str, Any]) -> list[bytes]:
    content = body["messages"][0]["content"]
    urls = [part["image_url"]["url"] for part in content if part["type"] == "image_url"]
    return [base64.b64decode(url.split(",", 1)[1]) for url in urls]


def openai_text(body: dict[str, Any]) -> str:
    return " ".join(p["text"] for p in body["messages"][0]["content"] if p["type"] == "text")


def gemini_images(body: dict[str, Any]) -> list[bytes]:
    parts = body["contents"][0]["parts"]
    # google-genai sends URL-safe base64.
    return [base64.urlsafe_b64decode(p["inlineData"]["data"]) for p in parts if "inlineData" in p]


def tuned_shown_first(images: list[bytes]) -> bool:
    assert len(images) == 2
    assert {_color(images[0]), _color(images[1])} == {BASE_COLOR, TUNED_COLOR}
    return _color(images[0]) == TUNED_COLOR


@pytest.fixture
def paired_images(tmp_path: Path) -> tuple[Suite, PairedImages]:
    """Four prompts whose base image is red and tuned image blue, in the image cache."""
    suite = Suite(
        "vlm",
        [
            PromptItem(id=f"p{index}", prompt=prompt, group=style)
            for index, (prompt, style) in enumerate(zip(PROMPTS, STYLES, strict=True))
        ],
    )
    caches: dict[ModelRole, ImageCache] = {
        role: ImageCache(tmp_path, ModelUnderTest(f"{role}-model"), Sampling())
        for role in ("base", "tuned")
    }
    for role, color in (("base", BASE_COLOR), ("tuned", TUNED_COLOR)):
        for item in suite.items:
            path = caches[role].path(item, 0)
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (16, 16), color).save(path)
    return suite, PairedImages(caches)


def judge_through_openai(
    httpserver: HTTPServer, paired: tuple[Suite, PairedImages], judge: Judge
) -> tuple[dict[str, Comparison], int, ScriptedChatCompletions]:
    server = ScriptedChatCompletions([lambda body: judge(tuned_shown_first(openai_images(body)))])
    config = VLMJudgeConfig(
        provider="openai",
        model="judge-model",
        base_url=server.install(httpserver),
        api_key=SecretStr(API_KEY),
        concurrency=3,
    )
    observations, unreadable = measure_vlm(*paired, config.create(), config.concurrency)
    comparisons = {c.metric: c for c in compare(observations) if c.group == ALL}
    return comparisons, unreadable, server


class TestOpenAIJudge:
    def test_always_first_is_a_tie_on_every_pair(
        self, httpserver: HTTPServer, paired_images: tuple[Suite, PairedImages]
    ) -> None:
        comparisons, unreadable, _ = judge_through_openai(httpserver, paired_images, always_first)
        assert unreadable == 0
        assert set(comparisons) == set(JUDGE_QUESTIONS)
        for comparison in comparisons.values():
            rate = comparison.win_rate
            assert (rate.wins, rate.ties, rate.losses) == (0, 4, 0)
            assert rate.rate == 0.5

    def test_a_judge_preferring_the_tuned_image_gives_100_percent(
        self, httpserver: HTTPServer, paired_images: tuple[Suite, PairedImages]
    ) -> None:
        comparisons, _, _ = judge_through_openai(httpserver, paired_images, prefers_tuned)
        assert [c.win_rate.rate for c in comparisons.values()] == [1.0, 1.0, 1.0]

    def test_a_judge_preferring_the_base_image_gives_0_percent(
        self, httpserver: HTTPServer, paired_images: tuple[Suite, PairedImages]
    ) -> None:
        comparisons, _, _ = judge_through_openai(httpserver, paired_images, prefers_base)
        assert [c.win_rate.losses for c in comparisons.values()] == [4, 4, 4]

    def test_every_question_is_asked_in_both_orders(
        self, httpserver: HTTPServer, paired_images: tuple[Suite, PairedImages]
    ) -> None:
        _, _, server = judge_through_openai(httpserver, paired_images, always_first)
        asked = []
        for request in server.requests:
            body = request["body"]
            assert body["model"] == "judge-model"
            assert request["headers"]["Authorization"] == f"Bearer {API_KEY}"
            text = openai_text(body)
            prompt = next(p for p in PROMPTS if f'"{p}"' in text)
            question = next(q for q, words in JUDGE_QUESTIONS.items() if words in text)
            asked.append((prompt, question, tuned_shown_first(openai_images(body))))
        expected = {(p, q, first) for p in PROMPTS for q in JUDGE_QUESTIONS for first in (1, 0)}
        assert sorted(asked) == sorted(expected)

    def test_unreadable_answers_are_left_out_and_counted(
        self, httpserver: HTTPServer, paired_images: tuple[Suite, PairedImages]
    ) -> None:
        comparisons, unreadable, _ = judge_through_openai(httpserver, paired_images, undecided)
        assert unreadable == len(PROMPTS) * len(JUDGE_QUESTIONS)
        assert comparisons == {}


class TestGeminiJudge:
    @pytest.mark.parametrize(("judge", "rate"), [(always_first, 0.5), (prefers_tuned, 1.0)])
    def test_position_swap_over_generate_content(
        self,
        httpserver: HTTPServer,
        paired_images: tuple[Suite, PairedImages],
        judge: Judge,
        rate: float,
    ) -> None:
        server = ScriptedGemini([lambda body: judge(tuned_shown_first(gemini_images(body)))])
        config = VLMJudgeConfig(
            provider="gemini",
            base_url=server.install(httpserver),
            api_key=SecretStr(API_KEY),
        )
        observations, unreadable = measure_vlm(*paired_images, config.create(), 2)
        assert unreadable == 0
        overall = [c for c in compare(observations) if c.group == ALL]
        assert [c.win_rate.rate for c in overall] == [rate] * 3
        assert {request["model"] for request in server.requests} == {"gemini-2.0-flash"}
        assert len(server.requests) == 2 * len(PROMPTS) * len(JUDGE_QUESTIONS)


class TestConfiguration:
    def test_missing_key_is_refused_before_any_request(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        for name in ("GEMINI_API_KEY", "GOOGLE_API_KEY"):
            monkeypatch.delenv(name, raising=False)
        with pytest.raises(ConfigurationError, match="GEMINI_API_KEY or GOOGLE_API_KEY"):
            VLMJudgeConfig(provider="gemini").create()

    def test_the_key_is_never_serialized(self) -> None:
        config = VLMJudgeConfig(api_key=SecretStr(API_KEY))
        assert API_KEY not in config.model_dump_json()
        assert API_KEY not in repr(config)


@pytest.mark.parametrize(
    ("answer", "verdict"),
    [
        ("First", "first"),
        ("The second image.", "second"),
        ("Image 1", "first"),
        ("tie", "tie"),
        ("Both are equally good.", "tie"),
        ("The first image is better than the second.", None),
        ("I don't know", None),
        ("", None),
    ],
)
def test_parse_verdict(answer: str, verdict: str | None) -> None:
    assert parse_verdict(answer) == verdict
