"""Human review of preference pairs: what reviewers see, and what their answers mean.

Framework-free (the Argilla calls live in `agfsync.review.argilla`):
- which rows to review (`sample_rows`, optionally stratified by category);
- in which order each pair is shown (`shows_rejected_first`: random per record with
  a fixed seed, so reviewers cannot learn that the AI's choice is on the left);
- how several reviewers' answers resolve into one verdict (`resolve_votes`);
- how a verdict rewrites a row (`apply_verdict`) and how well AI and humans agree
  (`agreement`: raw agreement and Cohen's kappa).
"""

from __future__ import annotations

import hashlib
import math
import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

PREFERENCE_LABELS = {
    "image_a": "Image A",
    "image_b": "Image B",
    "both_good": "Both good",
    "both_bad": "Both bad",
    "toxic": "Toxic content",
}
"""Answers of the preference question (value -> what the reviewer reads)."""

Side = Literal["a", "b"]


def shows_rejected_first(record_id: str, seed: int) -> bool:
    """Whether image A of this record is the AI's rejected image.

    A hash of (seed, record id), not a running RNG: the order of a record does not
    depend on which other records were sampled or on the push order, so a re-push
    shows every pair exactly as before.
    """
    digest = hashlib.sha256(f"{seed}:{record_id}".encode()).digest()
    return digest[0] % 2 == 1


def sample_rows(
    rows: Sequence[dict[str, Any]], size: int | None, *, by: str | None, seed: int
) -> list[int]:
    """Indices of the rows to review, in their dataset order.

    With `by` (a column such as `category`), the sample takes rows from each group in
    turn (round robin over groups shuffled with `seed`), so small categories are
    represented; without it, a seeded uniform sample.
    """
    indices = list(range(len(rows)))
    if size is None or size >= len(rows):
        return indices
    rng = random.Random(seed)
    if by is None:
        return sorted(rng.sample(indices, size))
    groups: dict[Any, list[int]] = defaultdict(list)
    for index in indices:
        groups[rows[index].get(by)].append(index)
    queues = [rng.sample(members, len(members)) for _, members in sorted(groups.items(), key=str)]
    chosen: list[int] = []
    while len(chosen) < size:
        for queue in queues:
            if queue and len(chosen) < size:
                chosen.append(queue.pop())
    return sorted(chosen)


@dataclass(frozen=True)
class Verdict:
    votes: dict[str, int]
    """Submitted answers per label."""
    preferred: Side | None
    """Image the reviewers prefer, or None (no answers, a tie, or both bad/toxic)."""

    @property
    def num_reviewers(self) -> int:
        return sum(self.votes.values())


def resolve_votes(answers: Iterable[str]) -> Verdict:
    """Majority over reviewers, as the open image-preferences binarization counts:
    "image_a"/"image_b" is a vote for that image, "both_good" a vote for each, and
    "both_bad"/"toxic" a vote for neither. An image wins when it has more votes than
    the other image and more than "neither"; otherwise the pair stays unresolved."""
    votes = Counter(answers)
    for_a = votes["image_a"] + votes["both_good"]
    for_b = votes["image_b"] + votes["both_good"]
    for_neither = votes["both_bad"] + votes["toxic"]
    preferred: Side | None = None
    if for_a > max(for_b, for_neither):
        preferred = "a"
    elif for_b > max(for_a, for_neither):
        preferred = "b"
    return Verdict(votes=dict(votes), preferred=preferred)


def ai_side(rejected_first: bool) -> Side:
    """Where the AI's chosen image was shown."""
    return "b" if rejected_first else "a"


def apply_verdict(row: dict[str, Any], verdict: Verdict, rejected_first: bool) -> dict[str, Any]:
    """The row with the human verdict applied.

    `jpg_0` stays the AI's chosen image; `label_0` becomes 0 when the reviewers
    prefer the other image and 1 when they prefer it (a kept tie, 0.5, included).
    `label_source` says whose label it is: "human" when the reviewers resolved the
    pair, else "ai".
    """
    reviewed = {
        **row,
        "label_source": "ai",
        "human_votes": {label: verdict.votes.get(label, 0) for label in PREFERENCE_LABELS},
    }
    if verdict.preferred is None:
        return reviewed
    reviewed["label_source"] = "human"
    # A human choice either way: also on a tie the AI exported with label_0 = 0.5.
    reviewed["label_0"] = 1.0 if verdict.preferred == ai_side(rejected_first) else 0.0
    return reviewed


@dataclass(frozen=True)
class Agreement:
    count: int
    raw: float
    """Share of resolved pairs where the reviewers prefer the AI's choice."""
    kappa: float
    """Cohen's kappa between the AI and the reviewers over the shown side (A or B);
    NaN when chance agreement is 1 (every answer on one side)."""


def agreement(pairs: Sequence[tuple[Side, Side]]) -> Agreement:
    """Agreement between (AI side, human side) judgements of the same pairs."""
    count = len(pairs)
    if count == 0:
        return Agreement(0, math.nan, math.nan)
    observed = sum(ai == human for ai, human in pairs) / count
    expected = sum(
        (sum(ai == side for ai, _ in pairs) / count) * (sum(h == side for _, h in pairs) / count)
        for side in ("a", "b")
    )
    kappa = math.nan if expected == 1 else (observed - expected) / (1 - expected)
    return Agreement(count, observed, kappa)


def margin_buckets(margins: Sequence[float], count: int = 3) -> list[float]:
    """Upper edges of `count` equal-size margin buckets (quantiles of `margins`)."""
    ordered = sorted(margins)
    if not ordered:
        return []
    edges = [ordered[max(0, (len(ordered) * k) // count - 1)] for k in range(1, count)]
    return [*edges, math.inf]


def bucket_label(margin: float, edges: Sequence[float]) -> str:
    """Name of the margin bucket (from `margin_buckets`) that holds `margin`."""
    lower = -math.inf
    for edge in edges:
        if margin <= edge:
            if math.isinf(edge):
                return f"> {lower:.3g}"
            return f"<= {edge:.3g}" if math.isinf(lower) else f"{lower:.3g} - {edge:.3g}"
        lower = edge
    return f"> {lower:.3g}"
