"""A loopback server speaking the Gemini API's `generateContent`, for tests.

It answers from a script, one entry per request (the last entry repeats):

- a text: that text for every requested candidate (`candidateCount`);
- a list: one candidate per item, `None` being a candidate blocked for safety;
- `HTTPError`: an error in the Gemini API's format, with optional headers and
  `details` (e.g. a `google.rpc.RetryInfo`);
- `BlockedPrompt`: no candidates, `promptFeedback.blockReason` set;
- `Slow(seconds, step)`: `step`, after sleeping (to make the client time out);
- a callable: called with the request body, returns one of the above.

Every request is kept (path, API version, model, headers, JSON body), so tests can
check what the real `google-genai` client sent.
"""

import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

GENERATE_CONTENT = re.compile(r"^/(?P<version>v1|v1beta)/models/(?P<model>[^/:]+):generateContent$")
_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    403: "PERMISSION_DENIED",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


@dataclass
class HTTPError:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    message: str = "scripted error"
    details: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class BlockedPrompt:
    reason: str = "SAFETY"


@dataclass
class Slow:
    seconds: float
    step: Any


@dataclass
class ScriptedGemini:
    script: list[Any]
    prompt_tokens: int = 11
    tokens_per_candidate: int = 7
    thoughts_tokens: int | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)

    def install(self, server: HTTPServer) -> str:
        server.expect_request(GENERATE_CONTENT, method="POST").respond_with_handler(self.respond)
        return server.url_for("/")

    def respond(self, request: Request) -> Response:
        match = GENERATE_CONTENT.match(request.path)
        assert match is not None
        body = json.loads(request.data)
        self.requests.append(
            {
                "path": request.path,
                "version": match["version"],
                "model": match["model"],
                "headers": dict(request.headers),
                "body": body,
            }
        )
        step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(step, Slow):
            time.sleep(step.seconds)
            step = step.step
        if callable(step):
            step = step(body)
        if isinstance(step, HTTPError):
            error = {
                "error": {
                    "code": step.status,
                    "message": step.message,
                    "status": _STATUS_NAMES.get(step.status, "UNKNOWN"),
                    "details": step.details,
                }
            }
            return _json(error, status=step.status, headers=step.headers)
        if isinstance(step, BlockedPrompt):
            usage = {"promptTokenCount": self.prompt_tokens, "totalTokenCount": self.prompt_tokens}
            return _json({"promptFeedback": {"blockReason": step.reason}, "usageMetadata": usage})
        count = body.get("generationConfig", {}).get("candidateCount", 1)
        texts: list[str | None] = step if isinstance(step, list) else [step] * count
        return _json(
            {
                "candidates": [_candidate(index, text) for index, text in enumerate(texts)],
                "usageMetadata": self._usage(texts),
                "modelVersion": match["model"],
            }
        )

    def _usage(self, texts: list[str | None]) -> dict[str, int]:
        output = self.tokens_per_candidate * sum(text is not None for text in texts)
        usage = {
            "promptTokenCount": self.prompt_tokens,
            "candidatesTokenCount": output,
            "totalTokenCount": self.prompt_tokens + output + (self.thoughts_tokens or 0),
        }
        if self.thoughts_tokens is not None:
            usage["thoughtsTokenCount"] = self.thoughts_tokens
        return usage


def _candidate(index: int, text: str | None) -> dict[str, Any]:
    if text is None:
        return {
            "index": index,
            "finishReason": "SAFETY",
            "safetyRatings": [
                {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH"}
            ],
        }
    return {
        "index": index,
        "content": {"role": "model", "parts": [{"text": text}]},
        "finishReason": "STOP",
    }


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(payload), status=status, headers=headers, content_type="application/json"
    )
