"""A vision-language model as pairwise judge of base against tuned images.

As in the AGFSync paper's GPT-4V study, the judge sees the prompt and two images
and answers three questions: which image it prefers overall, which matches the
text better, which is more visually appealing; "tie" is allowed. VLM judges favour
one position, so every question is asked in both orders (tuned first, then base
first) and each order casts a vote; the pair is a win for tuned when tuned gets
more votes than base, a loss when fewer, a tie otherwise. A judge that always
answers "first" therefore produces only ties (a 50% win rate), however biased.
A pair whose answer in either order cannot be read is left out of that question
and counted as unreadable.

Providers: any OpenAI-compatible chat-completions server with image input
(`openai`), or Google Gemini (`gemini`, needs the `gemini` extra). The API key comes
from the argument or the provider's environment variable and is never logged or
written.
"""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from PIL import Image
from pydantic import BaseModel, Field, SecretStr

from agfsync.errors import ConfigurationError
from agfsync.llm.providers import api_key_from_env, key_variables_text
from agfsync.progress import progress

if TYPE_CHECKING:
    from distilabel.models.llms.base import LLM

Verdict = Literal["first", "second", "tie"]

JUDGE_QUESTIONS: dict[str, str] = {
    "overall_preference": "Which image do you prefer overall?",
    "text_fidelity": "Which image matches the text better?",
    "visual_appeal": "Which image is more visually appealing?",
}
"""The three questions of the paper's GPT-4V comparison (paper: tuned wins 62%, 67%, 69%)."""

INSTRUCTION = (
    "Two images were generated from the text prompt below. Compare them.\n"
    'Prompt: "{prompt}"\n'
    "{question} Answer with exactly one word: first, second, or tie."
)

MAX_RETRIES = 3
"""Retries of a failed request (by the client, with the provider's backoff rule)."""

DEFAULT_MODELS = {"openai": "gpt-4o", "gemini": "gemini-2.0-flash"}
"""The paper's GPT-4V (`gpt-4-vision-preview`) is retired; gpt-4o is its vision successor."""

_TIE_WORDS = ("tie", "equal", "both", "neither", "same")
_WORDS = re.compile(r"[a-z0-9]+")


def parse_verdict(text: str) -> Verdict | None:
    """ "first" / "second" / "tie" from a free-text answer; None when it names neither
    or both images ("The first is better than the second")."""
    words = set(_WORDS.findall(text.lower()))
    first = bool(words & {"first", "1"})
    second = bool(words & {"second", "2"})
    if words & set(_TIE_WORDS) and not (first ^ second):
        return "tie"
    if first and not second:
        return "first"
    if second and not first:
        return "second"
    return None


def votes(tuned_first: Verdict | None, base_first: Verdict | None) -> tuple[int, int] | None:
    """(tuned votes, base votes) from the answers in the two orders; None when either
    answer is unreadable."""
    if tuned_first is None or base_first is None:
        return None
    tuned = (tuned_first == "first") + (base_first == "second")
    base = (tuned_first == "second") + (base_first == "first")
    return tuned, base


class PairJudge:
    """Asks a VLM questions about two images through the same distilabel LLM clients as
    the prompt and QA stages (`OpenAILLM`, agfsync's `GeminiLLM`): one message format
    (OpenAI chat with image parts), one retry rule, one API-key table."""

    def __init__(self, llm: LLM) -> None:
        self.llm = llm
        self.llm.load()

    def ask(self, questions: Sequence[tuple[str, bytes, bytes]]) -> list[str]:
        """The model's answers to `(instruction, first PNG, second PNG)` questions, sent
        at once; the images are shown in that order."""
        conversations = [
            [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "First image:"},
                        {"type": "image_url", "image_url": {"url": _data_url(first)}},
                        {"type": "text", "text": "Second image:"},
                        {"type": "image_url", "image_url": {"url": _data_url(second)}},
                        {"type": "text", "text": instruction},
                    ],
                }
            ]
            for instruction, first, second in questions
        ]
        outputs = self.llm.generate_outputs(
            inputs=conversations,
            num_generations=1,
            temperature=0.0,
        )
        return [(output["generations"] or [None])[0] or "" for output in outputs]


class VLMJudgeConfig(BaseModel):
    """Which VLM judges the pairs, and how to reach it."""

    provider: Literal["openai", "gemini"] = Field(
        default="openai", description="`openai`: any OpenAI-compatible server; `gemini`."
    )
    model: str | None = Field(
        default=None, description="Model name; None: gpt-4o (openai) or gemini-2.0-flash."
    )
    base_url: str | None = Field(
        default=None, description="API base URL; None: the provider's (or OPENAI_BASE_URL)."
    )
    api_key: SecretStr | None = Field(
        default=None,
        description="None: OPENAI_API_KEY, or GEMINI_API_KEY / GOOGLE_API_KEY for gemini.",
        exclude=True,
    )
    concurrency: int = Field(default=4, ge=1, description="Requests in flight at once.")
    timeout: float = Field(default=120.0, gt=0, description="Seconds per request.")

    @property
    def model_name(self) -> str:
        return self.model or DEFAULT_MODELS[self.provider]

    def create(self) -> PairJudge:
        key = self.api_key.get_secret_value() if self.api_key is not None else None
        key = key or api_key_from_env(self.provider)
        if not key:
            raise ConfigurationError(
                f"The {self.provider} VLM judge needs an API key: set "
                f"{key_variables_text(self.provider)} or pass "
                "--vlm-api-key (a local server accepts any string)."
            )
        return PairJudge(self._llm(key))

    def _llm(self, key: str) -> LLM:
        if self.provider == "openai":
            from distilabel.models.llms import OpenAILLM

            where = {"base_url": self.base_url} if self.base_url else {}  # else OPENAI_BASE_URL
            return OpenAILLM(
                **where,
                model=self.model_name,
                api_key=SecretStr(key),
                timeout=round(self.timeout),
                max_retries=MAX_RETRIES,
            )
        from agfsync.llm.gemini import GeminiLLM

        try:
            import google.genai  # noqa: F401
        except ImportError as error:
            raise ConfigurationError(
                "The Gemini judge needs `google-genai`: pip install 'agfsync[gemini]'."
            ) from error
        return GeminiLLM(
            model=self.model_name,
            api_key=SecretStr(key),
            base_url=self.base_url,
            timeout=self.timeout,
            max_retries=MAX_RETRIES,
        )


@dataclass(frozen=True)
class PairVerdicts:
    """A judge's answers about one (base, tuned) pair: per question, both orders."""

    tuned_first: dict[str, Verdict | None]
    base_first: dict[str, Verdict | None]

    def votes(self, question: str) -> tuple[int, int] | None:
        return votes(self.tuned_first[question], self.base_first[question])


def judge_pairs(
    judge: PairJudge,
    pairs: Sequence[tuple[str, Image.Image, Image.Image]],
    *,
    concurrency: int = 4,
) -> list[PairVerdicts]:
    """Ask every question about every `(prompt, base image, tuned image)` in both orders."""
    encoded = [(prompt, _png(base), _png(tuned)) for prompt, base, tuned in pairs]
    tasks = [
        (index, question, tuned_first)
        for index in range(len(encoded))
        for question in JUDGE_QUESTIONS
        for tuned_first in (True, False)
    ]

    def request(task: tuple[int, str, bool]) -> tuple[str, bytes, bytes]:
        index, asked, tuned_first = task
        prompt, base, tuned = encoded[index]
        instruction = INSTRUCTION.format(prompt=prompt, question=JUDGE_QUESTIONS[asked])
        first, second = (tuned, base) if tuned_first else (base, tuned)
        return instruction, first, second

    answers: list[Verdict | None] = []
    with progress("vlm: judge", total=len(tasks), unit="questions") as bar:
        for start in range(0, len(tasks), concurrency):
            chunk = [request(task) for task in tasks[start : start + concurrency]]
            answers.extend(parse_verdict(text) for text in judge.ask(chunk))
            bar.advance(len(chunk))
    results = [PairVerdicts({}, {}) for _ in encoded]
    for (index, question, tuned_first), answer in zip(tasks, answers, strict=True):
        target = results[index].tuned_first if tuned_first else results[index].base_first
        target[question] = answer
    return results


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def _data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
