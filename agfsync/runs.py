"""Running a preset end to end: distilabel pipeline -> dataset folder.

This is what `agfsync generate` does, as a function the tests and notebooks can
call. Inputs are checked before any model loads, and the dataset folder only
appears once it is complete.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agfsync.card import render_dataset_card
from agfsync.dataset import build_preference_dataset, write_dataset_folder
from agfsync.errors import ConfigurationError
from agfsync.prompts import load_prompt_records

LOAD_PROMPTS_STEP = "load_prompts"
GENERATE_IMAGES_STEP = "generate_images"
JUDGE_IMAGES_STEP = "judge_images"


@dataclass(frozen=True)
class RunSummary:
    """What a finished run produced."""

    output_dir: Path
    num_rows: int
    num_unpaired: int
    seconds: float


def _check_writable(output_dir: Path) -> None:
    parent = output_dir.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=parent):
            pass
    except OSError as error:
        raise ConfigurationError(
            f"Cannot write the dataset to {output_dir} ({error.strerror}); choose a writable "
            "--output folder."
        ) from error


def run_preset(
    preset: str,
    output_dir: Path,
    *,
    prompts_file: Path | None = None,
    num_prompts: int | None = None,
    num_images: int | None = None,
    seed: int | None = None,
    use_cache: bool = True,
) -> RunSummary:
    """Run `preset` and write its preference dataset to `output_dir`."""
    from agfsync.pipelines import build_preset

    started = time.perf_counter()
    pipeline = build_preset(preset)
    if num_images is not None and num_images < 2:
        raise ConfigurationError(
            f"--num-images {num_images} cannot form a pair; use 2 or more candidates per prompt."
        )
    if num_prompts is not None and num_prompts < 1:
        raise ConfigurationError(f"--num-prompts {num_prompts} must be at least 1.")
    expected_rows = len(load_prompt_records(prompts_file))
    if num_prompts is not None:
        expected_rows = min(expected_rows, num_prompts)
    _check_writable(output_dir)

    parameters: dict[str, dict[str, Any]] = {
        LOAD_PROMPTS_STEP: {
            "data_files": str(prompts_file) if prompts_file else None,
            "num_prompts": num_prompts,
        },
        GENERATE_IMAGES_STEP: {},
    }
    if num_images is not None:
        parameters[GENERATE_IMAGES_STEP]["num_images"] = num_images
    if seed is not None:
        parameters[GENERATE_IMAGES_STEP]["seed"] = seed

    distiset = pipeline.run(parameters=parameters, use_cache=use_cache)
    rows = distiset["default"]["train"] if "default" in distiset else None
    if rows is None or len(rows) != expected_rows:
        found = 0 if rows is None else len(rows)
        raise ConfigurationError(
            f"The run stopped with {found} of {expected_rows} prompts done (see the log "
            f"above); fix the cause and run the same command again to resume."
        )
    artifacts_dir = Path(distiset.artifacts_path) if distiset.artifacts_path else None
    if artifacts_dir is None:
        raise ConfigurationError("The run produced no images; see the log above.")
    dataset, unpaired = build_preference_dataset(rows, artifacts_dir)
    judging = pipeline.dag.get_step(JUDGE_IMAGES_STEP)["step"]
    write_dataset_folder(
        dataset,
        output_dir,
        card=lambda data_files: render_dataset_card(
            dataset,
            preset=preset,
            num_unpaired=len(unpaired),
            judges={spec.name: spec.weight for spec in judging.scorers},
            load_path=os.fspath(output_dir),
            data_files=data_files,
        ),
        extra_files={
            "pipeline.yaml": Path(distiset.pipeline_path) if distiset.pipeline_path else Path(),
            "pipeline.log": Path(distiset.log_filename_path)
            if distiset.log_filename_path
            else Path(),
        },
        artifacts_dir=artifacts_dir,
    )
    return RunSummary(
        output_dir=output_dir.resolve(),
        num_rows=len(dataset),
        num_unpaired=len(unpaired),
        seconds=time.perf_counter() - started,
    )
