"""Numbers that describe a preference dataset: what the card and the report print.

Computed from the dataset's plain columns (images are never decoded here) and the
run record, so they are cheap on a dataset of any size.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from statistics import fmean, pstdev
from typing import Any

import datasets

from agfsync.dataset.folder import IMAGE_COLUMNS
from agfsync.dataset.run_info import RunInfo
from agfsync.text.qa import qa_statistics

SCORE_COLUMNS = ("vqa_scores", "clip_scores", "aesthetic_scores", "pick_scores", "weighted_scores")
"""Per-candidate score columns, in the order the card lists them (absent ones skipped)."""


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e-?\d+)?")


def reason_kind(reason: str) -> str:
    """A reason with its numbers replaced by `N`, so reasons of one kind count together
    ("score margin N is below the minimum of N")."""
    return _NUMBER.sub("N", reason)


@dataclass(frozen=True)
class Distribution:
    count: int
    mean: float
    std: float
    minimum: float
    maximum: float

    @classmethod
    def of(cls, values: list[float]) -> Distribution:
        finite = [value for value in values if value is not None and math.isfinite(value)]
        if not finite:
            return cls(0, math.nan, math.nan, math.nan, math.nan)
        return cls(len(finite), fmean(finite), pstdev(finite), min(finite), max(finite))


@dataclass(frozen=True)
class DatasetStatistics:
    num_pairs: int
    num_unpaired: int
    pairs_per_category: dict[str, int]
    prompts_per_category: dict[str, int]
    words_per_prompt: float
    questions_per_prompt: float
    question_types: dict[str, int]
    candidates_per_prompt: int
    noise_sigmas: list[float]
    image_models: list[str]
    generation_config: dict[str, Any]
    scores: dict[str, list[float]] = field(repr=False)
    """Every candidate's score, per score column (for histograms)."""
    chosen_scores: dict[str, float]
    """Mean score of the chosen images, per score column."""
    rejected_scores: dict[str, float]
    margins: list[float] = field(repr=False)
    unpaired_reasons: dict[str, int]

    @property
    def num_prompts(self) -> int:
        return self.num_pairs + self.num_unpaired

    @property
    def conversion_rate(self) -> float:
        """Share of prompts that became a preference pair."""
        return self.num_pairs / self.num_prompts if self.num_prompts else 0.0

    def score_distribution(self, column: str) -> Distribution:
        return Distribution.of(self.scores[column])

    def margin_quantiles(self, quantiles: tuple[float, ...] = (0.1, 0.5, 0.9)) -> list[float]:
        ordered = sorted(self.margins)
        if not ordered:
            return [math.nan for _ in quantiles]
        return [ordered[min(len(ordered) - 1, int(q * len(ordered)))] for q in quantiles]


def dataset_statistics(dataset: datasets.Dataset, run: RunInfo) -> DatasetStatistics:
    """Statistics of a preference dataset written by `agfsync generate`."""
    columns = [name for name in dataset.column_names if name not in IMAGE_COLUMNS]
    rows: list[dict[str, Any]] = list(dataset.select_columns(columns))
    score_columns = [name for name in SCORE_COLUMNS if name in columns]
    scores = {name: [v for row in rows for v in row[name]] for name in score_columns}
    chosen = {
        name: fmean(row[name][row["chosen_index"]] for row in rows) if rows else math.nan
        for name in score_columns
    }
    rejected = {
        name: fmean(row[name][row["rejected_index"]] for row in rows) if rows else math.nan
        for name in score_columns
    }
    prompts = [row["prompt"] for row in rows] + [item.prompt for item in run.unpaired]
    qa = qa_statistics(rows)
    first: dict[str, Any] = rows[0] if rows else {}
    return DatasetStatistics(
        num_pairs=len(rows),
        num_unpaired=len(run.unpaired),
        pairs_per_category=dict(sorted(Counter(row["category"] for row in rows).items())),
        prompts_per_category=dict(
            sorted(
                Counter(
                    [row["category"] for row in rows]
                    + [item.category or "(none)" for item in run.unpaired]
                ).items()
            )
        ),
        words_per_prompt=fmean(len(p.split()) for p in prompts) if prompts else 0.0,
        questions_per_prompt=qa.questions_per_prompt,
        question_types=qa.element_types,
        candidates_per_prompt=len(first.get("image_paths", [])),
        noise_sigmas=sorted(
            {s for row in rows for s in row.get("noise_sigmas") or [] if s is not None}
        ),
        image_models=sorted({row["image_model"] for row in rows if row.get("image_model")}),
        generation_config=dict(first.get("generation_config") or {}),
        scores=scores,
        chosen_scores=chosen,
        rejected_scores=rejected,
        margins=[row["score_margin"] for row in rows],
        unpaired_reasons=dict(
            Counter(reason_kind(item.reason) for item in run.unpaired).most_common()
        ),
    )
