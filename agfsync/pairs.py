"""Turning the candidates of one prompt into a preference pair."""

from __future__ import annotations

import math
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


def select_preference_pair(scores: Sequence[float]) -> PreferencePair:
    """Chosen = argmax, rejected = argmin of the scores (AGFSync).

    Ties are broken deterministically: the chosen image is the lowest index with
    the highest score, the rejected image the lowest index with the lowest score
    other than the chosen one (so all-equal scores give indices 0 and 1 with a
    zero margin). NaN scores are left out. Raises `NoPairError` when fewer than two
    candidates have a score.
    """
    scorable = [
        (index, float(score)) for index, score in enumerate(scores) if not math.isnan(score)
    ]
    if len(scorable) < 2:
        raise NoPairError(
            f"only {len(scorable)} of {len(scores)} candidates have a score; a pair needs 2"
        )
    chosen_index, chosen_score = max(scorable, key=lambda item: (item[1], -item[0]))
    rejected_index, rejected_score = min(
        (item for item in scorable if item[0] != chosen_index), key=lambda item: (item[1], item[0])
    )
    return PreferencePair(chosen_index, rejected_index, chosen_score, rejected_score)
