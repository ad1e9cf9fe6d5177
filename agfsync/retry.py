"""Retrying transient failures: one rule for every client agfsync owns.

A failed call is retried when the caller says the failure is transient (a timeout, a
dropped connection, HTTP 408/429/5xx). The wait doubles from `initial_delay` up to
`max_delay`, jittered so that parallel workers do not retry in step, and is never
shorter than what the server asked for (`Retry-After`, in seconds or as an HTTP date)
nor longer than `max_delay`. The Hub publisher and the Gemini client use it; OpenAI-
compatible calls go through the `openai` client, which follows the same rule itself.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

T = TypeVar("T")

RETRYABLE_STATUS_CODES = frozenset({408, 429, 500, 502, 503, 504})
"""HTTP statuses worth another attempt (the set google-genai and openai retry)."""


@dataclass(frozen=True)
class Backoff:
    """How often and how long to wait before trying a failed call again."""

    retries: int = 3
    """Attempts after the first one."""
    initial_delay: float = 1.0
    """Seconds before the first retry, doubled on each retry after it."""
    max_delay: float = 60.0
    """The longest wait between two attempts, also bounding the server's request."""

    def delay(self, attempt: int, server_delay: float | None = None) -> float:
        """Seconds to wait after failed attempt number `attempt` (0 for the first)."""
        ceiling = min(self.initial_delay * 2**attempt, self.max_delay)
        delay = ceiling * (0.5 + random.random() / 2)
        if server_delay is not None:
            delay = max(delay, server_delay)
        return min(delay, self.max_delay)


def retry_after_seconds(headers: Mapping[str, str] | None) -> float | None:
    """The wait a `Retry-After` header asks for (seconds or an HTTP date); None if absent
    or unreadable."""
    value = headers.get("retry-after") if headers is not None else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def http_status(error: BaseException) -> int | None:
    """The HTTP status of an error that carries a response (httpx, requests, the Hub)."""
    status = getattr(getattr(error, "response", None), "status_code", None)
    return status if isinstance(status, int) else None


def server_delay(error: BaseException) -> float | None:
    """The `Retry-After` of the response an error carries, if any."""
    headers = getattr(getattr(error, "response", None), "headers", None)
    return retry_after_seconds(headers) if isinstance(headers, Mapping) else None


OnRetry = Callable[[BaseException, int, float], None]
"""Told of each retry: the error, the retry's number (1 for the first) and the wait."""


@dataclass
class _Attempts:
    """The bookkeeping both retry loops share."""

    backoff: Backoff
    is_transient: Callable[[BaseException], bool]
    delay_asked: Callable[[BaseException], float | None]
    on_retry: OnRetry | None
    made: int = 0

    def wait_after(self, error: Exception) -> float:
        """Seconds to wait before trying again after `error`; raises `error` itself when
        it is not transient or the retries are spent."""
        if self.made >= self.backoff.retries or not self.is_transient(error):
            raise error
        delay = self.backoff.delay(self.made, self.delay_asked(error))
        self.made += 1
        if self.on_retry is not None:
            self.on_retry(error, self.made, delay)
        return delay


def call_with_retries(
    call: Callable[[], T],
    *,
    backoff: Backoff,
    is_transient: Callable[[BaseException], bool],
    delay_asked: Callable[[BaseException], float | None] = server_delay,
    on_retry: OnRetry | None = None,
    sleep: Callable[[float], Any] = time.sleep,
) -> T:
    """`call()`, tried again after transient failures; the last error is raised as is."""
    attempts = _Attempts(backoff, is_transient, delay_asked, on_retry)
    while True:
        try:
            return call()
        except Exception as error:
            sleep(attempts.wait_after(error))


async def acall_with_retries(
    call: Callable[[], Awaitable[T]],
    *,
    backoff: Backoff,
    is_transient: Callable[[BaseException], bool],
    delay_asked: Callable[[BaseException], float | None] = server_delay,
    on_retry: OnRetry | None = None,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
) -> T:
    """The asynchronous twin of `call_with_retries`."""
    attempts = _Attempts(backoff, is_transient, delay_asked, on_retry)
    while True:
        try:
            return await call()
        except Exception as error:
            await sleep(attempts.wait_after(error))
