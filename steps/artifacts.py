"""Where steps read and write files of a run."""

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from distilabel.constants import STEPS_ARTIFACTS_PATH
from distilabel.steps.base import _Step

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
        if json.loads(metadata.read_text()).get("step_signature") == step.signature:
            shutil.copytree(metadata.parent, target, copy_function=_link_or_copy)
            return metadata.parent
    return None


def _link_or_copy(source: str, destination: str) -> None:
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)
