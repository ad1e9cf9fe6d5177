"""Where steps read and write files of a run."""

from pathlib import Path

from distilabel.steps.base import _Step


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
