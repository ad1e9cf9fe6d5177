"""Where steps read and write files of a run."""

import json
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distilabel.constants import STEPS_ARTIFACTS_PATH
from distilabel.steps.base import _Step

from agfsync.run.failures import row_failures
from agfsync.run.journal import Journal, journal_key

if TYPE_CHECKING:
    from distilabel.pipeline.base import BasePipeline


def run_artifacts_root(step: _Step) -> Path:
    """The run's artifacts folder, which the pipeline sets on every step.

    Image paths in the dataset are relative to it, so it moves with the Distiset.
    """
    if step._pipeline_artifacts_path is None:
        raise RuntimeError(
            f"{step.name} works on files under the pipeline's artifacts folder; run it in a "
            "Pipeline or call set_pipeline_artifacts_path(path) first."
        )
    return Path(step._pipeline_artifacts_path)


JOURNALS_DIR = "agfsync-journal"
"""Folder of the steps' journals, beside the artifacts folder (`<execution>/data/`): not
an artifact, so it is neither copied into the dataset folder nor uploaded with it."""

Rows = list[dict[str, Any]]


def step_journal(step: _Step) -> Journal | None:
    """The journal of `step`'s finished work in this run (see `agfsync.run.journal`); None
    for a step used outside a pipeline, which then simply computes everything.

    Its folder is named after the step and its signature, so two differently configured
    steps never share recorded outputs, even when they share an artifacts folder.
    """
    if step._pipeline_artifacts_path is None:
        return None
    folder = run_artifacts_root(step).parent / JOURNALS_DIR / f"{step.name}-{step.signature}"
    return Journal(folder)


def recorded_or_computed(
    step: _Step, units: Sequence[Rows], compute: Callable[[list[Rows]], list[Rows]]
) -> list[Rows]:
    """The output rows of each unit of work (one input row, or a batch) of `step`.

    Units recorded in the step's journal are taken from it; `compute` gets all the
    others at once and returns their output rows, unit by unit. A computed unit is
    recorded unless one of its rows has a retryable failure
    (`agfsync.run.failures.row_failures`) in a column the step reads or writes (a failure
    upstream that the step does not depend on leaves its work final), so the next run
    of the same command reuses it and retries only the failed ones. Recorded rows hold
    the step's output columns only.
    """
    columns = {*step.inputs, *step.outputs}
    journal = step_journal(step)
    keys = [journal_key(unit, step.inputs) for unit in units]
    recorded = [None if journal is None else journal.get(key) for key in keys]
    missing = [index for index, rows in enumerate(recorded) if rows is None]
    # `compute` works on copies: the caller adds the outputs to its rows itself, in the
    # order of `step.outputs`, so a recorded and a computed unit give identical rows.
    copies = [[dict(row) for row in units[index]] for index in missing]
    computed = dict(zip(missing, compute(copies) if missing else [], strict=True))
    outputs: list[Rows] = []
    for index, key in enumerate(keys):
        if index not in computed:
            outputs.append(recorded[index] or [])
            continue
        rows = computed[index]
        projected = [{column: row.get(column) for column in step.outputs} for row in rows]
        failed = any(f.column in columns for row in rows for f in row_failures(row))
        if journal is not None and not failed:
            journal.put(key, projected)
        outputs.append(projected)
    return outputs


def carry_over_artifacts(pipeline: "BasePipeline", step_name: str, artifact: str) -> Path | None:
    """Make a cached step's files visible to a new execution of the pipeline.

    distilabel keeps step outputs in a cache shared by every version of a pipeline
    (`steps_data/`), but artifacts in a folder per execution (one per combination of
    step signatures). So after a change to a later step (a judge weight, a margin),
    the image step's outputs are reused while its images sit in the previous
    execution's folder. The image step records its signature in the artifact's
    metadata; this finds a folder with the same signature and hard-links it (copies
    across file systems) into this execution's artifacts. Call it after
    `pipeline._set_runtime_parameters(...)`, before `pipeline.run(...)`. Returns the
    folder reused, or None.
    """
    step = pipeline.dag.get_step(step_name)["step"]
    target = pipeline._cache_location["data"] / STEPS_ARTIFACTS_PATH / step_name / artifact
    if target.exists():
        return None
    pattern = f"*/executions/*/data/{STEPS_ARTIFACTS_PATH}/{step_name}/{artifact}/metadata.json"
    candidates = sorted(
        (pipeline._cache_dir / pipeline.name).glob(pattern),
        key=lambda path: path.stat().st_mtime,
        reverse=True,
    )
    for metadata in candidates:
        try:
            recorded = json.loads(metadata.read_text())
        except ValueError:  # written in place by distilabel: a killed run may tear it
            continue
        if recorded.get("step_signature") == step.signature:
            shutil.copytree(metadata.parent, target, copy_function=_link_or_copy)
            return metadata.parent
    return None


def _link_or_copy(source: str, destination: str) -> None:
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)
