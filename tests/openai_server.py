"""A loopback server speaking the OpenAI chat-completions API, for tests.

It answers from a script (one entry per request: a completion text, a list of
texts for `n` choices, an HTTP error, or a function of the request body returning
the text) and keeps every request it received, so tests can check what the real
`openai` client sent.
"""

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response


@dataclass
class HTTPError:
    status: int
    headers: dict[str, str] = field(default_factory=dict)


Responder = Callable[[dict[str, Any]], str]


@dataclass
class ScriptedChatCompletions:
    script: list[Any]
    requests: list[dict[str, Any]] = field(default_factory=list)

    def install(self, server: HTTPServer) -> str:
        server.expect_request("/v1/chat/completions", method="POST").respond_with_handler(
            self.respond
        )
        return server.url_for("/v1")

    def respond(self, request: Request) -> Response:
        body = json.loads(request.data)
        self.requests.append({"body": body, "headers": dict(request.headers)})
        step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(step, HTTPError):
            error = {"error": {"message": f"scripted {step.status}", "type": "scripted"}}
            return Response(
                json.dumps(error),
                status=step.status,
                headers=step.headers,
                content_type="application/json",
            )
        if callable(step):
            step = step(body)
        texts = step if isinstance(step, list) else [step] * body.get("n", 1)
        payload = {
            "id": f"chatcmpl-{len(self.requests)}",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
                for i, text in enumerate(texts)
            ],
            "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
        }
        return Response(json.dumps(payload), content_type="application/json")
