"""The pair stage: best and worst candidate of each prompt."""

from typing import TYPE_CHECKING, Any

from distilabel.mixins.runtime_parameters import RuntimeParameter
from distilabel.steps import Step, StepInput
from pydantic import Field

from agfsync.pairs import NoPairError, select_preference_pair
from agfsync.run.cache import UpstreamSignatureMixin

if TYPE_CHECKING:
    from distilabel.typing import StepOutput

PAIR_COLUMNS = ["chosen_index", "rejected_index", "chosen_score", "rejected_score", "score_margin"]


class PreferencePairSelection(Step, UpstreamSignatureMixin):
    """Picks the chosen (argmax) and rejected (argmin) image of each prompt from
    its `weighted_scores`, as AGFSync does.

    Equal scores go to the lowest index; NaN scores are left out. A prompt with fewer
    than two scorable images, a tie (its best and worst candidates scored the same,
    unless `keep_ties`), a margin below `min_margin`, or no image passing
    `chosen_thresholds` keeps its row, with empty pair columns and the reason in
    `pair_error`, so nothing disappears silently.

    Runtime parameters:
        - `min_margin`: minimum weighted-score margin of a pair (default 0).
        - `keep_ties`: also pair ties (exported with `label_0 = 0.5`).
        - `chosen_thresholds`: judge scores the chosen image must exceed
          (`agfsync.pairs.DREAMSYNC_THRESHOLDS` reproduces DreamSync's filter).

    Input columns:
        - weighted_scores (`list[float]`): one combined score per candidate.

    Output columns:
        - chosen_index, rejected_index (`int`): positions in `image_paths`.
        - chosen_score, rejected_score, score_margin (`float`).
        - pair_error (`str`): why no pair was formed; None when one was.

    Categories:
        - filtering

    Examples:
        Pick the best and the worst candidate:

        ```python
        from agfsync.steps import PreferencePairSelection

        select = PreferencePairSelection(min_margin=1.0)
        select.load()
        rows = next(
            select.process(
                [{"weighted_scores": [61.0, 74.5, 58.2]}, {"weighted_scores": [50.0, 50.0]}]
            )
        )
        # rows[0]: chosen_index 1, rejected_index 2, score_margin 16.3, pair_error None
        # rows[1]: no pair, pair_error says why (a tie)
        ```
    """

    min_margin: RuntimeParameter[float] = Field(
        default=0.0, description="Refuse pairs whose weighted-score margin is below this."
    )
    keep_ties: RuntimeParameter[bool] = Field(
        default=False,
        description="Also pair prompts whose best and worst candidates scored the same "
        "(exported with label_0 = 0.5, which diffusers' DPO scripts read as a win).",
    )
    chosen_thresholds: RuntimeParameter[dict[str, float]] | None = Field(
        default=None,
        description="Judge scores (0-100) the chosen image must exceed, e.g. DreamSync's "
        "{vqa: 90, aesthetic: 60}; None: any image may be chosen, as in AGFSync.",
    )

    @property
    def inputs(self) -> list[str]:
        return ["weighted_scores", *(f"{name}_scores" for name in self.chosen_thresholds or {})]

    @property
    def outputs(self) -> list[str]:
        return [*PAIR_COLUMNS, "pair_error"]

    def process(self, inputs: StepInput) -> "StepOutput":
        for row in inputs:
            if row["weighted_scores"] is None:
                # distilabel fills a failed step's outputs with None and goes on.
                row.update(
                    dict.fromkeys(PAIR_COLUMNS),
                    pair_error="no scores: an earlier step failed on this row (see the log)",
                )
                continue
            try:
                pair = select_preference_pair(
                    row["weighted_scores"],
                    min_margin=self.min_margin,
                    may_be_chosen=self._passes_thresholds(row),
                    keep_ties=self.keep_ties,
                )
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

    def _passes_thresholds(self, row: dict[str, Any]) -> list[bool] | None:
        if not self.chosen_thresholds:
            return None
        count = len(row["weighted_scores"])
        return [
            all(
                row[f"{name}_scores"][index] > minimum
                for name, minimum in self.chosen_thresholds.items()
            )
            for index in range(count)
        ]
