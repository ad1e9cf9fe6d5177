"""The LLM providers agfsync talks to, and where their API keys come from.

One table for every place that needs a key: the pipeline's LLM steps (checked before
a run starts), the Gemini client and the evaluation's VLM judge. Keys are read from
the environment (or given as arguments) and never logged or written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Provider:
    name: str
    key_variables: tuple[str, ...]
    """Environment variables holding the API key, first set one wins."""
    llm_class: str
    """Name of the distilabel LLM class that talks to it."""


PROVIDERS: dict[str, Provider] = {
    "openai": Provider("openai", ("OPENAI_API_KEY",), "OpenAILLM"),
    "gemini": Provider("gemini", ("GEMINI_API_KEY", "GOOGLE_API_KEY"), "GeminiLLM"),
}
"""OpenAI also stands for any OpenAI-compatible server (vLLM, TGI, llama.cpp, Ollama),
which accepts any key."""


def api_key_from_env(provider: str) -> str | None:
    """The provider's key from the first of its variables that is set, else None."""
    for variable in PROVIDERS[provider].key_variables:
        value = os.environ.get(variable, "").strip()
        if value:
            return value
    return None


def provider_of_llm(llm: object) -> Provider | None:
    """The provider a distilabel LLM object talks to, by its class; None if unknown."""
    name = type(llm).__name__
    return next((p for p in PROVIDERS.values() if p.llm_class == name), None)


def key_variables_text(provider: str) -> str:
    """`A or B`, for messages."""
    return " or ".join(PROVIDERS[provider].key_variables)
