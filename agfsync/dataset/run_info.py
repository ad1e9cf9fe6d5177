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


class WeightsInfo(BaseModel):
    """Where the judges' weights came from when a run was given `--weights`."""

    file: str = Field(description="Name of the weights file (its folder is not recorded).")
    sha256: str = Field(description="Digest of the weights file as read.")
    fitted: bool = Field(
        description="Fitted to human reviews by `agfsync calibrate` (False: written by hand)."
    )
    source: str | None = Field(
        default=None, description="The reviewed data they were fitted on (Hub repo or folder name)."
    )
    pairs: int | None = Field(default=None, description="Reviewed pairs they were fitted on.")
    held_out_agreement: float | None = Field(
        default=None, description="Agreement with people on held-out pairs."
    )
    interval_95: tuple[float, float] | None = Field(
        default=None, description="95% Wilson interval of the held-out agreement."
    )
    verdict: str | None = Field(
        default=None, description="`agfsync calibrate`'s comparison with the other mixes."
    )

    def describe(self) -> str:
        """One line for the card, the report and the command's output."""
        if not self.fitted:
            return f"from {self.file}, written by hand (not fitted to human reviews)"
        of = f" of {self.source}" if self.source else ""
        line = (
            f"fitted with agfsync calibrate to {self.pairs} human-reviewed pairs{of} ({self.file})"
        )
        if self.held_out_agreement is not None and self.interval_95 is not None:
            low, high = self.interval_95
            line += (
                f"; held-out agreement with people {self.held_out_agreement:.1%} "
                f"(95% interval {low:.1%}-{high:.1%})"
            )
        return line


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


class GenerateOptions(BaseModel):
    """The options of `agfsync generate` that changed a run's data (None: the preset's
    value), so that the card can print the command that reproduces it. Files are kept
    by name only: they are the user's, not part of the dataset."""

    prompts_file: str | None = Field(default=None, description="Name of the `--prompts` file.")
    num_prompts: int | None = Field(default=None, description="`--num-prompts`.")
    categories_file: str | None = Field(
        default=None, description="Name of the `--categories` file."
    )
    prompts_per_category: int | None = Field(default=None, description="`--prompts-per-category`.")
    dedup_method: str | None = Field(default=None, description="`--dedup`.")
    prompt_model: str | None = Field(default=None, description="`--prompt-model`.")
    qa_model: str | None = Field(default=None, description="`--qa-model`.")
    num_images: int | None = Field(default=None, description="`--num-images`.")
    resolution: int | None = Field(default=None, description="`--resolution`.")
    sampling: str | None = Field(default=None, description="`--sampling`.")
    weights_file: str | None = Field(default=None, description="Name of the `--weights` file.")

    def flags(self) -> list[tuple[str, str]]:
        """`(flag, value)` of every option set, in the order `agfsync generate --help`
        lists them."""
        values = [
            ("--prompts", self.prompts_file),
            ("--num-prompts", self.num_prompts),
            ("--categories", self.categories_file),
            ("--prompts-per-category", self.prompts_per_category),
            ("--dedup", self.dedup_method),
            ("--prompt-model", self.prompt_model),
            ("--qa-model", self.qa_model),
            ("--num-images", self.num_images),
            ("--resolution", self.resolution),
            ("--sampling", self.sampling),
            ("--weights", self.weights_file),
        ]
        return [(flag, str(value)) for flag, value in values if value is not None]


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
    weights: WeightsInfo | None = Field(
        default=None, description="The `--weights` file's provenance (None: the preset's)."
    )
    reselected_from: str | None = Field(
        default=None,
        description="The dataset folder whose recorded scores `agfsync reselect` picked these "
        "pairs from (nothing rendered or judged again).",
    )
    unpaired: list[UnpairedPrompt] = Field(default_factory=list)
    min_margin: float = Field(
        default=0.0,
        description="Smallest weighted-score margin a pair could have (`--min-margin`); "
        "prompts below it got no pair.",
    )
    keep_ties: bool = Field(
        default=False,
        description="Whether ties (margin 0) were exported with `label_0 = 0.5` "
        "(`--keep-ties`) rather than left without a pair.",
    )
    options: GenerateOptions = Field(
        default_factory=GenerateOptions,
        description="The `agfsync generate` options that changed the data.",
    )

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
