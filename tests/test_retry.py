"""The one retry rule: exponential, jittered, at least the server's Retry-After, capped."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from agfsync.retry import (
    Backoff,
    acall_with_retries,
    call_with_retries,
    retry_after_seconds,
)


class Flaky:
    """Fails `failures` times with `error`, then returns "done"."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures, self.error, self.calls = failures, error, 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "done"


def test_delays_double_with_jitter_and_stop_at_the_cap() -> None:
    backoff = Backoff(retries=10, initial_delay=1.0, max_delay=8.0)
    for attempt, ceiling in enumerate([1, 2, 4, 8, 8, 8]):
        delays = [backoff.delay(attempt) for _ in range(200)]
        assert ceiling / 2 <= min(delays) and max(delays) <= ceiling
        assert max(delays) - min(delays) > 0  # jittered


def test_the_server_s_wait_is_a_floor_and_the_cap_still_holds() -> None:
    backoff = Backoff(initial_delay=0.1, max_delay=30.0)
    assert backoff.delay(0, server_delay=12.0) == 12.0
    assert backoff.delay(0, server_delay=3600.0) == 30.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [("7", 7.0), ("0.5", 0.5), ("-3", 0.0), ("soon", None), ("", None)],
)
def test_retry_after_in_seconds(value: str, expected: float | None) -> None:
    assert retry_after_seconds({"retry-after": value}) == expected


def test_retry_after_as_an_http_date() -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=20), usegmt=True)
    seconds = retry_after_seconds({"retry-after": when})
    assert seconds is not None and 18 <= seconds <= 20
    assert retry_after_seconds(None) is None


def test_transient_failures_are_retried_and_each_retry_reported() -> None:
    waits: list[float] = []
    told: list[int] = []
    flaky = Flaky(2, TimeoutError("slow"))
    result = call_with_retries(
        flaky,
        backoff=Backoff(retries=3, initial_delay=0.01),
        is_transient=lambda error: isinstance(error, TimeoutError),
        on_retry=lambda error, attempt, delay: told.append(attempt),
        sleep=waits.append,
    )
    assert (result, flaky.calls, told, len(waits)) == ("done", 3, [1, 2], 2)


def test_a_permanent_failure_is_raised_at_once() -> None:
    flaky = Flaky(1, ValueError("bad request"))
    with pytest.raises(ValueError, match="bad request"):
        call_with_retries(
            flaky, backoff=Backoff(), is_transient=lambda error: False, sleep=lambda s: None
        )
    assert flaky.calls == 1


def test_when_the_retries_are_spent_the_last_error_is_raised() -> None:
    flaky = Flaky(10, TimeoutError("slow"))
    with pytest.raises(TimeoutError):
        call_with_retries(
            flaky, backoff=Backoff(retries=2), is_transient=lambda error: True, sleep=lambda s: None
        )
    assert flaky.calls == 3


def test_the_async_twin_follows_the_same_rule() -> None:
    flaky = Flaky(2, TimeoutError("slow"))
    waits: list[float] = []

    async def call() -> str:
        return flaky()

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    result = asyncio.run(
        acall_with_retries(
            call,
            backoff=Backoff(retries=2, initial_delay=0.01),
            is_transient=lambda error: True,
            delay_asked=lambda error: 5.0,
            sleep=sleep,
        )
    )
    assert result == "done" and waits == [5.0, 5.0]
