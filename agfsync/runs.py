"""Running a preset end to end: distilabel pipeline -> dataset folder.

This is what `agfsync generate` does, as a function the tests and notebooks can
call. Inputs are checked before any model loads, and the dataset folder only
appears once it is complete.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
from distilabel.distiset import Distiset
from distilabel.pipeline import Pipeline

from agfsync.card import preference_card, render_prompt_card
from agfsync.categories import load_categories
from agfsync.dataset import MissingImageError, build_preference_dataset, write_dataset_folder
from agfsync.errors import ConfigurationError
from agfsync.failures import row_failures
from agfsync.prompts import load_prompt_records
from agfsync.qa import qa_statistics
from agfsync.run_info import JudgeInfo, RunInfo, UnpairedPrompt
from agfsync.steps.artifacts import carry_over_artifacts
from agfsync.steps.image_generation import IMAGES_ARTIFACT
from agfsync.steps.resume import (
    begin_execution,
    discard_unfinished_work,
    finish_execution,
    is_unfinished,
    record_steps_to_redo,
    skip_finished_stages,
)

logger = logging.getLogger(__name__)

LOAD_PROMPTS_STEP = "load_prompts"
GENERATE_IMAGES_STEP = "generate_images"
JUDGE_IMAGES_STEP = "judge_images"
SELECT_PAIRS_STEP = "select_pairs"
LOAD_CATEGORIES_STEP = "load_categories"
WRITE_PROMPTS_STEP = "write_prompts"
DEDUPLICATE_STEP = "deduplicate_prompts"
DECOMPOSE_STEP = "decompose_prompts"

API_KEYS = {
    "OpenAILLM": ("OPENAI_API_KEY",),
    "GeminiLLM": ("GEMINI_API_KEY", "GOOGLE_API_KEY"),
}
"""Environment variables that hold each LLM class's key (any one suffices)."""


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


def _check_api_keys(pipeline: Pipeline) -> None:
    """A missing key stops the run before any work, naming the variable to set."""
    for name in pipeline.dag:
        llm = getattr(pipeline.dag.get_step(name)["step"], "llm", None)
        variables = API_KEYS.get(type(llm).__name__, ())
        if (
            variables
            and getattr(llm, "api_key", None) is None
            and not any(os.environ.get(variable) for variable in variables)
        ):
            raise ConfigurationError(
                f"Step {name!r} needs {' or '.join(variables)}; export it (any value works "
                "for a local OpenAI-compatible server)."
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


def _parameters(pipeline: Pipeline, options: RunOptions) -> dict[str, dict[str, Any]]:
    wanted: dict[str, dict[str, Any]] = {
        LOAD_PROMPTS_STEP: {
            "data_files": str(options.prompts_file) if options.prompts_file else None,
            "num_prompts": options.num_prompts,
        },
        GENERATE_IMAGES_STEP: {"num_images": options.num_images, "seed": options.seed},
        SELECT_PAIRS_STEP: {"min_margin": options.min_margin},
        LOAD_CATEGORIES_STEP: {
            "categories_file": str(options.categories_file) if options.categories_file else None,
            "prompts_per_category": options.prompts_per_category,
        },
        DEDUPLICATE_STEP: {"method": options.dedup_method},
    }
    parameters = {}
    for step_name, values in wanted.items():
        if step_name in pipeline.dag:
            parameters[step_name] = {
                key: value for key, value in values.items() if value is not None
            }
    return parameters


def run_preset(preset: str, output_dir: Path, options: RunOptions | None = None) -> RunSummary:
    """Run `preset` and write its dataset to `output_dir`."""
    from agfsync.pipelines import build_preset

    options = options or RunOptions()
    started = time.perf_counter()
    pipeline = build_preset(preset)
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
    makes_images = GENERATE_IMAGES_STEP in pipeline.dag
    # Prompts from a file are counted up front (every one must come out); prompts an
    # LLM writes are as many as it wrote. Bad input files fail here, before any call.
    expected_rows = None
    if LOAD_CATEGORIES_STEP in pipeline.dag:
        load_categories(options.categories_file)
    else:
        expected_rows = len(load_prompt_records(options.prompts_file))
        if options.num_prompts is not None:
            expected_rows = min(expected_rows, options.num_prompts)
        if not makes_images:
            expected_rows = None
    _check_writable(output_dir)
    _check_api_keys(pipeline)
    _configure_llms(pipeline, options)

    parameters = _parameters(pipeline, options)
    # Step signatures, which locate the cache, include the runtime parameters.
    pipeline._set_runtime_parameters(parameters)
    if options.use_cache:
        resuming = is_unfinished(pipeline)
        discarded = discard_unfinished_work(pipeline)
        if resuming:
            logger.warning(
                "The last run of this command was interrupted or left rows failed; resuming "
                "from its images and journals (redoing: %s).",
                ", ".join(discarded) or "the dataset only",
            )
        if makes_images:
            carry_over_artifacts(pipeline, GENERATE_IMAGES_STEP, IMAGES_ARTIFACT)
        skip_finished_stages(pipeline)
    begin_execution(pipeline, options.use_cache)
    distiset = pipeline.run(parameters=parameters, use_cache=options.use_cache)
    rows = _leaf_rows(distiset, pipeline)
    extra_files = {
        "pipeline.yaml": Path(distiset.pipeline_path) if distiset.pipeline_path else Path(),
        "pipeline.log": Path(distiset.log_filename_path) if distiset.log_filename_path else Path(),
    }
    if not makes_images:
        if rows is None or len(rows) == 0:
            raise ConfigurationError(
                "The run wrote no prompts (see the log above); fix the cause and run the same "
                "command again to resume."
            )
        report = _text_report(rows, pipeline, options)
        failed = _failures(rows, pipeline)
        write_dataset_folder(
            rows,
            output_dir,
            card=lambda data_files, _folder: render_prompt_card(
                rows,
                preset=preset,
                report=report,
                load_path=os.fspath(output_dir),
                data_files=data_files,
            ),
            extra_files=extra_files,
        )
        if not failed:
            finish_execution(pipeline)
        return RunSummary(
            output_dir=output_dir.resolve(),
            num_rows=len(rows),
            seconds=time.perf_counter() - started,
            unit="prompts with QA pairs",
            report=report,
            failures=failed,
        )

    found = 0 if rows is None else len(rows)
    if rows is None or found == 0 or (expected_rows is not None and found != expected_rows):
        expected = "" if expected_rows is None else f" of {expected_rows}"
        raise ConfigurationError(
            f"The run stopped with {found}{expected} prompts done (see the log above); fix "
            "the cause and run the same command again to resume."
        )
    artifacts_dir = Path(distiset.artifacts_path) if distiset.artifacts_path else None
    if artifacts_dir is None:
        raise ConfigurationError("The run produced no images; see the log above.")
    failed = _failures(rows, pipeline)
    try:
        dataset, unpaired = build_preference_dataset(rows, artifacts_dir)
    except MissingImageError:
        # The rows say done but a file is gone: the next run renders it again.
        record_steps_to_redo(pipeline, [GENERATE_IMAGES_STEP])
        raise
    run = _run_info(preset, pipeline, options, unpaired)

    def write_card(data_files: list[str], folder: Path) -> str:
        run.save(folder)
        return preference_card(
            dataset, run, folder, load_path=os.fspath(output_dir), data_files={"train": data_files}
        )

    write_dataset_folder(
        dataset,
        output_dir,
        card=write_card,
        extra_files=extra_files,
        artifacts_dir=artifacts_dir,
    )
    if not failed:
        finish_execution(pipeline)
    return RunSummary(
        output_dir=output_dir.resolve(),
        num_rows=len(dataset),
        num_unpaired=len(unpaired),
        seconds=time.perf_counter() - started,
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


def _failures(rows: datasets.Dataset, pipeline: Pipeline) -> Counter[str]:
    """Rows with a retryable failure, counted by the step to redo, with that step's first
    reason as an example (`step: reason`). The steps are recorded with the execution, so
    that the next run of the command redoes them (see `agfsync.steps.resume`)."""
    writers = {
        column: name
        for name in pipeline.dag
        for column in pipeline.dag.get_step(name)["step"].outputs
    }
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


def _run_info(
    preset: str, pipeline: Pipeline, options: RunOptions, unpaired: list[dict[str, Any]]
) -> RunInfo:
    generation = pipeline.dag.get_step(GENERATE_IMAGES_STEP)["step"]
    judging = pipeline.dag.get_step(JUDGE_IMAGES_STEP)["step"]
    llm_models = {}
    for name in pipeline.dag:
        llm = getattr(pipeline.dag.get_step(name)["step"], "llm", None)
        if llm is not None:
            llm_models[name] = str(getattr(llm, "model", None) or getattr(llm, "model_id", ""))
    return RunInfo(
        preset=preset,
        seed=options.seed if options.seed is not None else generation.seed,
        llm_models=llm_models,
        judges=[JudgeInfo(name=s.name, model=s.model, weight=s.weight) for s in judging.scorers],
        unpaired=[
            UnpairedPrompt(
                prompt_id=row["prompt_id"],
                prompt=row["prompt"],
                category=row.get("category"),
                reason=row["pair_error"],
            )
            for row in unpaired
        ],
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
