"""Turning the candidates of one prompt into a preference pair."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class PreferencePair:
    """The best (chosen) and worst (rejected) candidate of one prompt."""

    chosen_index: int
    rejected_index: int
    chosen_score: float
    rejected_score: float

    @property
    def score_margin(self) -> float:
        return self.chosen_score - self.rejected_score


class NoPairError(ValueError):
    """A prompt has fewer than two scorable candidates; the message says why."""


DREAMSYNC_THRESHOLDS = {"vqa": 90.0, "aesthetic": 60.0}
"""DreamSync's filter (VQA > 0.9 and aesthetic > 0.6 on a 0-1 scale) on agfsync's 0-100
scales: as a requirement on the chosen image it lets users compare conversion rates
(AGFSync paper: every prompt becomes a pair vs 48.8% under DreamSync's filter)."""


TIE = "tie: the best and worst candidates scored the same"
"""Start of the reason a tie gets no pair (unless ties are kept)."""


def select_preference_pair(
    scores: Sequence[float],
    *,
    min_margin: float = 0.0,
    may_be_chosen: Sequence[bool] | None = None,
    keep_ties: bool = False,
) -> PreferencePair:
    """Chosen = argmax, rejected = argmin of the scores (AGFSync).

    Equal scores are ordered deterministically: the chosen image is the lowest index
    with the highest score, the rejected image the lowest index with the lowest score
    other than the chosen one. A tie (a zero margin: no preference) is refused unless
    `keep_ties`, as Pick-a-Pic marks ties 0.5 and the official Diffusion-DPO code drops
    them. NaN scores are left out. `may_be_chosen` restricts which images can win (e.g.
    those passing `DREAMSYNC_THRESHOLDS`), and a pair whose margin is below
    `min_margin` is refused. Raises `NoPairError` saying why no pair formed.
    """
    scorable = [
        (index, float(score)) for index, score in enumerate(scores) if not math.isnan(score)
    ]
    if len(scorable) < 2:
        raise NoPairError(
            f"only {len(scorable)} of {len(scores)} candidates have a score; a pair needs 2"
        )
    eligible = [item for item in scorable if may_be_chosen is None or may_be_chosen[item[0]]]
    if not eligible:
        raise NoPairError("no candidate passes the thresholds required of the chosen image")
    chosen_index, chosen_score = max(eligible, key=lambda item: (item[1], -item[0]))
    rejected_index, rejected_score = min(
        (item for item in scorable if item[0] != chosen_index), key=lambda item: (item[1], item[0])
    )
    pair = PreferencePair(chosen_index, rejected_index, chosen_score, rejected_score)
    if pair.score_margin == 0 and not keep_ties:
        raise NoPairError(f"{TIE} ({chosen_score:.4g})")
    if pair.score_margin < min_margin:
        raise NoPairError(
            f"score margin {pair.score_margin:.4g} is below the minimum of {min_margin:g}"
        )
    return pair


_ROW_VALUES = (
    (
        re.compile(r"^score margin \S+ is below the minimum of (\S+)$"),
        r"score margin below --min-margin \1",
    ),
    (re.compile(rf"^{re.escape(TIE)} \(\S+\)$"), TIE),
    (
        re.compile(r"^only \d+ of (\d+) candidates have a score; a pair needs 2$"),
        r"fewer than 2 of \1 candidates have a score",
    ),
)
"""The reasons of `select_preference_pair` that carry a row's own values, and their kind."""


def reason_kind(reason: str) -> str:
    """A reason for no pair without the row's own values (its margin, its score), so that
    the reasons of many prompts count together: `24 x score margin below --min-margin 5`."""
    for pattern, kind in _ROW_VALUES:
        if pattern.match(reason):
            return pattern.sub(kind, reason)
    return reason
