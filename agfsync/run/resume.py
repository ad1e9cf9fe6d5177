"""Resuming a run that was killed, or that ended with failed rows.

distilabel 1.5.3 resumes from its cache after a clean stop (Ctrl-C, or the end of a
run), not after a crash. A process killed mid-run (SIGKILL, the out-of-memory
killer, a lost node) leaves its bookkeeping out of step with its data:

- batches that were being processed are recorded as sent and are never sent again,
  so the resumed run waits forever for them (observed: the offline preset on 200
  prompts, killed after 35 s, resumed and then stalled at its 12th batch);
- a step's outputs written so far (`steps_data/<step>_<signature>/`, shared by every
  execution of the pipeline) look like its complete output to every later execution
  (`_BatchManager.from_dag` reuses any such folder it finds), which silently drops the
  rows it had not reached; so incomplete ones are deleted before any run;
- its files are written in place, so a kill during a write leaves a torn file that
  is never rewritten.

A run that ends with some rows failed (`agfsync.run.failures`) is unfinished too: its
bookkeeping says done, so a plain re-run would return the failed rows again.

agfsync therefore treats the bookkeeping of an unfinished execution as disposable.
`begin_execution` marks the execution unfinished before the pipeline runs;
`record_steps_to_redo` adds the steps whose rows failed; `finish_execution` clears
the mark once the run has ended with every row done. A run that finds the mark
first discards that bookkeeping and the outputs of the steps that did not finish,
failed or follow a failed one, keeping the artifacts (images), the complete outputs
of the other steps and the steps' journals (`agfsync.run.journal`). The pipeline then
runs from the start: finished work comes back from those files, and only what was
missing or failed is computed again.
"""

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from distilabel.constants import STEPS_OUTPUTS_PATH

from agfsync.atomic import write_atomically
from agfsync.run.artifacts import JOURNALS_DIR

if TYPE_CHECKING:
    from distilabel.pipeline.base import BasePipeline

UNFINISHED_MARKER = "agfsync-unfinished"
"""File in a distilabel execution folder while that execution has not finished."""


def _execution_dir(pipeline: "BasePipeline") -> Path:
    return pipeline._cache_location["batch_manager"].parent


def _outputs_dirs(pipeline: "BasePipeline") -> dict[str, Path]:
    """Where distilabel keeps each step's outputs for reuse, by step name."""
    steps_data = pipeline._cache_location["steps_data"]
    return {
        name: steps_data / f"{name}_{pipeline.dag.get_step(name)['step'].signature}"
        for name in pipeline.dag
    }


def _is_complete(outputs_dir: Path) -> bool:
    """True when the folder holds every batch a step sent, each one readable: batches
    0..n without a gap, the last one flagged as the step's last."""
    seq_nos = []
    last_batch_seen = False
    for path in outputs_dir.glob("batch_*.json"):
        try:
            batch = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        seq_nos.append(batch["seq_no"])
        last_batch_seen = last_batch_seen or bool(batch["last_batch"])
    return last_batch_seen and sorted(seq_nos) == list(range(len(seq_nos)))


def _with_successors(pipeline: "BasePipeline", names: list[str]) -> set[str]:
    found: set[str] = set()
    pending = list(names)
    while pending:
        name = pending.pop()
        if name not in found:
            found.add(name)
            pending.extend(pipeline.dag.get_step_successors(name))
    return found


def is_unfinished(pipeline: "BasePipeline") -> bool:
    """Whether the last run of this execution was interrupted or left rows failed."""
    return (_execution_dir(pipeline) / UNFINISHED_MARKER).exists()


def discard_unfinished_work(pipeline: "BasePipeline") -> list[str]:
    """Delete what distilabel would wrongly reuse, so that `pipeline.run` starts again
    from the steps' files and journals. Call after the runtime parameters are set
    (they are part of the step signatures).

    Always: the outputs of this pipeline's steps that are incomplete. They may come from
    another, interrupted execution (distilabel shares step outputs between executions
    of a pipeline by step signature) and would pass for complete. When this execution
    is unfinished, also its bookkeeping and the outputs of the steps to redo: those
    recorded with `record_steps_to_redo` and every step after them, and the leaf steps,
    whose rows are written again to the execution's dataset folder (deleted here too).
    Returns the names of the steps whose outputs were deleted.
    """
    to_redo: set[str] = set()
    if is_unfinished(pipeline):
        to_redo = _with_successors(pipeline, [*_recorded_steps(pipeline), *pipeline.dag.leaf_steps])
        execution = _execution_dir(pipeline)
        # distilabel rewrites these on every batch, in place; `pipeline.yaml` is read
        # back on resume, so a torn one would stop the run.
        for name in ("batch_manager.json", "stages.json", "pipeline.yaml"):
            (execution / name).unlink(missing_ok=True)
        shutil.rmtree(execution / "batch_manager_steps", ignore_errors=True)
        shutil.rmtree(pipeline._cache_location["data"] / STEPS_OUTPUTS_PATH, ignore_errors=True)
    discarded = []
    for name, outputs_dir in _outputs_dirs(pipeline).items():
        if outputs_dir.exists() and (name in to_redo or not _is_complete(outputs_dir)):
            shutil.rmtree(outputs_dir)
            discarded.append(name)
    return discarded


def skip_finished_stages(pipeline: "BasePipeline") -> int:
    """Start an execution that has no stage record at its first unfinished stage.

    distilabel runs a pipeline with a global step in stages (the steps before it, the
    global step, the steps after it) and moves to the next stage when the current one's
    last steps send their last batch. A stage whose steps all come from the cache of an
    earlier execution sends nothing, so such a run waits forever at "All the steps from
    stage 0 have been loaded" (observed with distilabel 1.5.3: a text preset run again
    with another `--qa-model`, and any resumed run whose steps before the global step
    had finished). This writes the stage record distilabel would have written: every
    stage whose steps all have their outputs cached counts as done. Returns the stage
    the run starts at. An existing record (a resumable execution) is left alone.
    """
    stages_file = pipeline._cache_location["stages_file"]
    if stages_file.exists():
        return int(json.loads(stages_file.read_text(encoding="utf-8"))["current_stage"])
    stages, stage_last_steps = pipeline.dag.get_steps_load_stages(pipeline._built_load_groups(None))
    cached = {name for name, folder in _outputs_dirs(pipeline).items() if _is_complete(folder)}
    current = next(
        (index for index, steps in enumerate(stages) if not set(steps) <= cached),
        len(stages) - 1,
    )
    record = {
        "current_stage": current,
        "stages_last_batch": [
            stage_last_steps[index] if index < current else [] for index in range(len(stages))
        ],
    }
    write_atomically(stages_file, lambda partial: partial.write_text(json.dumps(record)))
    return current


def begin_execution(pipeline: "BasePipeline", use_cache: bool) -> None:
    """Mark the execution unfinished. Without the cache, also forget the steps' recorded
    work: distilabel then recomputes everything, and it never overwrites an existing
    `steps_data` batch file, so those are deleted as well."""
    if not use_cache:
        shutil.rmtree(pipeline._cache_location["data"] / JOURNALS_DIR, ignore_errors=True)
        for outputs_dir in _outputs_dirs(pipeline).values():
            shutil.rmtree(outputs_dir, ignore_errors=True)
    _write_marker(pipeline, steps_to_redo=[])


def record_steps_to_redo(pipeline: "BasePipeline", names: list[str]) -> None:
    """The run ended, but rows that `names` wrote failed: the next run redoes them (and
    the steps recorded before)."""
    _write_marker(pipeline, steps_to_redo=sorted({*_recorded_steps(pipeline), *names}))


def _recorded_steps(pipeline: "BasePipeline") -> list[str]:
    """The steps the mark says to redo; all of them when it cannot be read."""
    marker = _execution_dir(pipeline) / UNFINISHED_MARKER
    if not marker.exists():
        return []
    try:
        return list(json.loads(marker.read_text(encoding="utf-8"))["steps_to_redo"])
    except (OSError, ValueError, KeyError):
        return list(pipeline.dag)


def _write_marker(pipeline: "BasePipeline", steps_to_redo: list[str]) -> None:
    execution = _execution_dir(pipeline)
    marker = {
        "about": "A run of this execution started and has not finished with every row done.",
        "steps_to_redo": steps_to_redo,
    }
    text = json.dumps(marker, indent=2) + "\n"
    write_atomically(execution / UNFINISHED_MARKER, lambda partial: partial.write_text(text))


def finish_execution(pipeline: "BasePipeline") -> None:
    """Clear the mark: the next run of the same command reuses distilabel's cache as is."""
    (_execution_dir(pipeline) / UNFINISHED_MARKER).unlink(missing_ok=True)
