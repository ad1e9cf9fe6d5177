"""The pair stage: best and worst candidate of each prompt."""

from typing import TYPE_CHECKING

from distilabel.steps import Step, StepInput

from agfsync.pairs import NoPairError, select_preference_pair
from agfsync.steps.cache import UpstreamSignatureMixin

if TYPE_CHECKING:
    from distilabel.typing import StepOutput

PAIR_COLUMNS = ["chosen_index", "rejected_index", "chosen_score", "rejected_score", "score_margin"]


class PreferencePairSelection(Step, UpstreamSignatureMixin):
    """Picks the chosen (argmax) and rejected (argmin) image of each prompt from
    its `weighted_scores`, as AGFSync does.

    Ties go to the lowest index; NaN scores are left out. A prompt with fewer
    than two scorable images keeps its row, with empty pair columns and the
    reason in `pair_error`, so nothing disappears silently.

    Input columns:
        - weighted_scores (`list[float]`): one combined score per candidate.

    Output columns:
        - chosen_index, rejected_index (`int`): positions in `image_paths`.
        - chosen_score, rejected_score, score_margin (`float`).
        - pair_error (`str`): why no pair was formed; None when one was.

    Categories:
        - filtering
    """

    @property
    def inputs(self) -> list[str]:
        return ["weighted_scores"]

    @property
    def outputs(self) -> list[str]:
        return [*PAIR_COLUMNS, "pair_error"]

    def process(self, inputs: StepInput) -> "StepOutput":
        for row in inputs:
            try:
                pair = select_preference_pair(row["weighted_scores"])
            except NoPairError as error:
                row.update(dict.fromkeys(PAIR_COLUMNS), pair_error=str(error))
                continue
            row.update(
                chosen_index=pair.chosen_index,
                rejected_index=pair.rejected_index,
                chosen_score=pair.chosen_score,
                rejected_score=pair.rejected_score,
                score_margin=pair.score_margin,
                pair_error=None,
            )
        yield inputs
