"""Re-select the pairs of a finished dataset with other judge weights (`agfsync reselect`).

Every candidate's per-judge scores are in the dataset's rows and every candidate image
is under its `artifacts/`, so new weights need no rendering and no judging: the
weighted scores are recomputed from the recorded ones, each prompt's best and worst
candidate picked again (`agfsync.pairs`), and a new dataset folder written with its
card, naming where the weights came from.

Prompts the original run left without a pair are not in its rows (their reasons are in
its run.json) and stay without one; a prompt that now ties is left out and listed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets

from agfsync.dataset.card import card_writer
from agfsync.dataset.folder import (
    IMAGE_COLUMNS,
    build_preference_dataset,
    check_dataset_folder,
    pairs_scratch,
    write_dataset_folder,
)
from agfsync.dataset.publish import load_run
from agfsync.dataset.run_info import JudgeInfo, UnpairedPrompt
from agfsync.errors import ConfigurationError
from agfsync.pairs import NoPairError, select_preference_pair
from agfsync.review.calibration import read_weights_for
from agfsync.scoring import weighted_scores

STALE_COLUMNS = (
    *IMAGE_COLUMNS,
    "caption",
    "label_0",
    "label_source",
    "human_votes",
    "ai_choice_shown",
)
"""Columns of the old pair: the Diffusion-DPO ones are rebuilt from the new pair (the
images read again from `artifacts/`); a review's verdicts were about the old pair."""


@dataclass(frozen=True)
class Reselection:
    output_dir: Path
    pairs: int
    changed: int
    """Prompts whose chosen or rejected image changed."""
    unpaired: int


def reselect_pairs(
    run_dir: Path,
    output_dir: Path,
    weights_file: Path,
    *,
    min_margin: float = 0.0,
    keep_ties: bool = False,
    overwrite: bool = False,
) -> Reselection:
    """Write `output_dir`: `run_dir`'s dataset with its pairs picked by the weights in
    `weights_file` (see the module doc). Nothing is rendered or judged."""
    check_dataset_folder(output_dir, overwrite=overwrite, protected=[run_dir])
    dataset, run = load_run(run_dir)
    artifacts = run_dir / "artifacts"
    if not artifacts.is_dir():
        raise ConfigurationError(
            f"{run_dir} has no artifacts/ folder with the candidate images; re-selection "
            "needs every candidate (publish keeps them only with --include-artifacts)."
        )
    judges = [judge.name for judge in run.judges]
    preset = read_weights_for(weights_file, judges, f"{run_dir} was judged by")
    rows = dataset.remove_columns([c for c in STALE_COLUMNS if c in dataset.column_names])
    changed = 0

    def repick(row: dict[str, Any]) -> dict[str, Any]:
        nonlocal changed
        scores = {name: row[f"{name}_scores"] for name in judges}
        combined = weighted_scores(scores, preset.weights)
        update: dict[str, Any] = {"weighted_scores": combined, "pair_error": None}
        try:
            pair = select_preference_pair(combined, min_margin=min_margin, keep_ties=keep_ties)
        except NoPairError as error:
            return {
                **update,
                "pair_error": str(error),
                "chosen_index": None,
                "rejected_index": None,
                "chosen_score": None,
                "rejected_score": None,
                "score_margin": None,
            }
        if (pair.chosen_index, pair.rejected_index) != (row["chosen_index"], row["rejected_index"]):
            changed += 1
        return {
            **update,
            "chosen_index": pair.chosen_index,
            "rejected_index": pair.rejected_index,
            "chosen_score": pair.chosen_score,
            "rejected_score": pair.rejected_score,
            "score_margin": pair.score_margin,
        }

    def repicked_rows() -> Iterator[dict[str, Any]]:
        for row in rows:
            yield {**row, **repick(row)}

    # The re-picked rows, then the pairs, stream through Arrow files in scratch folders
    # of ours, removed after: memory stays flat however many prompts the run has.
    with pairs_scratch() as repicked_scratch, pairs_scratch() as scratch:
        repicked = datasets.Dataset.from_generator(
            repicked_rows, features=rows.features, cache_dir=os.fspath(repicked_scratch)
        )
        new, unpaired = build_preference_dataset(repicked, artifacts, scratch)
        if len(new) == 0:
            raise ConfigurationError(
                f"With the weights of {weights_file} no prompt of {run_dir} has a pair; nothing "
                "was written."
            )
        info = run.model_copy(
            update={
                "judges": [
                    JudgeInfo(name=j.name, model=j.model, weight=preset.weights[j.name])
                    for j in run.judges
                ],
                "weights_source": preset.description + f"; pairs re-selected from {run_dir.name}",
                "reselected_from": run_dir.name,
                "weights": preset.info,
                "unpaired": [*run.unpaired, *(UnpairedPrompt.of(row) for row in unpaired)],
                "min_margin": min_margin,
                "keep_ties": keep_ties,
                "options": run.options.model_copy(update={"weights_file": weights_file.name}),
            }
        )

        write_dataset_folder(
            new,
            output_dir,
            card=card_writer(new, info, load_path=os.fspath(output_dir.resolve())),
            extra_files={
                name: run_dir / name
                for name in ("pipeline.yaml", "pipeline.log")
                if (run_dir / name).is_file()
            },
            artifacts_dir=artifacts,
            overwrite=overwrite,
            protected=[run_dir],
        )
        return Reselection(output_dir.resolve(), len(new), changed, len(unpaired))
