"""Comparing texts written by people and LLMs."""

import re

_SPACES = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """Lower case, single spaces, no trailing punctuation: the form in which two
    questions or prompts that differ only in such details compare equal."""
    return _SPACES.sub(" ", text.lower()).strip().rstrip("?.!").strip()
