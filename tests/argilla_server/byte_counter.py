"""A loopback HTTP proxy in front of the argilla-server fixture that measures what a
client really sends: the largest request body, the longest string inside any JSON
body (an image field's data URI, for instance) and the size of every request that
carries records."""

import http.client
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

RECORDS_PATH = "/records/bulk"
"""Where the Argilla SDK sends a batch of records (`dataset.records.log`)."""
HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "host", "content-length"}


def longest_string(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        return max((longest_string(item) for item in value.values()), default=0)
    if isinstance(value, list):
        return max((longest_string(item) for item in value), default=0)
    return 0


@dataclass
class Measured:
    largest_request: int = 0
    longest_field: int = 0
    requests: int = 0
    record_requests: list[int] = field(default_factory=list)
    """Body sizes of the requests that log records (`.../records/bulk`), in order."""


@contextmanager
def byte_counting_proxy(upstream: str) -> Iterator[tuple[str, Measured]]:
    """(proxy URL, measurements) for the duration of the block."""
    target = urlsplit(upstream)
    measured = Measured()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _forward(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                longest = longest_string(json.loads(body)) if body else 0
            except ValueError:
                longest = 0
            with lock:
                measured.requests += 1
                measured.largest_request = max(measured.largest_request, len(body))
                measured.longest_field = max(measured.longest_field, longest)
                if self.path.split("?")[0].endswith(RECORDS_PATH):
                    measured.record_requests.append(len(body))
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
            connection = http.client.HTTPConnection(target.netloc, timeout=120)
            try:
                connection.request(self.command, self.path, body=body or None, headers=headers)
                response = connection.getresponse()
                payload = response.read()
            finally:
                connection.close()
            self.send_response(response.status)
            for key, value in response.getheaders():
                if key.lower() not in HOP_HEADERS:
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", measured
    finally:
        server.shutdown()
        server.server_close()
