"""Running a preset end to end: distilabel pipeline -> dataset folder.

This is what `agfsync generate` does, as a function the tests and notebooks can
call. Inputs are checked before any model loads, and the dataset folder only
appears once it is complete.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections import Counter
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
from distilabel.distiset import Distiset
from distilabel.pipeline import Pipeline
from distilabel.pipeline.step_wrapper import _StepWrapperException

from agfsync.dataset.card import card_writer, render_prompt_card
from agfsync.dataset.folder import (
    MissingImageError,
    build_preference_dataset,
    check_dataset_folder,
    pairs_scratch,
    rows_scratch,
    write_dataset_folder,
)
from agfsync.dataset.run_info import (
    GenerateOptions,
    JudgeInfo,
    RunInfo,
    UnpairedPrompt,
    WeightsInfo,
)
from agfsync.errors import ConfigurationError, RunFailedError
from agfsync.llm.providers import api_key_from_env, key_variables_text, provider_of_llm
from agfsync.logs import keep_credentials_out_of_files, plain_distilabel_lines_off_a_terminal
from agfsync.pairs import reason_kind
from agfsync.progress import live_stage_counts
from agfsync.review.calibration import WeightPreset, read_weights_for
from agfsync.run.artifacts import carry_over_artifacts
from agfsync.run.cache import remember_pipeline_dumps
from agfsync.run.estimate import EstimateTables, estimate_run
from agfsync.run.failures import row_failures
from agfsync.run.preflight import check_disk, check_distilabel_cache, check_models
from agfsync.run.processes import (
    RunLock,
    children_die_with_this_process,
    import_before_fork,
    stop_promptly_on_interrupt,
)
from agfsync.run.resume import (
    begin_execution,
    discard_unfinished_work,
    finish_execution,
    is_unfinished,
    record_steps_to_redo,
    skip_finished_stages,
)
from agfsync.sampling import sampling_settings
from agfsync.step_names import (
    DECOMPOSE_STEP,
    DEDUPLICATE_STEP,
    GENERATE_IMAGES_STEP,
    IMAGES_ARTIFACT,
    JUDGE_IMAGES_STEP,
    LOAD_CATEGORIES_STEP,
    LOAD_PROMPTS_STEP,
    SELECT_PAIRS_STEP,
    WRITE_PROMPTS_STEP,
)
from agfsync.text.categories import load_categories
from agfsync.text.prompt_files import SAMPLE_PROMPTS_PATH, load_prompt_records
from agfsync.text.qa import qa_statistics

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunOptions:
    """What `agfsync generate` lets a user change; None keeps the preset's value."""

    prompts_file: Path | None = None
    num_prompts: int | None = None
    num_images: int | None = None
    seed: int | None = None
    min_margin: float | None = None
    """Refuse pairs whose weighted-score margin is below this (pair step)."""
    categories_file: Path | None = None
    prompts_per_category: int | None = None
    dedup_method: str | None = None
    prompt_model: str | None = None
    qa_model: str | None = None
    structured_output: bool = True
    """False drops the presets' JSON-schema requests, for servers without support."""
    use_cache: bool = True
    overwrite: bool = False
    """Write into an output folder holding files agfsync did not write (they are kept)."""
    keep_ties: bool = False
    """Also export pairs whose two images scored the same, with `label_0 = 0.5`."""
    llm_time_limit: float | None = None
    """Seconds each LLM step may spend on calls in this run (`time_limit` of the steps)."""
    weights_file: Path | None = None
    """Judge weights from a file (`agfsync calibrate` writes one); None: the preset's."""
    sampling: str | None = None
    """A named sampling setting of `SAMPLING_PRESETS` (scheduler and steps); None: the
    preset's."""
    resolution: int | None = None
    """Height and width of the candidates in pixels (a multiple of 8); None: the
    model's default."""


@dataclass(frozen=True)
class RunSummary:
    """What a finished run produced, and lines worth printing about it."""

    output_dir: Path
    num_rows: int
    seconds: float
    num_unpaired: int = 0
    unit: str = "preference pairs"
    """What the rows are, for messages."""
    report: list[str] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    """Rows that failed in a way a re-run can fix, by `step: example reason`. While any
    remain, running the same command again retries them and reuses everything else."""


def _check_api_keys(pipeline: Pipeline) -> None:
    """A missing key stops the run before any work, naming the variable to set."""
    for name in pipeline.dag:
        llm = getattr(pipeline.dag.get_step(name)["step"], "llm", None)
        provider = provider_of_llm(llm)
        if (
            provider is not None
            and getattr(llm, "api_key", None) is None
            and api_key_from_env(provider.name) is None
        ):
            raise ConfigurationError(
                f"Step {name!r} needs {key_variables_text(provider.name)}; export it (any "
                "value works for a local OpenAI-compatible server)."
            )


def _configure_llms(pipeline: Pipeline, options: RunOptions) -> None:
    """Apply `--prompt-model`, `--qa-model` and `--no-structured-output`."""
    for step_name, model in (
        (WRITE_PROMPTS_STEP, options.prompt_model),
        (DECOMPOSE_STEP, options.qa_model),
    ):
        if model is not None and step_name in pipeline.dag:
            pipeline.dag.get_step(step_name)["step"].llm.model = model
    if options.structured_output:
        return
    for name in pipeline.dag:
        llm = getattr(pipeline.dag.get_step(name)["step"], "llm", None)
        if llm is not None and llm.generation_kwargs:
            llm.generation_kwargs = {
                key: value
                for key, value in llm.generation_kwargs.items()
                if key not in ("extra_body", "response_schema")
            }


ROWS_CACHE_DIR = "agfsync-rows"
"""In the preset's distilabel cache: where the rows of a run's steps are loaded into Arrow
files (a new folder per run, removed once the dataset folder is written)."""
PAIRS_CACHE_DIR = "agfsync-pairs"
"""Beside the run's artifacts (in distilabel's cache): where the pairs stream into an
Arrow file (a new folder per write, `pairs_scratch`) before the shards are cut from it."""


OPTION_STEPS = (
    ("--prompts", "prompts_file", LOAD_PROMPTS_STEP),
    ("--num-prompts", "num_prompts", LOAD_PROMPTS_STEP),
    ("--num-images", "num_images", GENERATE_IMAGES_STEP),
    ("--seed", "seed", GENERATE_IMAGES_STEP),
    ("--sampling", "sampling", GENERATE_IMAGES_STEP),
    ("--resolution", "resolution", GENERATE_IMAGES_STEP),
    ("--min-margin", "min_margin", SELECT_PAIRS_STEP),
    ("--keep-ties", "keep_ties", SELECT_PAIRS_STEP),
    ("--weights", "weights_file", JUDGE_IMAGES_STEP),
    ("--categories", "categories_file", LOAD_CATEGORIES_STEP),
    ("--prompts-per-category", "prompts_per_category", LOAD_CATEGORIES_STEP),
    ("--dedup", "dedup_method", DEDUPLICATE_STEP),
    ("--prompt-model", "prompt_model", WRITE_PROMPTS_STEP),
    ("--qa-model", "qa_model", DECOMPOSE_STEP),
)
"""(flag, `RunOptions` field, the step it sets): a flag given for a preset without that
step is refused (`_refuse_options_that_do_not_apply`), never dropped while the run goes
ahead."""


def _refuse_options_that_do_not_apply(pipeline: Pipeline, preset: str, options: RunOptions) -> None:
    """Before any work: an option the preset has no step for is an error naming the
    option, the preset and the presets that take it."""
    from agfsync.pipelines import PRESETS, build_preset

    for flag, option, step in OPTION_STEPS:
        if getattr(options, option) in (None, False) or step in pipeline.dag:
            continue
        takers = [name for name in sorted(PRESETS) if step in build_preset(name).dag]
        raise ConfigurationError(
            f"{flag} does not apply to preset {preset!r} (it has no {step} step); the presets "
            f"that take it: {', '.join(takers)}. Leave {flag} out or choose one of those."
        )


def _parameters(pipeline: Pipeline, options: RunOptions) -> dict[str, dict[str, Any]]:
    wanted: dict[str, dict[str, Any]] = {
        LOAD_PROMPTS_STEP: {
            "data_files": str(options.prompts_file) if options.prompts_file else None,
            "num_prompts": options.num_prompts,
        },
        GENERATE_IMAGES_STEP: {
            "num_images": options.num_images,
            "seed": options.seed,
            **sampling_settings(options.sampling),
            "height": options.resolution,
            "width": options.resolution,
        },
        SELECT_PAIRS_STEP: {
            "min_margin": options.min_margin,
            "keep_ties": options.keep_ties or None,
        },
        LOAD_CATEGORIES_STEP: {
            "categories_file": str(options.categories_file) if options.categories_file else None,
            "prompts_per_category": options.prompts_per_category,
        },
        DEDUPLICATE_STEP: {"method": options.dedup_method},
    }
    for name in pipeline.dag:
        if getattr(pipeline.dag.get_step(name)["step"], "llm", None) is not None:
            wanted.setdefault(name, {})["time_limit"] = options.llm_time_limit
    parameters = {}
    for step_name, values in wanted.items():
        if step_name in pipeline.dag:
            parameters[step_name] = {
                key: value for key, value in values.items() if value is not None
            }
    return parameters


def _check_options(options: RunOptions) -> None:
    if options.num_images is not None and options.num_images < 2:
        raise ConfigurationError(
            f"--num-images {options.num_images} cannot form a pair; use 2 or more candidates "
            "per prompt."
        )
    for flag, value in (
        ("--num-prompts", options.num_prompts),
        ("--prompts-per-category", options.prompts_per_category),
    ):
        if value is not None and value < 1:
            raise ConfigurationError(f"{flag} {value} must be at least 1.")
    for flag, number in (
        ("--min-margin", options.min_margin),
        ("--llm-time-limit", options.llm_time_limit),
    ):
        if number is not None and not math.isfinite(number):
            raise ConfigurationError(f"{flag} {number} is not a number; give a finite value.")
    if options.resolution is not None and (options.resolution < 8 or options.resolution % 8):
        raise ConfigurationError(
            f"--resolution {options.resolution} must be a positive multiple of 8 (the VAE "
            "works on 8x8 pixel blocks), e.g. 512 for SD 1.x or 1024 for SDXL."
        )
    if options.min_margin is not None and options.min_margin < 0:
        raise ConfigurationError(f"--min-margin {options.min_margin} must be 0 or more.")
    if options.llm_time_limit is not None and options.llm_time_limit <= 0:
        raise ConfigurationError(
            f"--llm-time-limit {options.llm_time_limit} must be a positive number of seconds."
        )


def _expected_prompts(pipeline: Pipeline, options: RunOptions) -> int:
    """How many prompts the run will have: counted from the prompt file (bad input files
    fail here, before any call), or categories x prompts per category."""
    if LOAD_CATEGORIES_STEP in pipeline.dag:
        loader = pipeline.dag.get_step(LOAD_CATEGORIES_STEP)["step"]
        per_category = options.prompts_per_category or loader.prompts_per_category
        return len(load_categories(options.categories_file)) * per_category
    records = load_prompt_records(
        options.prompts_file,
        num_prompts=options.num_prompts,
        require_qa_pairs=_qa_pairs_from_the_file(pipeline),
    )
    return len(records)


def _qa_pairs_from_the_file(pipeline: Pipeline) -> bool:
    """Whether the judges need QA pairs (VQA) that no step writes: the prompt file's."""
    if JUDGE_IMAGES_STEP not in pipeline.dag or DECOMPOSE_STEP in pipeline.dag:
        return False
    judging = pipeline.dag.get_step(JUDGE_IMAGES_STEP)["step"]
    return any("qa_pairs" in spec.scorer_class().required_context for spec in judging.scorers)


def _check_disk(pipeline: Pipeline, preset: str, prompts: int, output_dir: Path) -> None:
    """Room for the candidate images in distilabel's cache (and, while the dataset is
    written, the pairs' Arrow file there: two images per prompt) and the dataset folder,
    by `agfsync estimate`'s figures for the preset."""
    if GENERATE_IMAGES_STEP not in pipeline.dag:
        return
    tables = EstimateTables.load()
    profile = tables.profiles.get(tables.preset_profiles.get(preset, ""))
    if profile is None:
        return
    estimate = estimate_run(pipeline, preset, prompts, tables=tables)
    check_disk(
        {
            pipeline._cache_dir: (estimate.num_images + 2 * prompts) * profile.bytes_per_image,
            output_dir: estimate.disk_bytes,
        },
        hint="free some space, choose another --output (or DISTILABEL_CACHE_DIR for the "
        "cache), or run fewer prompts",
    )


def _preflight(pipeline: Pipeline, preset: str, output_dir: Path, options: RunOptions) -> int:
    """Everything that can be checked before the first model load or LLM call; returns
    the number of prompts the run expects."""
    prompts = _expected_prompts(pipeline, options)
    check_dataset_folder(output_dir, overwrite=options.overwrite)
    check_distilabel_cache(pipeline._cache_dir)
    _check_api_keys(pipeline)
    check_models(
        need
        for name in pipeline.dag
        for need in getattr(pipeline.dag.get_step(name)["step"], "models_to_load", list)()
    )
    _check_disk(pipeline, preset, prompts, output_dir)
    return prompts


def run_preset(preset: str, output_dir: Path, options: RunOptions | None = None) -> RunSummary:
    """Run `preset` and write its dataset to `output_dir`.

    validate (inputs, output folder, keys, models, disk) -> prepare (options, runtime
    parameters, resume) -> run (one run per cache, failures named) -> write.
    """
    from agfsync.pipelines import build_preset

    options = options or RunOptions()
    started = time.perf_counter()
    pipeline = build_preset(preset)
    _refuse_options_that_do_not_apply(pipeline, preset, options)
    weights = _apply_weights(pipeline, options.weights_file)
    _configure_llms(pipeline, options)
    keep_credentials_out_of_files(pipeline)
    remember_pipeline_dumps(pipeline)
    _check_options(options)
    parameters = _parameters(pipeline, options)
    # Step signatures, which locate the cache, include the runtime parameters; the
    # models a step loads may depend on them too (the dedup method).
    pipeline._set_runtime_parameters(parameters)
    expected = _preflight(pipeline, preset, output_dir, options)
    cache = pipeline._cache_dir / pipeline.name
    lock = RunLock(
        cache,
        about={"preset": preset, "output": os.fspath(output_dir.resolve())},
        what=f"the cache of preset {preset} ({cache})",
    )
    failures = StepFailures(pipeline)
    # distilabel's Distiset copies the rows into Arrow files: ours, removed after the write.
    with lock, rows_scratch(cache / ROWS_CACHE_DIR):
        distiset = _run(pipeline, parameters, options, failures, _stage_totals(pipeline, expected))
        rows = _leaf_rows(distiset, pipeline)
        outcome = RunOutcome(
            preset=preset,
            pipeline=pipeline,
            options=options,
            rows=rows,
            output_dir=output_dir,
            extra_files={
                "pipeline.yaml": Path(distiset.pipeline_path or ""),
                "pipeline.log": Path(distiset.log_filename_path or ""),
            },
            artifacts_dir=Path(distiset.artifacts_path) if distiset.artifacts_path else None,
            started=started,
            expected_prompts=expected,
            failures=failures,
            weights=weights.info if weights else None,
        )
        if GENERATE_IMAGES_STEP not in pipeline.dag:
            return _write_text_dataset(outcome)
        return _write_preference_dataset(outcome)


class StepFailures:
    """The first step that failed inside distilabel (to load, or a global step) and its
    error, caught from distilabel's error callback, so the command can name them."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.first: str | None = None
        callback = getattr(pipeline, "_error_callback", None)
        if callback is None:  # RayPipeline reports failures its own way
            return

        def recording(error: BaseException) -> None:
            if self.first is None and isinstance(error, _StepWrapperException):
                verb = "failed to load" if error.is_load_error else "failed"
                message = str(error.subprocess_exception or error.message).strip()
                last_line = message.splitlines()[-1] if message else type(error).__name__
                self.first = f"step {error.step.name!r} {verb}: {last_line}"
            callback(error)

        pipeline._error_callback = recording


def _why_nothing(failures: StepFailures, pipeline: Pipeline, rows: datasets.Dataset | None) -> str:
    """The cause to name when a run produced nothing usable: the step that failed, else
    the first failure recorded on a row."""
    if failures.first is not None:
        return failures.first
    writers = _column_writers(pipeline)
    for row in rows or []:
        for failure in row_failures(row):
            return f"{writers.get(failure.column, 'a step')}: {failure.reason}"
    return "no step recorded a cause (see the log above)"


def _apply_weights(pipeline: Pipeline, weights_file: Path | None) -> WeightPreset | None:
    """Set the judges' weights from `--weights`; returns them with where they came from."""
    if weights_file is None:
        return None
    judging = pipeline.dag.get_step(JUDGE_IMAGES_STEP)["step"]
    names = [spec.name for spec in judging.scorers]
    preset = read_weights_for(weights_file, names, "the preset's judges are")
    judging.scorers = [
        spec.model_copy(update={"weight": preset.weights[spec.name]}) for spec in judging.scorers
    ]
    return preset


def _stage_totals(pipeline: Pipeline, prompts: int) -> dict[str, int | None]:
    """The stages of the live count `agfsync generate` shows on a terminal, with the
    totals known before the run (pairs: at most one per prompt)."""
    if GENERATE_IMAGES_STEP not in pipeline.dag:
        return {"prompts": prompts, "decomposed": prompts}
    images = prompts * pipeline.dag.get_step(GENERATE_IMAGES_STEP)["step"].num_images
    return {"prompts": prompts, "images": images, "judged": images, "pairs": None}


def _run(
    pipeline: Pipeline,
    parameters: dict[str, dict[str, Any]],
    options: RunOptions,
    failures: StepFailures,
    stage_totals: dict[str, int | None],
) -> Distiset:
    """Resume bookkeeping, then `pipeline.run`; a step that fails inside distilabel is
    named with its error."""
    if options.use_cache:
        resuming = is_unfinished(pipeline)
        discarded = discard_unfinished_work(pipeline)
        if resuming:
            logger.warning(
                "The last run of this command was interrupted or left rows failed; resuming "
                "from its images and journals (redoing: %s).",
                ", ".join(discarded) or "the dataset only",
            )
        if GENERATE_IMAGES_STEP in pipeline.dag:
            carry_over_artifacts(pipeline, GENERATE_IMAGES_STEP, IMAGES_ARTIFACT)
        skip_finished_stages(pipeline)
    begin_execution(pipeline, options.use_cache)
    children_die_with_this_process()
    import_before_fork(pipeline)
    plain_distilabel_lines_off_a_terminal()
    try:
        with stop_promptly_on_interrupt(pipeline), live_stage_counts(stage_totals) as handlers:
            return pipeline.run(
                parameters=parameters, use_cache=options.use_cache, logging_handlers=handlers
            )
    except RuntimeError as error:
        _stop_log_listener()
        if failures.first is not None:
            raise RunFailedError(failures.first + ".") from error
        raise


def _stop_log_listener() -> None:
    """distilabel stops its log thread only after a run that ended well; left running,
    it prints a traceback at exit, after the command's own last line."""
    from distilabel.utils.logging import stop_logging

    with suppress(Exception):
        stop_logging()


@dataclass
class RunOutcome:
    """What `pipeline.run` left, for writing the dataset folder."""

    preset: str
    pipeline: Pipeline
    options: RunOptions
    rows: datasets.Dataset | None
    output_dir: Path
    extra_files: dict[str, Path]
    artifacts_dir: Path | None
    started: float
    expected_prompts: int
    failures: StepFailures
    weights: WeightsInfo | None = None
    """Where the judges' weights came from, when `--weights` set them."""


def _write_text_dataset(outcome: RunOutcome) -> RunSummary:
    pipeline, options, rows, output_dir = (
        outcome.pipeline,
        outcome.options,
        outcome.rows,
        outcome.output_dir,
    )
    # Recorded first: the next run redoes the failed steps, also when nothing came out.
    failed = Counter[str]() if rows is None else _failures(rows, pipeline)
    usable = [] if rows is None else [row for row in rows if row["prompt"] and row["qa_pairs"]]
    if rows is None or not usable:
        raise RunFailedError(
            "The run wrote no prompt with QA pairs: "
            + _why_nothing(outcome.failures, pipeline, rows)
            + "; fix the cause and run the same command again (finished work is reused)."
        )
    report = _text_report(rows, pipeline, options)
    write_dataset_folder(
        rows,
        output_dir,
        card=lambda data_files, _folder: render_prompt_card(
            rows,
            preset=outcome.preset,
            llm_models=sorted(set(_llm_models(pipeline).values())),
            report=report,
            load_path=os.fspath(output_dir.resolve()),
            data_files=data_files,
        ),
        extra_files=outcome.extra_files,
        overwrite=options.overwrite,
    )
    if not failed:
        finish_execution(pipeline)
    return RunSummary(
        output_dir=output_dir.resolve(),
        num_rows=len(rows),
        seconds=time.perf_counter() - outcome.started,
        unit="prompts with QA pairs",
        report=report,
        failures=failed,
    )


def _write_preference_dataset(outcome: RunOutcome) -> RunSummary:
    pipeline, rows, output_dir = outcome.pipeline, outcome.rows, outcome.output_dir
    expected = outcome.expected_prompts
    # Recorded first: the next run redoes the failed steps, also when nothing came out.
    failed = Counter[str]() if rows is None else _failures(rows, pipeline)
    found = 0 if rows is None else len(rows)
    # Prompts from a file must all come out; prompts an LLM writes are as many as it wrote.
    from_file = LOAD_CATEGORIES_STEP not in pipeline.dag
    if rows is None or found == 0 or (from_file and found != expected):
        total = f" of {expected}" if from_file else ""
        raise RunFailedError(
            f"The run stopped with {found}{total} prompts done: "
            f"{_why_nothing(outcome.failures, pipeline, rows)}; fix the cause and run the "
            "same command again to resume."
        )
    artifacts_dir = outcome.artifacts_dir
    if artifacts_dir is None:
        raise RunFailedError(
            f"The run produced no images: {_why_nothing(outcome.failures, pipeline, rows)}."
        )
    with pairs_scratch(artifacts_dir.parent / PAIRS_CACHE_DIR) as scratch:
        try:
            dataset, unpaired = build_preference_dataset(rows, artifacts_dir, scratch)
        except MissingImageError:
            # The rows say done but a file is gone: the next run renders it again.
            record_steps_to_redo(pipeline, [GENERATE_IMAGES_STEP])
            raise
        if len(dataset) == 0:
            reasons = Counter(reason_kind(str(row["pair_error"])) for row in unpaired)
            listed = "; ".join(f"{count} x {reason}" for reason, count in reasons.most_common(3))
            raise RunFailedError(
                f"No prompt got a preference pair ({len(unpaired)} prompts: {listed}); "
                "nothing was written. Each reason is the pair step's; see the README's "
                '"Bad input" table.'
            )
        run = _run_info(outcome, unpaired)
        write_dataset_folder(
            dataset,
            output_dir,
            card=card_writer(dataset, run, load_path=os.fspath(output_dir.resolve())),
            extra_files=outcome.extra_files,
            artifacts_dir=artifacts_dir,
            overwrite=outcome.options.overwrite,
        )
        num_rows = len(dataset)
    if not failed:
        finish_execution(pipeline)
    return RunSummary(
        output_dir=output_dir.resolve(),
        num_rows=num_rows,
        num_unpaired=len(unpaired),
        seconds=time.perf_counter() - outcome.started,
        failures=failed,
    )


def _leaf_rows(distiset: Distiset, pipeline: Pipeline) -> datasets.Dataset | None:
    """Every row as the pipeline's last step left it. distilabel names the config of a
    Distiset's only leaf step `default`; with images, the pair config
    (`agfsync.steps.PreferenceDatasetExport`) is `default` and the leaf keeps its name.
    """
    (leaf,) = pipeline.dag.leaf_steps
    for name in (leaf, "default"):
        if name in distiset:
            return distiset[name]["train"]
    return None


def _column_writers(pipeline: Pipeline) -> dict[str, str]:
    """The step that writes each output column."""
    return {
        column: name
        for name in pipeline.dag
        for column in pipeline.dag.get_step(name)["step"].outputs
    }


def _failures(rows: datasets.Dataset, pipeline: Pipeline) -> Counter[str]:
    """Rows with a retryable failure, counted by the step to redo, with that step's first
    reason as an example (`step: reason`). The steps are recorded with the execution, so
    that the next run of the command redoes them (see `agfsync.run.resume`)."""
    writers = _column_writers(pipeline)
    failed: Counter[str] = Counter()
    examples: dict[str, str] = {}
    to_redo: set[str] = set()
    for row in rows:
        failures = row_failures(row)
        for failure in failures:
            # A column no step of this pipeline writes: redo them all rather than guess.
            to_redo.update([writers[failure.column]] if failure.column in writers else pipeline.dag)
        if failures:
            step = writers.get(failures[0].column, "unknown step")
            examples.setdefault(step, f"{step}: {failures[0].reason}")
            failed[examples[step]] += 1
    if to_redo:
        record_steps_to_redo(pipeline, sorted(to_redo))
    return failed


def _llm_models(pipeline: Pipeline) -> dict[str, str]:
    """The model of each LLM step, by step name."""
    models = {}
    for name in pipeline.dag:
        llm = getattr(pipeline.dag.get_step(name)["step"], "llm", None)
        if llm is not None:
            models[name] = str(getattr(llm, "model", None) or getattr(llm, "model_id", ""))
    return models


def _run_info(outcome: RunOutcome, unpaired: list[dict[str, Any]]) -> RunInfo:
    preset, pipeline, options = outcome.preset, outcome.pipeline, outcome.options
    generation = pipeline.dag.get_step(GENERATE_IMAGES_STEP)["step"]
    judging = pipeline.dag.get_step(JUDGE_IMAGES_STEP)["step"]
    select = pipeline.dag.get_step(SELECT_PAIRS_STEP)["step"]
    llm_models = _llm_models(pipeline)
    loader = (
        pipeline.dag.get_step(LOAD_PROMPTS_STEP)["step"]
        if LOAD_PROMPTS_STEP in pipeline.dag
        else None
    )
    return RunInfo(
        preset=preset,
        prompt_file=Path(loader.data_files or SAMPLE_PROMPTS_PATH).name if loader else None,
        seed=options.seed if options.seed is not None else generation.seed,
        llm_models=llm_models,
        judges=[JudgeInfo(name=s.name, model=s.model, weight=s.weight) for s in judging.scorers],
        weights_source=outcome.weights.describe() if outcome.weights else None,
        weights=outcome.weights,
        unpaired=[UnpairedPrompt.of(row) for row in unpaired],
        min_margin=options.min_margin if options.min_margin is not None else select.min_margin,
        keep_ties=options.keep_ties or select.keep_ties,
        options=_recorded_options(options),
    )


def _recorded_options(options: RunOptions) -> GenerateOptions:
    """The options that changed the data, for run.json (files by name)."""

    def name(path: Path | None) -> str | None:
        return path.name if path is not None else None

    return GenerateOptions(
        prompts_file=name(options.prompts_file),
        num_prompts=options.num_prompts,
        categories_file=name(options.categories_file),
        prompts_per_category=options.prompts_per_category,
        dedup_method=options.dedup_method,
        prompt_model=options.prompt_model,
        qa_model=options.qa_model,
        num_images=options.num_images,
        resolution=options.resolution,
        sampling=options.sampling,
        weights_file=name(options.weights_file),
    )


def _text_report(rows: datasets.Dataset, pipeline: Pipeline, options: RunOptions) -> list[str]:
    """Prompt and QA statistics next to the paper's (26.06 words, 9.03 questions per prompt)."""
    records = [row for row in rows if row["prompt"]]
    stats = qa_statistics(records)
    rejected = Counter(entry["reason"] for row in records for entry in row["qa_rejected"])
    failed = sum(row["qa_error"] is not None for row in records)
    tokens: Counter[str] = Counter()
    for row in records:
        for usage_column in ("prompt_usage", "qa_usage"):
            tokens.update(row.get(usage_column) or {})
    report = [
        f"prompts: {stats.num_prompts}; words per prompt {stats.words_per_prompt:.2f} "
        f"(paper 26.06); valid questions per prompt {stats.questions_per_prompt:.2f} "
        "(paper 9.03)",
        "question types: " + ", ".join(f"{k} {v}" for k, v in stats.element_types.items()),
        "rejected questions: " + (", ".join(f"{k} {v}" for k, v in rejected.items()) or "none"),
        f"prompts whose decomposition failed: {failed}",
        f"tokens: {tokens.get('input_tokens', 0)} in, {tokens.get('output_tokens', 0)} out",
    ]
    if len(records) < len(rows):
        report.append(f"rows without a prompt (see rewrite_error): {len(rows) - len(records)}")
    if LOAD_CATEGORIES_STEP in pipeline.dag:
        loader = pipeline.dag.get_step(LOAD_CATEGORIES_STEP)["step"]
        target = options.prompts_per_category or loader.prompts_per_category
        per_category = Counter(row["category"] for row in records)
        short = [
            f"{category.name} {per_category[category.name]}/{target}"
            for category in load_categories(options.categories_file)
            if per_category[category.name] < target
        ]
        report.append("categories below target: " + (", ".join(short) or "none"))
    return report
