"""Resuming a run that was killed, or that ended with failed rows.

distilabel 1.5.3 resumes from its cache after a clean stop (Ctrl-C, or the end of a
run), not after a crash. A process killed mid-run (SIGKILL, the out-of-memory
killer, a lost node) leaves its bookkeeping out of step with its data:

- batches that were being processed are recorded as sent and are never sent again,
  so the resumed run waits forever for them (observed: the offline preset on 200
  prompts, killed after 35 s, resumed and then stalled at its 12th batch);
- a step's outputs written so far (`steps_data/<step>_<signature>/`) look like its
  complete output to every later execution (`_BatchManager.from_dag` reuses any such
  folder it finds), which silently drops the rows it had not reached;
- its files are written in place, so a kill during a write leaves a torn file that
  is never rewritten.

agfsync therefore treats the bookkeeping of an unfinished execution as disposable.
`begin_execution` marks the execution unfinished before the pipeline runs, and
`finish_execution` clears the mark once the run has ended with every row done.
A run that finds the mark first discards that bookkeeping and the outputs of the
steps that did not finish, keeping the artifacts (images) and the steps' journals
(`agfsync.journal`), and then runs the pipeline from the start: finished work comes
back from those files, and only what was missing or failed is computed again.
"""

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from distilabel.constants import STEPS_OUTPUTS_PATH

from agfsync.steps.artifacts import JOURNALS_DIR

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


def discard_unfinished_execution(pipeline: "BasePipeline") -> list[str]:
    """If the last run of this execution did not finish, delete distilabel's bookkeeping
    of it and the outputs of its steps that did not finish, so that `pipeline.run`
    starts again from the steps' files and journals. Call after the runtime
    parameters are set (they are part of the step signatures).

    Leaf steps' outputs are always discarded: their rows are written again to the
    execution's dataset folder, which is deleted here too. Returns the names of the
    steps whose outputs were discarded (empty when the execution had finished).
    """
    execution = _execution_dir(pipeline)
    if not (execution / UNFINISHED_MARKER).exists():
        return []
    # distilabel rewrites these on every batch, in place; `pipeline.yaml` is read back
    # on resume, so a torn one would stop the run.
    for name in ("batch_manager.json", "stages.json", "pipeline.yaml"):
        (execution / name).unlink(missing_ok=True)
    shutil.rmtree(execution / "batch_manager_steps", ignore_errors=True)
    shutil.rmtree(pipeline._cache_location["data"] / STEPS_OUTPUTS_PATH, ignore_errors=True)
    leaves = set(pipeline.dag.leaf_steps)
    discarded = []
    for name, outputs_dir in _outputs_dirs(pipeline).items():
        if outputs_dir.exists() and (name in leaves or not _is_complete(outputs_dir)):
            shutil.rmtree(outputs_dir)
            discarded.append(name)
    return discarded


def begin_execution(pipeline: "BasePipeline", use_cache: bool) -> None:
    """Mark the execution unfinished. Without the cache, also forget the steps' recorded
    work: distilabel then recomputes everything, and it never overwrites an existing
    `steps_data` batch file, so those are deleted as well."""
    execution = _execution_dir(pipeline)
    if not use_cache:
        shutil.rmtree(pipeline._cache_location["data"] / JOURNALS_DIR, ignore_errors=True)
        for outputs_dir in _outputs_dirs(pipeline).values():
            shutil.rmtree(outputs_dir, ignore_errors=True)
    execution.mkdir(parents=True, exist_ok=True)
    (execution / UNFINISHED_MARKER).write_text(
        "A run of this execution started and has not finished with every row done.\n",
        encoding="utf-8",
    )


def finish_execution(pipeline: "BasePipeline") -> None:
    """Clear the mark: the next run of the same command reuses distilabel's cache as is."""
    (_execution_dir(pipeline) / UNFINISHED_MARKER).unlink(missing_ok=True)
