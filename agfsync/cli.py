"""The `agfsync` command line."""

from __future__ import annotations

import functools
import logging
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperGroup

from agfsync.config_options import renamed_notice
from agfsync.environment import (
    AGFSYNC_ARGILLA_REQUEST_BYTES,
    AGFSYNC_DEBUG,
    ARGILLA_API_KEY,
    ARGILLA_API_URL,
    DISTILABEL_CACHE_DIR,
    HUB,
    MODELS,
    OPENAI_BASE_URL,
    Variable,
    environment_help,
    provider_keys,
)
from agfsync.errors import AgfsyncError, ConfigurationError, one_line, unexpected_line
from agfsync.logs import configure_logging, redact
from agfsync.sampling import SAMPLING_PRESETS, sampling_settings

T = TypeVar("T")
R = TypeVar("R")
P = ParamSpec("P")

# click's own exceptions (usage errors, `typer.Exit`), wherever this typer takes click from.
_CLICK_EXITS: tuple[type[BaseException], ...] = (
    typer.Exit,
    typer.Abort,
    next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"),
)


class _Commands(TyperGroup):
    """Every command ends an error with one line: `_fail` for agfsync's errors, and for an
    exception nobody expected, `unexpected_line` instead of the traceback (distilabel's
    rich handler would print boxes with local variables, which can hold secrets)."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except _CLICK_EXITS:
            raise
        except AgfsyncError as error:
            raise _fail(error) from None
        except Exception as error:
            errors.print(Text.assemble(("error: ", "bold red"), unexpected_line(error)))
            raise typer.Exit(code=1) from None


# Plain help (click's formatter): rich markup would swallow every `[default: ...]` and
# show a `<bool>` type beside each flag.
app = typer.Typer(
    help="Build text-to-image preference datasets with AI feedback (AGFSync) on distilabel.",
    no_args_is_help=True,
    cls=_Commands,
    epilog="\b\n" + environment_help((AGFSYNC_DEBUG,)),
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
presets_app = typer.Typer(
    help="List and export the pipeline presets.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(presets_app, name="presets")
argilla_app = typer.Typer(
    help="Spot-check preference pairs in Argilla and pull the verdicts back.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(argilla_app, name="argilla")
console = Console(soft_wrap=True)
Overwrite = Annotated[
    bool,
    typer.Option(
        help="Write into an output folder holding files agfsync did not write (they are "
        "kept; a name agfsync writes that is taken stops the command)."
    ),
]
Sampling = Annotated[
    str | None,
    typer.Option(
        help="Named sampling setting: "
        + ", ".join(
            f"{name} ({values['num_inference_steps']} steps, "
            f"{values['scheduler'] or 'the model scheduler'})"
            for name, values in SAMPLING_PRESETS.items()
        )
        + " [default: the preset's]."
    ),
]
HubToken = Annotated[
    str | None,
    typer.Option(help="Hub token with write access [default: $HF_TOKEN, else the login]."),
]
errors = Console(stderr=True, soft_wrap=True, highlight=False)


def _rows_in_scratch(command: Callable[P, R]) -> Callable[P, R]:
    """The dataset rows a command loads with `datasets` are copied into a scratch folder
    removed when it ends (`rows_scratch`), not left in ~/.cache/huggingface/datasets: at
    paper scale that copy holds every chosen and rejected image (tens of GB)."""

    @functools.wraps(command)
    def run_with_a_scratch_cache(*args: P.args, **kwargs: P.kwargs) -> R:
        from agfsync.dataset.folder import rows_scratch

        with rows_scratch():
            return command(*args, **kwargs)

    return run_with_a_scratch_cache


def OutputFolder(what: str) -> typer.models.OptionInfo:
    """The one spelling of an output folder across commands: `-o/--output`."""
    return typer.Option("--output", "-o", help=what)


def _reads(*variables: Variable) -> str:
    """The `epilog` of a command's `--help`: the environment variables it reads (click
    keeps a paragraph after `\\b` as it is)."""
    return "\b\n" + environment_help(variables)


def _renamed(old_flag: str) -> typer.models.OptionInfo:
    """A hidden old spelling of an option, accepted for one release with a notice."""
    return typer.Option(old_flag, hidden=True)


def _pick(new: T, old: T | None, old_flag: str, new_flag: str) -> T:
    """The value of an option that may have been given under its old name."""
    if old is None:
        return new
    errors.print(renamed_notice(old_flag, new_flag), highlight=False)
    return old


def _fail(error: Exception) -> typer.Exit:
    """One line on standard error (no traceback) and the error's exit code: 2 for bad
    input or configuration, 1 for a run or publication that failed."""
    errors.print(Text.assemble(("error: ", "bold red"), one_line(error)))
    return typer.Exit(code=getattr(error, "exit_code", 2))


def _stopped() -> None:
    """Ctrl-C or SIGTERM during a run: the step processes are already stopped; what was
    finished is on disk. Exits at once (distilabel's threads would wait otherwise)."""
    from agfsync.run.processes import kill_children

    kill_children()  # any worker distilabel's pool started while stopping
    # distilabel's threads fail once their processes are gone; their tracebacks and log
    # lines are expected now and would bury the one line that matters.
    threading.excepthook = lambda args: None
    logging.disable(logging.CRITICAL)
    errors.print(
        "Stopped. Finished work is kept: run the same command again to resume.",
        highlight=False,
    )
    sys.stdout.flush()
    sys.stderr.flush()
    with open(os.devnull, "w") as devnull:  # nothing printed after the stop line
        os.dup2(devnull.fileno(), sys.stderr.fileno())
    os._exit(130)


@app.callback()
def _configure() -> None:
    configure_logging()


@app.command(epilog=_reads(*MODELS, *provider_keys(), OPENAI_BASE_URL, DISTILABEL_CACHE_DIR))
def generate(
    preset: Annotated[str, typer.Option(help="Pipeline preset (see `agfsync presets list`).")] = (
        "offline"
    ),
    output: Annotated[
        Path | None, OutputFolder("Dataset folder [default: ./agfsync-data/<preset>].")
    ] = None,
    prompts: Annotated[
        Path | None, typer.Option(help="JSONL/JSON prompt file [default: the shipped sample].")
    ] = None,
    num_prompts: Annotated[
        int | None, typer.Option(help="Use only the first N prompts [default: all].")
    ] = None,
    num_images: Annotated[
        int | None, typer.Option(help="Candidates per prompt [default: the preset's].")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Run seed [default: the preset's].")] = None,
    min_margin: Annotated[
        float | None,
        typer.Option(help="Refuse pairs whose weighted-score margin is below this [default: 0]."),
    ] = None,
    categories: Annotated[
        Path | None,
        typer.Option(help="Text presets: YAML/JSON categories [default: the 12 AGFSync ones]."),
    ] = None,
    prompts_per_category: Annotated[
        int | None,
        typer.Option(help="Text presets: prompts to write per category [default: the preset's]."),
    ] = None,
    dedup: Annotated[
        str | None,
        typer.Option(
            help="Text presets: near-duplicate filter, embedding|minhash [default: the preset's]."
        ),
    ] = None,
    prompt_model: Annotated[
        str | None,
        typer.Option(help="Text presets: model that writes prompts [default: the preset's]."),
    ] = None,
    qa_model: Annotated[
        str | None,
        typer.Option(help="Text presets: model that decomposes prompts [default: the preset's]."),
    ] = None,
    structured_output: Annotated[
        bool,
        typer.Option(help="Text presets: ask the LLM for JSON matching a schema (native)."),
    ] = True,
    use_cache: Annotated[
        bool, typer.Option(help="Resume from distilabel's cache when the same run was started.")
    ] = True,
    keep_ties: Annotated[
        bool,
        typer.Option(
            "--keep-ties",
            help="Also export pairs whose best and worst images scored the same, with "
            "label_0 = 0.5 (diffusers' DPO scripts read 0.5 as a win of jpg_0) [default: off].",
        ),
    ] = False,
    overwrite: Overwrite = False,
    llm_time_limit: Annotated[
        float | None,
        typer.Option(
            help="Seconds each LLM step may spend on calls in this run; unanswered rows "
            "are retried by the next run [default: no limit]."
        ),
    ] = None,
    weights: Annotated[
        Path | None,
        typer.Option(
            help="Judge weights from a file (`agfsync calibrate` writes weights.yaml); "
            "recorded in run.json and on the card [default: the preset's]."
        ),
    ] = None,
    sampling: Sampling = None,
    resolution: Annotated[
        int | None,
        typer.Option(
            help="Height and width of the candidates in pixels, a multiple of 8 [default: "
            "the model's]."
        ),
    ] = None,
) -> None:
    """Run a preset end to end and write the preference dataset to a folder."""
    from agfsync.logs import quiet_library_progress_bars
    from agfsync.run.preset import RunOptions, run_preset

    quiet_library_progress_bars()  # the dataset folder's; the step processes inherit it

    output_dir = output or Path("agfsync-data") / preset
    options = RunOptions(
        prompts_file=prompts,
        num_prompts=num_prompts,
        num_images=num_images,
        seed=seed,
        min_margin=min_margin,
        categories_file=categories,
        prompts_per_category=prompts_per_category,
        dedup_method=dedup,
        prompt_model=prompt_model,
        qa_model=qa_model,
        structured_output=structured_output,
        use_cache=use_cache,
        overwrite=overwrite,
        keep_ties=keep_ties,
        llm_time_limit=llm_time_limit,
        weights_file=weights,
        sampling=sampling,
        resolution=resolution,
    )
    try:
        summary = run_preset(preset, output_dir, options)
    except KeyboardInterrupt:
        _stopped()
    console.print(
        f"[bold green]Dataset ready:[/] {summary.output_dir} "
        f"({summary.num_rows} {summary.unit}, {summary.seconds:.1f} s)"
    )
    for line in summary.report:
        console.print(f"  {line}")
    if summary.num_unpaired:
        console.print(
            f"{summary.num_unpaired} prompts had no pair; their reasons are in "
            f"{summary.output_dir / 'run.json'}."
        )
    if summary.failures:
        errors.print(
            f"[bold yellow]{summary.failures.total()} prompts did not finish[/] (their "
            "failures are recorded on their rows):",
            highlight=False,
        )
        for example, count in summary.failures.most_common():
            errors.print(
                f"  {count} x {one_line(example)}", soft_wrap=True, highlight=False, markup=False
            )
        errors.print(
            "Run the same command again to retry them; finished work is reused.",
            highlight=False,
        )
    if preset == "offline":
        console.print(
            "The offline preset uses tiny random models: its images and scores are "
            "meaningless by design; it proves the wiring."
        )
    console.print(f"Load it with: datasets.load_dataset({str(summary.output_dir)!r})")


@app.command(epilog=_reads(*HUB))
@_rows_in_scratch
def publish(
    run_dir: Annotated[Path, typer.Argument(help="Output folder of `agfsync generate`.")],
    repo_id: Annotated[str, typer.Option(help="Dataset repo to create or update, ORG/NAME.")],
    private: Annotated[bool, typer.Option(help="Create the repo as private.")] = False,
    split: Annotated[str, typer.Option(help="Split name of these rows in the repo.")] = "train",
    hub_token: HubToken = None,
    token: Annotated[str | None, _renamed("--token")] = None,
    dry_run: Annotated[
        Path | None,
        typer.Option(
            help="Write the files that would be uploaded to this folder instead [default: "
            "upload them]."
        ),
    ] = None,
    include_artifacts: Annotated[
        bool, typer.Option(help="Also upload every candidate image (artifacts/).")
    ] = False,
    commit_message: Annotated[
        str | None,
        typer.Option(help="Message of the commit [default: Publish agfsync run (SPLIT split)]."),
    ] = None,
    retries: Annotated[
        int, typer.Option(help="Retries of transient Hub failures (exponential back-off).")
    ] = 3,
    overwrite: Overwrite = False,
    timeout: Annotated[
        float, typer.Option(help="Seconds a request to the Hub may wait for an answer.")
    ] = 60.0,
) -> None:
    """Publish a generated dataset to the Hugging Face Hub in one commit, with its card."""
    from agfsync.dataset.publish import publish_run

    result = publish_run(
        run_dir,
        repo_id,
        token=_pick(hub_token, token, "--token", "--hub-token"),
        private=private,
        split=split,
        include_artifacts=include_artifacts,
        dry_run_dir=dry_run,
        commit_message=commit_message,
        retries=retries,
        overwrite=overwrite,
        timeout=timeout,
    )
    if dry_run is not None:
        console.print(f"[bold green]Dry run:[/] {len(result.files)} files written to {dry_run}")
        return
    console.print(
        f"[bold green]Published[/] {result.repo_id}: {len(result.files)} files uploaded, "
        f"{len(result.deleted)} stale files deleted, in one commit "
        f"({redact(result.commit_url or '')})."
    )


ArgillaWorkspace = Annotated[
    str | None, typer.Option(help="Argilla workspace [default: the only one].")
]
ArgillaUrl = Annotated[str | None, typer.Option(help="Argilla URL [default: $ARGILLA_API_URL].")]
ArgillaKey = Annotated[str | None, typer.Option(help="API key [default: $ARGILLA_API_KEY].")]
ArgillaRetries = Annotated[int, typer.Option(help="Connection retries before giving up.")]
ReviewSeed = Annotated[int, typer.Option(help="Seed of the per-record image order.")]


ARGILLA_ENVIRONMENT = _reads(ARGILLA_API_URL, ARGILLA_API_KEY, *HUB)


@argilla_app.command(
    "push",
    epilog=_reads(ARGILLA_API_URL, ARGILLA_API_KEY, AGFSYNC_ARGILLA_REQUEST_BYTES, *HUB),
)
@_rows_in_scratch
def argilla_push(
    source: Annotated[str, typer.Argument(help="Dataset folder or Hub dataset repo id.")],
    name: Annotated[
        str | None, typer.Option(help="Argilla dataset to create or update.  [required]")
    ] = None,
    workspace: ArgillaWorkspace = None,
    sample: Annotated[
        int | None, typer.Option(help="Push only N pairs [default: all of them].")
    ] = None,
    by: Annotated[
        str | None,
        typer.Option(help="Stratify the sample by this column, e.g. category [default: none]."),
    ] = None,
    seed: ReviewSeed = 0,
    show_ai_choice: Annotated[
        bool,
        typer.Option(
            "--show-ai-choice",
            help="Show reviewers the AI's choice (a suggestion) and the judges' scores; their "
            "verdicts are then left out of the agreement `pull` reports [default: blind].",
        ),
    ] = False,
    api_url: ArgillaUrl = None,
    api_key: ArgillaKey = None,
    retries: ArgillaRetries = 3,
    dataset: Annotated[str | None, _renamed("--dataset")] = None,
) -> None:
    """Push preference pairs to Argilla for a blind human review (re-pushing updates by id)."""
    from rich.progress import Progress

    from agfsync.review.argilla import ArgillaTarget, push_for_review

    name = _pick(name, dataset, "--dataset", "--name")
    if name is None:
        raise _fail(ConfigurationError("Name the Argilla dataset with --name."))
    target = ArgillaTarget(name, workspace, api_url, api_key, retries)
    with Progress(console=console) as bar:
        task = bar.add_task("logging records", total=None)
        result = push_for_review(
            source,
            target,
            sample=sample,
            by=by,
            seed=seed,
            show_ai_choice=show_ai_choice,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    state = "created" if result.created else "updated"
    console.print(
        f"[bold green]Pushed[/] {result.pushed} pairs to Argilla dataset {result.dataset} "
        f"({state})."
    )


@argilla_app.command("pull", epilog=ARGILLA_ENVIRONMENT)
@_rows_in_scratch
def argilla_pull(
    dataset_name: Annotated[
        str | None,
        typer.Argument(
            metavar="NAME", help="The same as --name (either names the Argilla dataset)."
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(
            help="Argilla dataset made by `agfsync argilla push` [default: the positional "
            "NAME; one of the two is required]."
        ),
    ] = None,
    output: Annotated[
        Path | None, OutputFolder("Folder of the reviewed dataset.  [required]")
    ] = None,
    source: Annotated[
        str | None,
        typer.Option(
            help="The dataset folder or Hub repo that was pushed [default: the one the push "
            "recorded in the Argilla dataset]."
        ),
    ] = None,
    repo_id: Annotated[
        str | None,
        typer.Option(help="Also publish the reviewed dataset to this Hub repo [default: no]."),
    ] = None,
    hub_token: HubToken = None,
    workspace: ArgillaWorkspace = None,
    seed: ReviewSeed = 0,
    api_url: ArgillaUrl = None,
    api_key: ArgillaKey = None,
    retries: ArgillaRetries = 3,
    overwrite: Overwrite = False,
    out: Annotated[Path | None, _renamed("--out")] = None,
) -> None:
    """Pull submitted reviews, write the reviewed dataset and print AI-human agreement."""
    from agfsync.dataset.publish import publish_run
    from agfsync.review.argilla import ArgillaTarget, agreement_rows, pull_reviews

    picked = _pick(output, out, "--out", "--output")
    if picked is None:
        raise _fail(ConfigurationError("Name the folder of the reviewed dataset with --output."))
    out = picked
    if name is not None and dataset_name not in (None, name):
        raise _fail(
            ConfigurationError(
                f"Two Argilla datasets named: {dataset_name!r} and --name {name!r}; give one."
            )
        )
    name = name or dataset_name
    if name is None:
        raise _fail(ConfigurationError("Name the Argilla dataset to pull with --name."))

    target = ArgillaTarget(name, workspace, api_url, api_key, retries)
    report = pull_reviews(
        name, target, output_dir=out, source=source, seed=seed, overwrite=overwrite
    )
    published = publish_run(out, repo_id, token=hub_token) if repo_id else None
    console.print(
        f"[bold green]Reviewed dataset:[/] {out} ({report.records} pairs in Argilla, "
        f"{report.reviewed} answered, {report.resolved} resolved by the reviewers)"
    )
    if report.not_blind:
        console.print(
            f"{report.not_blind} records were reviewed with the AI's choice shown: their "
            "verdicts are applied, but left out of the agreement below."
        )
    if report.unknown_records:
        console.print(
            f"{len(report.unknown_records)} Argilla records match no row of the source: "
            + ", ".join(report.unknown_records[:10])
        )
    console.print(f"  {'AI vs human':<13} {'':<28} {'pairs':>5} {'agreement':>9} {'kappa':>7}")
    for group, key, value in agreement_rows(report):
        console.print(
            f"  {group:<13} {key:<28} {value.count:>5} {value.raw:>9.3f} {value.kappa:>7.3f}",
            highlight=False,
        )
    if published is not None:
        console.print(f"Published to {published.repo_id} ({redact(published.commit_url or '')}).")


@app.command(epilog=_reads(*HUB))
def calibrate(
    source: Annotated[
        str,
        typer.Argument(
            help="Reviewed pairs: the folder `agfsync argilla pull` wrote, any agfsync "
            "dataset with a human `label_0`, or a Hub dataset repo."
        ),
    ],
    output: Annotated[Path, OutputFolder("Folder of calibration.json, weights.yaml, README.md.")],
    folds: Annotated[int, typer.Option(help="Cross-validation folds over prompts.")] = 5,
    l2: Annotated[float, typer.Option(help="L2 penalty on the standardized weights.")] = 1e-2,
    seed: Annotated[int, typer.Option(help="Seed of the fold assignment.")] = 0,
    overwrite: Overwrite = False,
) -> None:
    """Fit the judges' weights to human reviews and say how much better they agree."""
    from agfsync.review.calibration import (
        MIX_HEADER,
        WEIGHTS_FILE,
        category_rows,
        mix_rows,
        run_calibration,
    )

    result = run_calibration(source, output, folds=folds, l2=l2, seed=seed, overwrite=overwrite)
    console.print(
        f"{result.pairs} reviewed pairs, {result.folds}-fold cross-validation over prompts "
        f"(left out: {result.left_out()})",
        highlight=False,
    )
    _print_table(MIX_HEADER, mix_rows(result))
    console.print("Per category, held-out agreement (95% interval):", highlight=False)
    _print_table(["category", "pairs", *(mix.name for mix in result.mixes)], category_rows(result))
    console.print(result.verdict, highlight=False)
    if result.recommended:
        console.print(
            f"Use them: agfsync generate --weights {output / WEIGHTS_FILE} ...", highlight=False
        )


def _print_table(header: list[str], rows: list[list[str]]) -> None:
    """Columns padded to their widest cell, two spaces apart (plain text, any width)."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    for row in [header, *rows]:
        line = "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        console.print("  " + line.rstrip(), highlight=False, markup=False, soft_wrap=True)


@app.command()
@_rows_in_scratch
def reselect(
    run_dir: Annotated[Path, typer.Argument(help="Output folder of `agfsync generate`.")],
    weights: Annotated[
        Path, typer.Option(help="Judge weights (`agfsync calibrate` writes weights.yaml).")
    ],
    output: Annotated[Path, OutputFolder("Folder of the re-selected dataset.")],
    min_margin: Annotated[
        float, typer.Option(help="Refuse pairs whose weighted-score margin is below this.")
    ] = 0.0,
    keep_ties: Annotated[
        bool,
        typer.Option("--keep-ties", help="Also export ties, with label_0 = 0.5 [default: off]."),
    ] = False,
    overwrite: Overwrite = False,
) -> None:
    """Pick each prompt's pair again with other judge weights, from the recorded scores
    (nothing is rendered or judged)."""
    from agfsync.review.reselect import reselect_pairs

    result = reselect_pairs(
        run_dir,
        output,
        weights,
        min_margin=min_margin,
        keep_ties=keep_ties,
        overwrite=overwrite,
    )
    console.print(
        f"[bold green]Dataset ready:[/] {result.output_dir} ({result.pairs} preference pairs, "
        f"{result.changed} changed, {result.unpaired} without a pair now)"
    )


@app.command()
def estimate(
    preset: Annotated[str, typer.Option(help="Pipeline preset (see `agfsync presets list`).")],
    num_prompts: Annotated[
        int | None, typer.Option(help="Number of prompts the run will have.  [required]")
    ] = None,
    num_images: Annotated[
        int | None, typer.Option(help="Candidates per prompt [default: the preset's].")
    ] = None,
    profile: Annotated[
        str | None, typer.Option(help="Throughput profile [default: the preset's].")
    ] = None,
    tables: Annotated[
        Path | None,
        typer.Option(
            help="Your own throughput/price tables [default: agfsync/data/estimate.yaml]."
        ),
    ] = None,
    questions_per_prompt: Annotated[
        float | None,
        typer.Option(
            help="Valid questions per prompt [default: the preset's prompt file, else the "
            "paper's 9.03]."
        ),
    ] = None,
    sampling: Sampling = None,
    prompts: Annotated[int | None, _renamed("--prompts")] = None,
) -> None:
    """Print expected LLM calls, tokens, API cost, GPU hours per stage and disk size."""
    from agfsync.pipelines import build_preset
    from agfsync.run.estimate import EstimateTables, estimate_run
    from agfsync.step_names import GENERATE_IMAGES_STEP

    count = _pick(num_prompts, prompts, "--prompts", "--num-prompts")
    if count is None:
        raise _fail(ConfigurationError("Give the number of prompts with --num-prompts."))
    pipeline = build_preset(preset)
    if sampling is not None and GENERATE_IMAGES_STEP in pipeline.dag:
        step = pipeline.dag.get_step(GENERATE_IMAGES_STEP)["step"]
        for name, value in sampling_settings(sampling).items():
            setattr(step, name, value)
    result = estimate_run(
        pipeline,
        preset,
        count,
        tables=EstimateTables.load(tables),
        profile=profile,
        num_images=num_images,
        questions_per_prompt=questions_per_prompt,
    )
    console.print(f"[bold]Estimate for {preset}, {count} prompts[/]", highlight=False)
    for step in result.llm_steps:
        cost = "no price" if step.cost_usd is None else f"${step.cost_usd:,.2f}"
        console.print(
            f"  LLM {step.step} ({step.model}): {step.calls:,} calls, "
            f"{step.input_tokens:,} input + {step.output_tokens:,} output tokens, {cost}",
            highlight=False,
        )
    if result.llm_steps:
        console.print(f"  LLM cost: ${result.llm_cost_usd:,.2f}", highlight=False)
    if result.num_images:
        total = _hours(result.gpu_hours)
        if result.overlapped_hours is not None:
            total = (
                f"{_hours(result.overlapped_hours)} with the stages overlapped as `agfsync "
                f"generate` runs them, {total} one after another"
            )
        console.print(
            f"  images: {result.num_images:,}; judged questions: {result.num_questions:,}\n"
            f"  device time: generation {_hours(result.generation_hours)}, judging "
            f"{_hours(result.judging_hours)}, start-up {_hours(result.startup_hours)}; "
            f"total {total}; profile {result.profile}\n"
            f"  disk: {_size(result.disk_bytes)}",
            highlight=False,
        )
    for line in result.assumptions:
        console.print(f"  assumes {line}", highlight=False)


def _size(size: int) -> str:
    return f"{size / 1e9:,.2f} GB" if size >= 1e9 else f"{size / 1e6:,.1f} MB"


def _hours(hours: float | None) -> str:
    if hours is None:
        return "unknown (see below)"
    return f"{hours:,.2f} h" if hours >= 1 else f"{hours * 3600:,.0f} s"


@presets_app.command("list")
def list_presets() -> None:
    """Print the preset names and their YAML files."""
    from agfsync.pipelines import PRESETS, preset_yaml_path

    for name in sorted(PRESETS):
        console.print(f"{name}\t{preset_yaml_path(name)}")


@presets_app.command("export")
def export(
    output: Annotated[
        Path | None, OutputFolder("Where to write the YAML files [default: pipelines/].")
    ] = None,
    directory: Annotated[Path | None, _renamed("--directory")] = None,
    overwrite: Overwrite = False,
) -> None:
    """Regenerate `<preset>.yaml` from the Python builders."""
    from agfsync.pipelines import PRESETS_DIR, export_presets

    folder = _pick(output, directory, "--directory", "--output")
    written = export_presets(folder or PRESETS_DIR, overwrite=overwrite)
    for path in written:
        console.print(f"wrote {path}")


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def train(ctx: typer.Context) -> None:
    """Fine-tune SD 1.x/2.x or SDXL with Diffusion-DPO (options: `agfsync train --help`)."""
    from agfsync.train.dpo import main

    raise typer.Exit(code=main(ctx.args))


@app.command(
    "evaluate",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def evaluate_command(ctx: typer.Context) -> None:
    """Compare a tuned model with its base on benchmark suites; write metrics and a report
    (options: `agfsync evaluate --help`)."""
    from agfsync.evaluation.cli import main

    try:
        code = main(ctx.args)
    except KeyboardInterrupt:
        _stopped()
    raise typer.Exit(code=code)


@app.command("report")
def report_command(
    run_dir: Annotated[
        Path,
        typer.Argument(
            help="Output folder of `agfsync generate` (or `reselect`, `argilla pull`), or of "
            "`agfsync calibrate`."
        ),
    ],
    output: Annotated[Path | None, OutputFolder("Report folder [default: RUN_DIR/report].")] = None,
    overwrite: Overwrite = False,
) -> None:
    """Render an HTML report of a preference dataset (scores, margins, categories,
    samples) or of a calibration (each judge mix's agreement with people)."""
    from agfsync.evaluation.report import render_calibration_report, render_dataset_report
    from agfsync.review.calibration import CALIBRATION_FILE

    render = (
        render_calibration_report
        if (run_dir / CALIBRATION_FILE).is_file()
        else render_dataset_report
    )
    path = render(run_dir, output or run_dir / "report", overwrite=overwrite)
    console.print(f"[bold green]Report:[/] {path}")
