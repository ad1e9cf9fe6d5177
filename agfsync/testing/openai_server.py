"""A loopback server speaking the OpenAI chat-completions API, for tests and benchmarks.

It answers from a script (one entry per request: a completion text, a list of
texts for `n` choices, an HTTP error, or a function of the request body returning
the text) and keeps every request it received, so tests can check what the real
`openai` client sent. Tests mount it on pytest-httpserver (`install`); benchmarks
run it on its own thread (`serve`). Needs the `dev` extra (werkzeug).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from werkzeug import Request, Response
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

if TYPE_CHECKING:
    from pytest_httpserver import HTTPServer


@dataclass
class HTTPError:
    status: int
    headers: dict[str, str] = field(default_factory=dict)


Responder = Callable[[dict[str, Any]], str]
TokenCounter = Callable[[dict[str, Any], list[str]], tuple[int, int]]
"""(prompt tokens, completion tokens) of a request body and its answer texts."""


def fixed_usage(body: dict[str, Any], texts: list[str]) -> tuple[int, int]:
    return 11, 7


class _Quiet(WSGIRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


@dataclass
class ScriptedChatCompletions:
    script: list[Any]
    requests: list[dict[str, Any]] = field(default_factory=list)
    usage: TokenCounter = fixed_usage
    _server: BaseWSGIServer | None = None

    def install(self, server: HTTPServer) -> str:
        """Answer `POST /v1/chat/completions` on a pytest-httpserver; returns the base URL."""
        server.expect_request("/v1/chat/completions", method="POST").respond_with_handler(
            self.respond
        )
        return server.url_for("/v1")

    def serve(self) -> str:
        """Answer on a server of its own (127.0.0.1, a free port); returns the base URL."""

        @Request.application
        def app(request: Request) -> Response:
            return self.respond(request)

        self._server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=_Quiet)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self._server.server_port}/v1"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()

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
        prompt_tokens, completion_tokens = self.usage(body, texts)
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
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
        return Response(json.dumps(payload), content_type="application/json")
