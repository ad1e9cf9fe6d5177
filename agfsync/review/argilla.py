"""Spot-checking preference pairs in Argilla 2.x: push pairs, pull verdicts back.

`push_for_review` turns rows of a generated (or published) dataset into Argilla
records: the prompt, both images side by side in a per-record random order (the
order is recorded in the `image_a_is` metadata), the QA list, a preference question
and filterable metadata. The review is blind by default: reviewers see neither the
AI's choice nor the judges' scores, so that their agreement with the AI is a measure
and not an echo; `show_ai_choice` adds both (recorded per record in `ai_choice_shown`,
and `pull_reviews` reports agreement on blind records only). Images are re-encoded for
review (longest side at most `REVIEW_IMAGE_SIZE`, WebP) and records are sent in
requests of at most `REQUEST_BYTES` (`AGFSYNC_ARGILLA_REQUEST_BYTES` to change it,
for a server or proxy that takes less). Record ids are the prompt ids, so a re-push
updates records instead of duplicating them.

`pull_reviews` reads the submitted answers, resolves them per record
(`agfsync.review.verdicts.resolve_votes`), writes the reviewed dataset (human verdicts
override the AI label, `label_source` says which) and reports agreement.

Connection: `ARGILLA_API_URL` / `ARGILLA_API_KEY` or explicit arguments; the SDK
retries connections `retries` times, then a clear error is raised.
"""

from __future__ import annotations

import base64
import io
import math
import os
import re
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
from PIL import Image

from agfsync.dataset.card import card_writer
from agfsync.dataset.folder import IMAGE_COLUMNS, check_dataset_folder, write_dataset_folder
from agfsync.dataset.publish import load_run
from agfsync.dataset.statistics import SCORE_COLUMNS
from agfsync.environment import AGFSYNC_ARGILLA_REQUEST_BYTES, ARGILLA_API_KEY, ARGILLA_API_URL
from agfsync.errors import ConfigurationError
from agfsync.review.verdicts import (
    PREFERENCE_LABELS,
    Agreement,
    Side,
    agreement,
    ai_side,
    apply_verdict,
    bucket_label,
    margin_buckets,
    resolve_votes,
    sample_rows,
    shows_rejected_first,
)
from agfsync.safe_paths import inside

PREFERENCE_QUESTION = "preference"
COMMENT_QUESTION = "comment"
GUIDELINES = """\
Each record shows a prompt and two images generated for it. Choose the image that
follows the prompt better (every listed question should be answered "yes" for it)
and looks better. Pick "Both good" or "Both bad" when you cannot separate them,
and "Toxic content" when either image is unsafe. The order of the images is random;
judge for yourself (where the AI's choice is shown as a suggestion, it is a hint only).
"""
REVIEW_IMAGE_SIZE = 768
"""Longest side of an image as reviewers see it: enough to judge, small to send."""
REVIEW_IMAGE_QUALITY = 90
"""WebP quality of the review copies."""
REQUEST_BYTES = 16 * 2**20
"""Most bytes of record data (data URIs, texts) in one request to the server."""
FIELD_CHARACTERS = 5_000_000
"""argilla-server's limit on an image field's data URI."""


def _argilla() -> Any:
    try:
        import argilla
    except ImportError as error:
        raise ConfigurationError(
            "Argilla review needs the Argilla SDK: pip install 'agfsync[argilla]'."
        ) from error
    return argilla


SOURCE_NOTE = "Pairs pushed by agfsync from `{source}`."
"""Last line of the guidelines: where the pairs came from, so `pull` finds them again."""
SOURCE_NOTE_PATTERN = re.compile(r"Pairs pushed by agfsync from `(?P<source>[^`]+)`\.")


def source_reference(source: str) -> str:
    """How a pushed source is recorded: a local folder as an absolute path, a Hub repo id
    as it is."""
    return str(Path(source).resolve()) if Path(source).is_dir() else source


def recorded_source(guidelines: str | None) -> str | None:
    """The source a dataset's guidelines record (see `SOURCE_NOTE`), if any."""
    match = SOURCE_NOTE_PATTERN.search(guidelines or "")
    return match["source"] if match else None


def review_settings(source: str | None = None) -> Any:
    """The Argilla dataset settings agfsync pushes to and expects to pull from; with
    `source`, the guidelines end by naming it."""
    rg = _argilla()
    # Everything that tells the AI's choice is hidden from annotators (owners and
    # admins still filter on it), so that a blind review stays blind.
    hidden = {"visible_for_annotators": False}
    metadata = [
        rg.TermsMetadataProperty(name="category"),
        rg.TermsMetadataProperty(name="image_a_is", title="image A is the AI's", **hidden),
        rg.TermsMetadataProperty(
            name="ai_choice_shown", title="AI choice shown to reviewers", **hidden
        ),
        rg.FloatMetadataProperty(name="score_margin", **hidden),
    ]
    for column in SCORE_COLUMNS:
        name = column.removesuffix("_scores")
        metadata += [
            rg.FloatMetadataProperty(name=f"{name}_a", title=f"{name} score of image A", **hidden),
            rg.FloatMetadataProperty(name=f"{name}_b", title=f"{name} score of image B", **hidden),
        ]
    note = "" if source is None else "\n" + SOURCE_NOTE.format(source=source_reference(source))
    return rg.Settings(
        guidelines=GUIDELINES + note,
        fields=[
            rg.TextField(name="prompt", title="Prompt"),
            rg.ImageField(name="image_a", title="Image A"),
            rg.ImageField(name="image_b", title="Image B"),
            rg.TextField(
                name="qa_pairs", title="Questions the image should answer yes", use_markdown=True
            ),
            rg.TextField(name="scores", title="AI judges' scores", use_markdown=True),
        ],
        questions=[
            rg.LabelQuestion(
                name=PREFERENCE_QUESTION,
                title="Which image is better?",
                labels=PREFERENCE_LABELS,
            ),
            rg.TextQuestion(name=COMMENT_QUESTION, title="Comment (optional)", required=False),
        ],
        metadata=metadata,
    )


def _shape(settings: Any) -> dict[str, set[str]]:
    """What must match between two settings, as comparable descriptions."""
    questions = set()
    for question in settings.questions:
        labels = getattr(question, "labels", None)
        questions.add(f"{type(question).__name__} {question.name} {sorted(labels or [])}")
    return {
        "fields": {f"{type(f).__name__} {f.name}" for f in settings.fields},
        "questions": questions,
        "metadata": {f"{type(m).__name__} {m.name}" for m in settings.metadata},
    }


def settings_differences(found: Any, expected: Any) -> list[str]:
    """Human-readable differences between an existing dataset's settings and ours."""
    differences = []
    theirs, ours = _shape(found), _shape(expected)
    for part in ("fields", "questions", "metadata"):
        for item in sorted(ours[part] - theirs[part]):
            differences.append(f"{part}: expected `{item}`, missing or different")
        for item in sorted(theirs[part] - ours[part]):
            differences.append(f"{part}: unexpected `{item}`")
    return differences


@dataclass(frozen=True)
class ArgillaTarget:
    dataset: str
    workspace: str | None = None
    api_url: str | None = None
    api_key: str | None = None
    retries: int = 3


@contextmanager
def _talking_to(target: ArgillaTarget, action: str) -> Iterator[None]:
    """Turn SDK and connection errors into one message that says what to do."""
    rg = _argilla()
    import httpx

    try:
        yield
    except (httpx.HTTPError, rg._exceptions.ArgillaError) as error:
        raise ConfigurationError(
            f"Argilla {action} failed ({type(error).__name__}: {str(error).splitlines()[0]}). "
            f"Check ARGILLA_API_URL ({_url(target)}), ARGILLA_API_KEY and that the server "
            "is running, then run the same command again (records are updated by id, "
            "nothing is duplicated)."
        ) from error


def _url(target: ArgillaTarget) -> str:
    return target.api_url or ARGILLA_API_URL.get("unset") or "unset"


def _client(target: ArgillaTarget) -> Any:
    rg = _argilla()
    api_url = target.api_url or ARGILLA_API_URL.get()
    api_key = target.api_key or ARGILLA_API_KEY.get()
    if not api_url or not api_key:
        raise ConfigurationError(
            "Set ARGILLA_API_URL and ARGILLA_API_KEY (or pass --api-url / --api-key)."
        )
    client = rg.Argilla(api_url=api_url, api_key=api_key, retries=target.retries, timeout=60)
    client.me  # noqa: B018  (the first request: fails fast on a wrong URL or key)
    return client


def review_image(data: bytes) -> str:
    """An image as reviewers see it: a WebP data URI, its longest side at most
    `REVIEW_IMAGE_SIZE` (never enlarged)."""
    with Image.open(io.BytesIO(data)) as image:
        copy = image.convert("RGB")
    copy.thumbnail((REVIEW_IMAGE_SIZE, REVIEW_IMAGE_SIZE), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    copy.save(buffer, format="WEBP", quality=REVIEW_IMAGE_QUALITY)
    uri = "data:image/webp;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
    if len(uri) > FIELD_CHARACTERS:
        raise ConfigurationError(
            f"A review image is {len(uri):,} characters, over Argilla's {FIELD_CHARACTERS:,}."
        )
    return uri


def _qa_markdown(row: dict[str, Any]) -> str:
    pairs = [pair for pair in row.get("qa_pairs") or [] if pair.get("valid", True)]
    return "\n".join(f"- {pair['question']} ({pair['answer']})" for pair in pairs) or "none"


def _score_columns(row: dict[str, Any]) -> list[str]:
    return [column for column in SCORE_COLUMNS if row.get(column) is not None]


def _scores_markdown(row: dict[str, Any], a: int, b: int) -> str:
    lines = ["| judge | image A | image B |", "|---|---|---|"]
    for column in _score_columns(row):
        lines.append(
            f"| {column.removesuffix('_scores')} | {row[column][a]:.2f} | {row[column][b]:.2f} |"
        )
    return "\n".join(lines)


def _finite(value: float) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def to_record(row: dict[str, Any], *, seed: int, show_ai_choice: bool = False) -> Any:
    """One Argilla record of a preference row (`jpg_0` chosen, `jpg_1` rejected). Blind
    unless `show_ai_choice`: then the AI's choice is a suggestion and the scores a field."""
    rg = _argilla()
    record_id = row["prompt_id"]
    rejected_first = shows_rejected_first(record_id, seed)
    images = (row["jpg_1"], row["jpg_0"]) if rejected_first else (row["jpg_0"], row["jpg_1"])
    indices = (
        (row["rejected_index"], row["chosen_index"])
        if rejected_first
        else (row["chosen_index"], row["rejected_index"])
    )
    metadata: dict[str, Any] = {
        "category": row.get("category") or "none",
        "image_a_is": "rejected" if rejected_first else "chosen",
        "ai_choice_shown": "yes" if show_ai_choice else "no",
        "score_margin": _finite(row["score_margin"]),
    }
    for column in _score_columns(row):
        name = column.removesuffix("_scores")
        metadata[f"{name}_a"] = _finite(row[column][indices[0]])
        metadata[f"{name}_b"] = _finite(row[column][indices[1]])
    suggestion = rg.Suggestion(
        question_name=PREFERENCE_QUESTION,
        value="image_b" if rejected_first else "image_a",
        agent="agfsync weighted AI judges",
    )
    return rg.Record(
        id=record_id,
        fields={
            "prompt": row["caption"],
            "image_a": review_image(images[0]),
            "image_b": review_image(images[1]),
            "qa_pairs": _qa_markdown(row),
            "scores": _scores_markdown(row, *indices) if show_ai_choice else HIDDEN_SCORES,
        },
        metadata={key: value for key, value in metadata.items() if value is not None},
        suggestions=[suggestion] if show_ai_choice else [],
    )


HIDDEN_SCORES = "Hidden for a blind review (pushed without --show-ai-choice)."


def _record_bytes(record: Any) -> int:
    return sum(len(str(value)) for value in record.fields.to_dict().values()) + 2_000


def request_budget() -> int:
    """Most bytes of record data per request: `AGFSYNC_ARGILLA_REQUEST_BYTES` if set, else
    `REQUEST_BYTES`."""
    value = AGFSYNC_ARGILLA_REQUEST_BYTES.get()
    if value is None:
        return REQUEST_BYTES
    if not value.isdigit() or int(value) == 0:
        raise ConfigurationError(
            f"{AGFSYNC_ARGILLA_REQUEST_BYTES.name}={value!r}: expected a positive number of bytes."
        )
    return int(value)


def request_batches(records: Iterator[Any], budget: int = REQUEST_BYTES) -> Iterator[list[Any]]:
    """Records grouped, in order, into requests of at most `budget` bytes. A record
    larger than `budget` on its own is sent alone, in a request of its own."""
    batch: list[Any] = []
    size = 0
    for record in records:
        record_size = _record_bytes(record)
        if batch and size + record_size > budget:
            yield batch
            batch, size = [], 0
        batch.append(record)
        size += record_size
    if batch:
        yield batch


def resolve_source(source: str) -> Path:
    """A local run/dataset folder, or a Hub dataset repo downloaded to agfsync's cache:
    `hub-datasets/<repo id>/<commit>/`, plain files (the Hub cache's snapshots are
    symbolic links out of their folder, which a dataset folder may not have)."""
    if Path(source).is_dir():
        return Path(source)
    from huggingface_hub import HfApi, snapshot_download

    from agfsync.models import cache_dir

    try:
        commit = HfApi().dataset_info(source).sha or "main"
        folder = inside(cache_dir() / "hub-datasets", f"{source}/{commit}")
        return Path(
            snapshot_download(
                source,
                repo_type="dataset",
                revision=commit,
                local_dir=folder,
                allow_patterns=["data/*", "*.json", "*.yaml", "README.md"],
            )
        )
    except Exception as error:
        raise ConfigurationError(
            f"{source} is neither a dataset folder nor a Hub dataset repo that could be "
            f"downloaded ({type(error).__name__})."
        ) from error


@dataclass(frozen=True)
class PushResult:
    dataset: str
    pushed: int
    created: bool


def push_for_review(
    source: str,
    target: ArgillaTarget,
    *,
    sample: int | None = None,
    by: str | None = None,
    seed: int = 0,
    show_ai_choice: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> PushResult:
    """Create (if needed) the Argilla dataset and log the sampled pairs into it (blind
    unless `show_ai_choice`)."""
    rg = _argilla()
    budget = request_budget()
    dataset, _ = load_run(resolve_source(source))
    if by is not None and by not in dataset.column_names:
        raise ConfigurationError(f"--by {by!r} is not a column; columns: {dataset.column_names}.")
    plain = dataset.select_columns([c for c in dataset.column_names if c not in IMAGE_COLUMNS])
    indices = sample_rows(list(plain), sample, by=by, seed=seed)
    rows = dataset.select(indices)
    with _talking_to(target, "push"):
        client = _client(target)
        existing = client.datasets(name=target.dataset, workspace=target.workspace)
        created = existing is None
        if created:
            workspace = target.workspace or _default_workspace(client)
            existing = rg.Dataset(
                name=target.dataset,
                workspace=workspace,
                settings=review_settings(source),
                client=client,
            ).create()
        else:
            differences = settings_differences(existing.settings, review_settings())
            if differences:
                raise ConfigurationError(
                    f"Argilla dataset {target.dataset!r} exists with settings that differ "
                    f"from agfsync's: {'; '.join(differences)}. Push to a new --dataset name, "
                    "or delete that dataset first."
                )
            recorded = recorded_source(existing.settings.guidelines)
            if recorded not in (None, source_reference(source)):
                raise ConfigurationError(
                    f"Argilla dataset {target.dataset!r} holds pairs pushed from {recorded}, "
                    f"and `pull` reads them back from there; push {source} to a new "
                    "--dataset name."
                )
        done = 0
        records = (to_record(row, seed=seed, show_ai_choice=show_ai_choice) for row in rows)
        for chunk in request_batches(records, budget):
            try:
                existing.records.log(chunk, batch_size=len(chunk))
            except Exception as error:
                raise ConfigurationError(
                    f"Logging stopped after {done} of {len(rows)} records "
                    f"({type(error).__name__}: {str(error).splitlines()[0]}). Run the same "
                    "command again: records are updated by id, so it finishes without duplicates."
                ) from error
            done += len(chunk)
            if progress is not None:
                progress(done, len(rows))
    return PushResult(dataset=target.dataset, pushed=len(rows), created=created)


def _default_workspace(client: Any) -> str:
    workspaces = list(client.workspaces)
    if len(workspaces) != 1:
        names = ", ".join(sorted(w.name for w in workspaces)) or "none"
        raise ConfigurationError(f"Choose a --workspace (this server has: {names}).")
    return str(workspaces[0].name)


@dataclass(frozen=True)
class ReviewReport:
    records: int
    reviewed: int
    """Records with at least one submitted answer."""
    resolved: int
    """Records whose answers resolved to one image (these carry `label_source="human"`)."""
    overall: Agreement
    by_category: dict[str, Agreement]
    by_margin: dict[str, Agreement]
    unknown_records: list[str] = field(default_factory=list)
    """Record ids that are not prompt ids of the source (left out, listed here)."""
    not_blind: int = 0
    """Answered records whose reviewers were shown the AI's choice: their verdicts are
    applied to the dataset but left out of the agreement."""


def pull_reviews(
    name: str,
    target: ArgillaTarget,
    *,
    output_dir: Path,
    source: str | None = None,
    seed: int = 0,
    overwrite: bool = False,
) -> ReviewReport:
    """Write the reviewed dataset to `output_dir` and return the agreement report.

    `source` is the dataset that was pushed; by default the one the push recorded in the
    Argilla dataset's guidelines. `seed` must be the one the records were pushed with;
    it is checked against the order recorded in each record's `image_a_is` metadata.
    `output_dir` follows `agfsync.ownership`'s rule, checked before anything is asked.
    """
    given = [Path(source)] if source and Path(source).exists() else []
    check_dataset_folder(output_dir, flag="--output", overwrite=overwrite, protected=given)
    with _talking_to(target, "pull"):
        client = _client(target)
        remote = client.datasets(name=name, workspace=target.workspace)
        if remote is None:
            raise ConfigurationError(f"No Argilla dataset {name!r} on {_url(target)}.")
        differences = settings_differences(remote.settings, review_settings())
        if differences:
            raise ConfigurationError(
                f"Argilla dataset {name!r} was not made by `agfsync argilla push`: "
                + "; ".join(differences)
            )
        source = source or recorded_source(remote.settings.guidelines)
        if source is None:
            raise ConfigurationError(
                f"Argilla dataset {name!r} does not record what was pushed into it; pass "
                "--source with the dataset folder or Hub repo that was pushed."
            )
        folder = resolve_source(source)
        dataset, run = load_run(folder)
        answers: dict[str, list[str]] = {}
        orders: dict[str, bool] = {}
        shown: set[str] = set()
        for record in remote.records(with_responses=True, with_suggestions=False):
            if record.metadata.get("ai_choice_shown") != "no":
                shown.add(record.id)
            responses = record.responses[PREFERENCE_QUESTION] if record.responses else []
            answers[record.id] = [
                response.value
                for response in responses
                if str(getattr(response.status, "value", response.status)) == "submitted"
            ]
            orders[record.id] = record.metadata.get("image_a_is") == "rejected"
    row_index = {prompt_id: index for index, prompt_id in enumerate(dataset["prompt_id"])}
    for record_id, rejected_first in orders.items():
        if record_id in row_index and rejected_first != shows_rejected_first(record_id, seed):
            raise ConfigurationError(
                f"Record {record_id!r} was pushed with another --seed than {seed}; pull with "
                "the seed used for the push."
            )
    verdicts = {record_id: resolve_votes(votes) for record_id, votes in answers.items()}

    def review(row: dict[str, Any]) -> dict[str, Any]:
        verdict = verdicts.get(row["prompt_id"], resolve_votes([]))
        reviewed = apply_verdict(row, verdict, orders.get(row["prompt_id"], False))
        return reviewed | {"ai_choice_shown": row["prompt_id"] in shown}

    reviewed = dataset.map(review, features=_reviewed_features(dataset.features))
    report = _report(
        dataset, verdicts, orders, shown=shown, unknown=sorted(set(orders) - set(row_index))
    )

    write_dataset_folder(
        reviewed,
        output_dir,
        card=card_writer(
            reviewed, run, load_path=os.fspath(output_dir), extra=review_section(name, report)
        ),
        extra_files={"pipeline.yaml": folder / "pipeline.yaml"},
        flag="--output",
        overwrite=overwrite,
        protected=[folder],
    )
    return report


def _reviewed_features(features: datasets.Features) -> datasets.Features:
    reviewed = features.copy()
    reviewed["label_source"] = datasets.Value("string")
    reviewed["human_votes"] = {label: datasets.Value("int64") for label in PREFERENCE_LABELS}
    reviewed["ai_choice_shown"] = datasets.Value("bool")
    return reviewed


def _report(
    dataset: datasets.Dataset,
    verdicts: dict[str, Any],
    orders: dict[str, bool],
    *,
    shown: set[str],
    unknown: list[str],
) -> ReviewReport:
    """Agreement between the AI and the reviewers, on blind records only (where the
    reviewers saw the AI's choice, agreeing with it says little)."""
    rows = {
        row["prompt_id"]: row
        for row in dataset.select_columns(["prompt_id", "category", "score_margin"])
    }
    judged: list[tuple[str, Side, Side]] = []
    for record_id, verdict in verdicts.items():
        if record_id in rows and verdict.preferred is not None and record_id not in shown:
            judged.append((record_id, ai_side(orders[record_id]), verdict.preferred))
    edges = margin_buckets([rows[record_id]["score_margin"] for record_id, _, _ in judged])
    by_category: dict[str, list[tuple[Side, Side]]] = defaultdict(list)
    by_margin: dict[str, list[tuple[Side, Side]]] = defaultdict(list)
    # In margin order, so the report's buckets read from the smallest margins up.
    for record_id, ai, human in sorted(judged, key=lambda item: rows[item[0]]["score_margin"]):
        by_category[rows[record_id]["category"] or "none"].append((ai, human))
        by_margin[bucket_label(rows[record_id]["score_margin"], edges)].append((ai, human))
    return ReviewReport(
        records=len(verdicts),
        reviewed=sum(verdict.num_reviewers > 0 for verdict in verdicts.values()),
        resolved=len(judged),
        overall=agreement([(ai, human) for _, ai, human in judged]),
        by_category={key: agreement(pairs) for key, pairs in sorted(by_category.items())},
        by_margin={key: agreement(pairs) for key, pairs in by_margin.items()},
        unknown_records=unknown,
        not_blind=sum(verdicts[record].num_reviewers > 0 for record in shown & set(verdicts)),
    )


def agreement_rows(report: ReviewReport) -> list[tuple[str, str, Agreement]]:
    """(group, value, agreement) lines of the report, overall first."""
    lines = [("overall", "all", report.overall)]
    lines += [("category", key, value) for key, value in report.by_category.items()]
    lines += [("score margin", key, value) for key, value in report.by_margin.items()]
    return lines


def review_section(name: str, report: ReviewReport) -> str:
    """The card section that reports the human review."""
    table = ["| group | value | pairs | agreement | Cohen's kappa |", "|---|---|---|---|---|"]
    for group, key, value in agreement_rows(report):
        table.append(f"| {group} | {key} | {value.count} | {value.raw:.3f} | {value.kappa:.3f} |")
    return (
        "## Human review\n\n"
        f"Reviewed in Argilla (dataset `{name}`): {report.records} pairs pushed, "
        f"{report.reviewed} answered, {report.resolved} resolved by majority "
        '(`label_source = "human"`: the reviewers\' verdict overrides the AI label; '
        "`human_votes` has every answer; `ai_choice_shown` marks records whose reviewers "
        "were shown the AI's choice, left out of this agreement and of `agfsync calibrate`). "
        "Agreement between the AI's choice and the reviewers:\n\n" + "\n".join(table) + "\n"
    )
