"""Image judges, by name, and how their scores combine into one.

A judge is configured by a `ScorerSpec` (registry name, model, weight). New judges
subclass `ImageScorer` and are added with `register_scorer`, after which a spec
naming them works everywhere (steps, presets, evaluation).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, Field

from agfsync.errors import ConfigurationError
from agfsync.scoring.aesthetic import AestheticScorer
from agfsync.scoring.base import ImageScorer, Scores
from agfsync.scoring.clip_score import CLIPScorer, PickScorer
from agfsync.scoring.pixels import JudgeImages, PixelRecipe, Preprocessing
from agfsync.scoring.vqa import VQAScorer

SCORERS: dict[str, type[ImageScorer]] = {
    scorer.name: scorer for scorer in (VQAScorer, CLIPScorer, AestheticScorer, PickScorer)
}
"""Registered judges by name."""


WEIGHT_PRESETS: dict[str, dict[str, float]] = {
    # The paper combines the three judges but its weights are not legible in our copy;
    # equal weights treat the three 0-100 scales alike.
    "equal": {"vqa": 1 / 3, "clip": 1 / 3, "aesthetic": 1 / 3},
    # What the released AGFSync dataset builder used (no VQA term).
    "agfsync-code": {"clip": 0.85, "aesthetic": 0.15},
}
"""Named judge weightings; `equal` is the default of the full presets."""


def register_scorer(scorer_class: type[ImageScorer]) -> type[ImageScorer]:
    """Make `scorer_class` available to `ScorerSpec` under `scorer_class.name`."""
    SCORERS[scorer_class.name] = scorer_class
    return scorer_class


class ScorerSpec(BaseModel):
    """One judge of the weighted score: which one, on which model, with which weight."""

    name: str = Field(description="Registered judge name, e.g. `clip`.")
    model: str = Field(description="Hub id, local folder or `tiny:<name>` of its model.")
    weight: float = Field(default=1.0, description="Weight of its 0–100 score in the sum.")
    batch_size: int = Field(default=32, ge=1, description="Images per forward pass.")
    preprocessing: Preprocessing = Field(
        default="tensor",
        description="`tensor`: resize, crop and normalize on the judge's device, shared by "
        "judges with the same input; `processor`: the model's own processor (exact parity "
        "with reference implementations).",
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="Judge-specific keyword arguments, e.g. `{mode: probability}` for vqa.",
    )

    @property
    def column(self) -> str:
        """Output column holding this judge's per-image scores."""
        return f"{self.name}_scores"

    def model_references(self) -> list[str]:
        """Every model the judge loads: its own and, when given, a separate processor's."""
        processor = self.options.get("processor")
        return [self.model, *([str(processor)] if processor else [])]

    def scorer_class(self) -> type[ImageScorer]:
        if self.name not in SCORERS:
            raise ConfigurationError(
                f"Unknown scorer {self.name!r}; registered: {', '.join(sorted(SCORERS))}."
            )
        return SCORERS[self.name]

    def create(self, device: str | None = None, dtype: str = "auto") -> ImageScorer:
        return self.scorer_class()(
            self.model,
            device=device,
            dtype=dtype,
            batch_size=self.batch_size,
            preprocessing=self.preprocessing,
            **self.options,
        )


def weighted_scores(
    scores: Mapping[str, Sequence[float]], weights: Mapping[str, float]
) -> list[float]:
    """Per-image `sum(weight * score)` over judges; NaN if any judge's score is NaN."""
    lengths = {len(values) for values in scores.values()}
    if len(lengths) != 1:
        raise ValueError(f"Judges scored different numbers of images: {sorted(lengths)}.")
    (count,) = lengths
    combined = []
    for index in range(count):
        total = 0.0
        for name, values in scores.items():
            value = float(values[index])
            total = math.nan if math.isnan(value) else total + weights[name] * value
        combined.append(total)
    return combined


__all__ = [
    "SCORERS",
    "WEIGHT_PRESETS",
    "AestheticScorer",
    "CLIPScorer",
    "ImageScorer",
    "JudgeImages",
    "PickScorer",
    "PixelRecipe",
    "Preprocessing",
    "ScorerSpec",
    "Scores",
    "register_scorer",
    "weighted_scores",
]
