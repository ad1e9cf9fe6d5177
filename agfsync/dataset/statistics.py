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

from agfsync.dataset.folder import IMAGE_COLUMNS, TIE_LABEL
from agfsync.dataset.run_info import RunInfo
from agfsync.pairs import TIE
from agfsync.text.qa import qa_statistics

SCORE_COLUMNS = ("vqa_scores", "clip_scores", "aesthetic_scores", "pick_scores", "weighted_scores")
"""Per-candidate score columns, in the order the card lists them (absent ones skipped)."""


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e-?\d+)?")


def reason_kind(reason: str) -> str:
    """A reason with its numbers replaced by `N`, so reasons of one kind count together
    ("score margin N is below the minimum of N")."""
    return _NUMBER.sub("N", reason)


def reason_label(reason: str) -> str:
    """The kind of a reason, short enough for a table cell: its text before the first
    colon ("tie"), numbers as `N`."""
    return reason_kind(reason).split(": ", 1)[0]


def counts_text(counts: dict[str, int]) -> str:
    """`reason (count)` items, most frequent first: `tie (2); score margin ... (1)`."""
    return "; ".join(f"{name} ({count})" for name, count in counts.items())


NO_CATEGORY = "(none)"
"""The category of a prompt that has none, in the per-category counts."""


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
    unpaired_per_category: dict[str, dict[str, int]]
    """Why the prompts of each category got no pair: reason label -> count."""
    num_ties: int
    """Pairs kept although their two images scored alike (`label_0 = 0.5`)."""
    ties_left_out: int
    """Ties that got no pair (the default without `--keep-ties`)."""
    min_margin: float
    """The smallest score margin a pair could have (`--min-margin`)."""

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

    def ties_text(self) -> str:
        """How the ties were treated: kept as pairs (`--keep-ties`), left out, or both
        (a re-selection keeps the original run's left-out ties out)."""
        parts = []
        if self.num_ties:
            parts.append(f"{self.num_ties} kept as pairs with label_0 = 0.5 (--keep-ties)")
        if self.ties_left_out or not self.num_ties:
            parts.append(f"{self.ties_left_out} left without a pair")
        return "; ".join(parts)

    def summary_rows(self) -> list[list[str]]:
        """`[measure, value]` rows of the overview the card and the report print (plain
        text)."""
        low, median, high = self.margin_quantiles()
        return [
            ["prompts", str(self.num_prompts)],
            ["preference pairs", str(self.num_pairs)],
            ["conversion rate (pairs / prompts)", f"{self.conversion_rate:.1%}"],
            ["ties (best and worst candidate scored alike)", self.ties_text()],
            ["minimum score margin (--min-margin)", f"{self.min_margin:g}"],
            ["words per prompt", f"{self.words_per_prompt:.2f} (paper: 26.06)"],
            ["valid questions per prompt", f"{self.questions_per_prompt:.2f} (paper: 9.03)"],
            ["score margin (10% / 50% / 90%)", f"{low:.3f} / {median:.3f} / {high:.3f}"],
        ]


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
    paired_categories = [row["category"] or NO_CATEGORY for row in rows]
    unpaired_categories = [item.category or NO_CATEGORY for item in run.unpaired]
    qa = qa_statistics(rows)
    first: dict[str, Any] = rows[0] if rows else {}
    return DatasetStatistics(
        num_pairs=len(rows),
        num_unpaired=len(run.unpaired),
        pairs_per_category=dict(sorted(Counter(paired_categories).items())),
        prompts_per_category=dict(sorted(Counter(paired_categories + unpaired_categories).items())),
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
        unpaired_per_category=_unpaired_per_category(run),
        num_ties=sum(row.get("label_0") == TIE_LABEL for row in rows),
        ties_left_out=sum(item.reason.startswith(TIE) for item in run.unpaired),
        min_margin=run.min_margin,
    )


def _unpaired_per_category(run: RunInfo) -> dict[str, dict[str, int]]:
    reasons: dict[str, Counter[str]] = {}
    for item in run.unpaired:
        reasons.setdefault(item.category or NO_CATEGORY, Counter())[reason_label(item.reason)] += 1
    return {category: dict(counts.most_common()) for category, counts in sorted(reasons.items())}
