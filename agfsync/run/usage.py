"""Token usage out of distilabel's LLM statistics."""

from typing import Any


def add_token_usage(total: dict[str, int], statistics: dict[str, Any]) -> None:
    """Add one `generate_outputs` result's input/output token counts to `total`."""
    for key in ("input_tokens", "output_tokens"):
        total[key] += sum(value or 0 for value in statistics.get(key, []))
