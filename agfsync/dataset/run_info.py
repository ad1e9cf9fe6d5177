"""What a run was, kept next to its dataset as `run.json`.

The rows say how each image was made (seeds, sigmas, model) and scored; what they
cannot say is what the run was as a whole: the preset, the models of the LLM
steps, the judges and their weights, and the prompts that got no pair (they are
not rows of a preference dataset, yet the card's conversion rate and a user
auditing the run need them). `agfsync publish` and the card read this file, so a
dataset folder can be published and described long after the run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from agfsync.errors import ConfigurationError


def agfsync_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("agfsync")
    except PackageNotFoundError:
        return "unknown"


RUN_INFO_FILE = "run.json"


class JudgeInfo(BaseModel):
    name: str
    model: str | None = Field(description="Checkpoint the judge loaded (None: its default).")
    weight: float


class UnpairedPrompt(BaseModel):
    """A prompt that got no preference pair, and why (the pair step's `pair_error`)."""

    @classmethod
    def of(cls, row: dict[str, Any]) -> UnpairedPrompt:
        """The record of a pipeline row without a pair."""
        return cls(
            prompt_id=row["prompt_id"],
            prompt=row["prompt"],
            category=row.get("category"),
            reason=row["pair_error"],
        )

    prompt_id: str
    prompt: str
    category: str | None
    reason: str


class RunInfo(BaseModel):
    preset: str
    agfsync_version: str = Field(default_factory=lambda: agfsync_version())
    prompt_file: str | None = Field(
        default=None, description="Name of the prompt file read (None: written by an LLM)."
    )
    seed: int | None = Field(description="Run seed every image seed is derived from.")
    llm_models: dict[str, str] = Field(
        default_factory=dict, description="Model of each LLM step, by step name."
    )
    judges: list[JudgeInfo] = Field(default_factory=list)
    weights_source: str | None = Field(
        default=None,
        description="Where the judges' weights came from when not the preset's (`--weights`).",
    )
    unpaired: list[UnpairedPrompt] = Field(default_factory=list)

    def save(self, folder: Path) -> Path:
        path = folder / RUN_INFO_FILE
        path.write_text(self.model_dump_json(indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, folder: Path) -> RunInfo:
        path = folder / RUN_INFO_FILE
        if not path.is_file():
            raise ConfigurationError(
                f"{folder} has no {RUN_INFO_FILE}: it is not the output folder of "
                "`agfsync generate` with an image preset (or was made by an older version; "
                "run the same `agfsync generate` command again, finished work is reused)."
            )
        try:
            return cls.model_validate(json.loads(path.read_text(encoding="utf-8")))
        except ValueError as error:
            raise ConfigurationError(f"{path} is not a valid run record: {error}") from error
