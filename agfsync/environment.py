"""The environment variables agfsync reads, each declared once with what it sets.

Code reads a variable through its `Variable`; `--help` lists each command's variables
from here (with the API keys of `agfsync.llm.providers.PROVIDERS`), so the help and the
code cannot name different ones.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from agfsync.llm.providers import PROVIDERS


@dataclass(frozen=True)
class Variable:
    name: str
    about: str
    """What it sets, and its default, for `--help`."""

    def get(self, default: str | None = None) -> str | None:
        """The variable's value, else `default`."""
        return os.environ.get(self.name, default)


HF_TOKEN = Variable(
    "HF_TOKEN", "Hugging Face token: gated or private models and datasets, uploads."
)
HF_ENDPOINT = Variable("HF_ENDPOINT", "Address of the Hub [default: https://huggingface.co].")
HF_HUB_OFFLINE = Variable(
    "HF_HUB_OFFLINE", "1: load models from the Hugging Face cache only, never the Hub."
)
AGFSYNC_CACHE_DIR = Variable(
    "AGFSYNC_CACHE_DIR", "agfsync's cache of the tiny models it builds [default: ~/.cache/agfsync]."
)
DISTILABEL_CACHE_DIR = Variable(
    "DISTILABEL_CACHE_DIR",
    "distilabel's resume cache of pipeline runs [default: ~/.cache/distilabel].",
)
OPENAI_BASE_URL = Variable(
    "OPENAI_BASE_URL", "An OpenAI-compatible server (vLLM, TGI, llama.cpp, Ollama)."
)
ARGILLA_API_URL = Variable("ARGILLA_API_URL", "Argilla server (or --api-url).")
ARGILLA_API_KEY = Variable("ARGILLA_API_KEY", "Argilla API key (or --api-key).")
AGFSYNC_ARGILLA_REQUEST_BYTES = Variable(
    "AGFSYNC_ARGILLA_REQUEST_BYTES",
    "Most bytes of records `argilla push` sends in one request [default: 16 MiB].",
)
AGFSYNC_DEBUG = Variable(
    "AGFSYNC_DEBUG",
    "1: an unexpected error prints its plain traceback (no local variables) before its "
    "one-line message.",
)
ACCELERATE_MIXED_PRECISION = Variable(
    "ACCELERATE_MIXED_PRECISION",
    "Mixed precision when --mixed-precision is not given (`accelerate config` sets it).",
)


def hub_token(given: str | None = None) -> str | None:
    """The Hugging Face token a command uses: `given` (its --hub-token), else HF_TOKEN,
    else the login `hf auth login` stored; None when there is none. Read for the
    request only: agfsync never writes it anywhere."""
    if given:
        return given
    from huggingface_hub import get_token

    return HF_TOKEN.get() or get_token()


HUB = (HF_TOKEN, HF_ENDPOINT)
"""What every command reading from or writing to the Hub reads."""
MODELS = (HF_TOKEN, HF_ENDPOINT, HF_HUB_OFFLINE, AGFSYNC_CACHE_DIR)
"""What every command loading models reads."""


def provider_keys() -> tuple[Variable, ...]:
    """The API keys of the LLM providers, from their table."""
    keys = []
    for provider in PROVIDERS.values():
        first_set_wins = " (the first one set wins)." if len(provider.key_variables) > 1 else "."
        for name in provider.key_variables:
            keys.append(Variable(name, f"API key of the {provider.name} LLMs{first_set_wins}"))
    return tuple(keys)


def environment_help(variables: tuple[Variable, ...]) -> str:
    """The `environment variables:` section of a command's `--help`."""
    lines = [f"  {variable.name}: {variable.about}" for variable in variables]
    return "\n".join(["environment variables:", *lines])
