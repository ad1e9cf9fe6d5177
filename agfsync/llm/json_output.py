"""Reading JSON out of what LLMs actually write.

Models wrap JSON in code fences, add prose around it, leave trailing commas, use
single quotes, or stop mid-list when they hit their token limit. `parse_json_list`
recovers what can be recovered — for a truncated list, the complete items — and
raises `MalformedOutputError` with the reason when nothing can, so the caller can
retry or record the row as failed.
"""

from __future__ import annotations

import ast
import json
import re
from typing import Any

_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)(?:```|$)", re.DOTALL)
_TRAILING_COMMA = re.compile(r",\s*([\]}])")


class MalformedOutputError(ValueError):
    """The output holds no usable JSON list; the message says what was wrong."""


def _strip_fences(text: str) -> str:
    match = _FENCE.search(text)
    return match.group(1) if match else text


def _loads(candidate: str) -> Any:
    """json, then json without trailing commas, then Python literals (single quotes)."""
    for attempt in (candidate, _TRAILING_COMMA.sub(r"\1", candidate)):
        try:
            return json.loads(attempt)
        except json.JSONDecodeError:
            pass
    try:
        return ast.literal_eval(_TRAILING_COMMA.sub(r"\1", candidate))
    except (ValueError, SyntaxError, MemoryError, RecursionError) as error:
        raise MalformedOutputError(f"not valid JSON: {error}") from error


def _complete_items(body: str) -> list[Any]:
    """The items of a list cut off mid-way: everything up to the last complete one."""
    depth, in_string, escaped, last_end = 0, False, False, -1
    for position, char in enumerate(body):
        if in_string:
            escaped = char == "\\" and not escaped
            if char == '"' and not escaped:
                in_string = False
            continue
        if char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
            if depth == 1:
                last_end = position
        elif char == "," and depth == 1:
            last_end = position - 1
    if last_end < 0:
        return []
    recovered = _loads(body[: last_end + 1].rstrip().rstrip(",") + "]")
    return recovered if isinstance(recovered, list) else []


def parse_json_list(text: str, key: str | None = None) -> list[Any]:
    """The JSON list in `text` (or the list under `key` of a JSON object).

    Raises `MalformedOutputError` when no list can be recovered.
    """
    body = _strip_fences(text).strip()
    start = min((i for i in (body.find("["), body.find("{")) if i >= 0), default=-1)
    if start < 0:
        raise MalformedOutputError("no JSON list or object in the output")
    body = body[start:]
    closing = max(body.rfind("]"), body.rfind("}"))
    try:
        parsed = _loads(body[: closing + 1]) if closing > 0 else None
    except MalformedOutputError:
        parsed = None
    if parsed is None and body.startswith("["):
        items = _complete_items(body)
        if items:
            return items
        raise MalformedOutputError("the output list is cut off before its first item ends")
    if parsed is None:
        raise MalformedOutputError("the output is not valid JSON")
    if isinstance(parsed, dict) and key is not None:
        parsed = parsed.get(key)
    if not isinstance(parsed, list):
        raise MalformedOutputError(
            f"expected a JSON list{f' under {key!r}' if key else ''}, got {type(parsed).__name__}"
        )
    return parsed
