"""Publishing a finished run to the Hugging Face Hub as a dataset repository.

The repo gets exactly what `--dry-run` writes to a folder: the parquet shards with
embedded images, the card (README.md) with its figures and sample images under
`assets/`, `pipeline.yaml` and `run.json`. Everything goes up in ONE commit, built
against the repo's current head: a re-publish replaces this split's shards and the
card's assets (stale files are deleted in the same commit), keeps other splits,
and a failed publish leaves the repo as it was. A repo that holds files and whose card
does not carry the `agfsync` tag was not made by agfsync: publishing to it is refused,
or with --overwrite replaces only the paths agfsync writes and deletes nothing.
"""

from __future__ import annotations

import io
import logging
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import datasets
import httpx2
import pyarrow.parquet as pq
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    HfApi,
)
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError
from PIL import Image, UnidentifiedImageError

from agfsync.dataset.card import ASSETS_DIR, card_writer
from agfsync.dataset.folder import (
    IMAGE_COLUMNS,
    check_dataset_folder,
    listed_shards,
    write_dataset_folder,
)
from agfsync.dataset.run_info import RunInfo
from agfsync.environment import HF_ENDPOINT, hub_token
from agfsync.errors import AgfsyncError, ConfigurationError, PublishError
from agfsync.hub import card_text, check_repo_is_ours
from agfsync.ownership import MARKER, FolderKind
from agfsync.retry import RETRYABLE_STATUS_CODES, Backoff, call_with_retries, http_status
from agfsync.safe_paths import inside
from agfsync.step_names import GENERATE_IMAGES_STEP, IMAGES_ARTIFACT

logger = logging.getLogger(__name__)

HUB_TIMEOUT_SECONDS = 60.0
"""How long a request to the Hub may wait for an answer before it counts as failed."""
PUBLISHED_RUN_FILES = ("pipeline.yaml",)
"""Files of the run folder uploaded as they are (besides data, card and run.json).
`pipeline.log` stays local: it holds machine paths and is for debugging."""
SHARD_PATTERN = re.compile(r"data/(?P<split>[A-Za-z0-9_.]+)-\d{5}-of-\d{5}-[0-9a-f]+\.parquet")


@dataclass(frozen=True)
class PublishResult:
    repo_id: str
    files: list[str]
    """Paths written (dry run) or uploaded, relative to the repo root."""
    deleted: list[str]
    """Stale files removed from the repo by the same commit."""
    commit_url: str | None = None


def load_run(run_dir: Path) -> tuple[datasets.Dataset, RunInfo]:
    """The preference rows and run record of an `agfsync generate` output folder,
    checked: at least one pair, and every image present and decodable."""
    run = RunInfo.load(run_dir)
    shards = listed_shards(run_dir)
    if sum(pq.read_metadata(path).num_rows for path in shards) == 0:
        reasons = sorted({item.reason for item in run.unpaired})
        raise ConfigurationError(
            f"{run_dir} holds no preference pairs ({len(run.unpaired)} prompts without a "
            f"pair: {'; '.join(reasons) or 'no prompts'}); nothing to publish."
        )
    dataset = datasets.load_dataset(
        "parquet", data_files=[os.fspath(path) for path in shards], split="train"
    )
    _check_images(dataset)
    return dataset, run


def _check_images(dataset: datasets.Dataset) -> None:
    for row in dataset.select_columns(["prompt_id", *IMAGE_COLUMNS]):
        for column in IMAGE_COLUMNS:
            data = row[column]
            try:
                if not data:
                    raise UnidentifiedImageError("no image bytes")
                Image.open(io.BytesIO(data)).verify()
            except (UnidentifiedImageError, OSError, SyntaxError) as error:
                raise ConfigurationError(
                    f"Image `{column}` of prompt {row['prompt_id']!r} is missing or "
                    f"unreadable ({error}); regenerate the dataset (`agfsync generate` "
                    "with the same arguments reuses finished work). Nothing was published."
                ) from error


def _check_candidates(dataset: datasets.Dataset, artifacts: Path) -> None:
    """Every candidate image the rows list is a file under `artifacts/`."""
    missing = [
        path
        for paths in dataset.select_columns(["image_paths"])["image_paths"]
        for path in paths
        if not inside(artifacts, path).is_file()
    ]
    if missing:
        raise ConfigurationError(
            f"--include-artifacts: {len(missing)} candidate images are missing from "
            f"{artifacts} (first: {missing[0]}); regenerate the dataset (`agfsync generate` "
            "with the same arguments reuses finished work) or publish without "
            "--include-artifacts."
        )


def stage_publication(
    run_dir: Path,
    folder: Path,
    *,
    repo_id: str,
    split: str = "train",
    other_splits: dict[str, list[str]] | None = None,
    include_artifacts: bool = False,
    overwrite: bool = False,
) -> list[str]:
    """Write the files to upload into `folder` and return their repo paths.

    `other_splits` are shards of other splits already in the repo; the card's config
    lists them so that publishing one split does not hide the others. `folder` is an
    agfsync publication folder (`agfsync.ownership`): a dry run replaces only its own.
    """
    if not re.fullmatch(r"[A-Za-z0-9_.]+", split):
        raise ConfigurationError(f"--split {split!r}: use letters, digits, '_' and '.' only.")
    check_dataset_folder(
        folder,
        flag="--dry-run",
        overwrite=overwrite,
        kind=FolderKind.PUBLICATION,
        protected=[run_dir],
    )
    dataset, run = load_run(run_dir)
    if include_artifacts:
        _check_candidates(dataset, run_dir / "artifacts")

    write_dataset_folder(
        dataset,
        folder,
        card=card_writer(dataset, run, load_path=repo_id, split=split, other_splits=other_splits),
        extra_files={name: run_dir / name for name in PUBLISHED_RUN_FILES},
        artifacts_dir=run_dir / "artifacts" if include_artifacts else None,
        split=split,
        flag="--dry-run",
        overwrite=overwrite,
        kind=FolderKind.PUBLICATION,
        protected=[run_dir],
    )
    return sorted(
        path.relative_to(folder).as_posix()
        for path in folder.rglob("*")
        if path.is_file() and path.name != MARKER
    )


def publish_run(
    run_dir: Path,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    split: str = "train",
    include_artifacts: bool = False,
    dry_run_dir: Path | None = None,
    commit_message: str | None = None,
    retries: int = 3,
    overwrite: bool = False,
    timeout: float = HUB_TIMEOUT_SECONDS,
) -> PublishResult:
    """Publish `run_dir` to the dataset repo `repo_id` (or stage it in `dry_run_dir`).
    Every request to the Hub gives up after `timeout` seconds without an answer."""
    if dry_run_dir is not None:
        files = stage_publication(
            run_dir,
            dry_run_dir,
            repo_id=repo_id,
            split=split,
            include_artifacts=include_artifacts,
            overwrite=overwrite,
        )
        return PublishResult(repo_id=repo_id, files=files, deleted=[])
    token = hub_token(token)
    if not token:
        raise ConfigurationError(
            "No Hugging Face token: set HF_TOKEN, pass --hub-token or run `hf auth login` (a "
            "token with write access to the repo)."
        )
    _use_timeout(timeout)
    return _with_retries(
        lambda: _upload(
            run_dir,
            repo_id,
            token=token,
            private=private,
            split=split,
            include_artifacts=include_artifacts,
            commit_message=commit_message or f"Publish agfsync run ({split} split)",
            overwrite=overwrite,
        ),
        repo_id=repo_id,
        retries=retries,
        timeout=timeout,
    )


ASSET_PATTERN = re.compile(
    rf"{ASSETS_DIR}/(score_distributions|score_margins|categories)\.png"
    rf"|{ASSETS_DIR}/samples/pair-\d+-(chosen|rejected)\.(png|webp|jpg|jpeg)"
)
"""The card's figures and sample images, as `write_card_assets` names them."""
ARTIFACT_PATTERN = re.compile(
    rf"artifacts/{GENERATE_IMAGES_STEP}/{IMAGES_ARTIFACT}/(metadata\.json|[^/]+/\d+\.(png|webp|jpg|jpeg))"
)
"""The candidate images `--include-artifacts` uploads, as the image step names them."""


def _written_by_agfsync(path: str, split: str, include_artifacts: bool, card: str) -> bool:
    """Whether a file of a repo agfsync made is one agfsync writes there: named as agfsync
    names it (never a whole folder) and, for shards and card figures, listed on the card
    agfsync wrote last (`card`, its text); candidates only with --include-artifacts."""
    shard = SHARD_PATTERN.fullmatch(path)
    listed = path in card
    return bool(
        (shard and shard["split"] == split and listed)
        or (ASSET_PATTERN.fullmatch(path) and listed)
        or (include_artifacts and ARTIFACT_PATTERN.fullmatch(path))
    )


class _BoundedTransport(httpx2.HTTPTransport):
    """Gives every request a timeout: huggingface_hub passes `timeout=None` (wait
    forever) explicitly, which overrides a client's own timeout."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        given = request.extensions.get("timeout") or {}
        request.extensions["timeout"] = {
            phase: given.get(phase)
            or (min(self.seconds, 10.0) if phase == "connect" else self.seconds)
            for phase in ("connect", "read", "write", "pool")
        }
        return super().handle_request(request)


def _use_timeout(seconds: float) -> None:
    """Bound every request huggingface_hub makes from now on in this process."""
    from huggingface_hub import set_client_factory
    from huggingface_hub.utils._http import hf_request_event_hook

    set_client_factory(
        lambda: httpx2.Client(
            transport=_BoundedTransport(seconds),
            event_hooks={"request": [hf_request_event_hook]},
            follow_redirects=True,
        )
    )


def _upload(
    run_dir: Path,
    repo_id: str,
    *,
    token: str,
    private: bool,
    split: str,
    include_artifacts: bool,
    commit_message: str,
    overwrite: bool = False,
) -> PublishResult:
    api = HfApi(token=token)
    try:
        info = api.dataset_info(repo_id)
    except RepositoryNotFoundError:
        info = None
    existing = [sibling.rfilename for sibling in (info.siblings if info else None) or []]
    card = (
        card_text(api, repo_id, repo_type="dataset", revision=info.sha)
        if info is not None and "README.md" in existing
        else ""
    )
    ours = check_repo_is_ours(
        api,
        repo_id,
        repo_type="dataset",
        existing=existing,
        revision=info.sha if info else None,
        overwrite=overwrite,
        replaced="publishing would replace its card and data",
        new_repo_flag="--repo-id",
        card=card,
    )
    if not ours:
        existing = []  # nothing of theirs is listed in our card, or deleted
    other_splits: dict[str, list[str]] = {}
    for path in existing:
        match = SHARD_PATTERN.fullmatch(path)
        if match and match["split"] != split:
            other_splits.setdefault(match["split"], []).append(path)
    with tempfile.TemporaryDirectory(prefix="agfsync-publish-") as tmp:
        staging = Path(tmp) / "repo"
        try:
            files = stage_publication(
                run_dir,
                staging,
                repo_id=repo_id,
                split=split,
                other_splits=other_splits,
                include_artifacts=include_artifacts,
            )
        except ConfigurationError as error:
            where = (
                f" (files are staged under {tempfile.gettempdir()}; set TMPDIR to move them)"
                if isinstance(error.__cause__, OSError)
                else ""
            )
            raise ConfigurationError(
                f"{error} Nothing was uploaded: {repo_id} is unchanged{where}."
            ) from error
        if info is None:
            # Created only once there is something to commit, so a failed staging
            # leaves no empty repository behind.
            api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
            info = api.dataset_info(repo_id)
        # Deleted: what agfsync wrote there before and writes no more, by its exact names
        # and, for shards and figures, listed on the card agfsync wrote (a file someone
        # else added, even under a name like ours, is kept).
        stale = [
            path
            for path in existing
            if path not in files and _written_by_agfsync(path, split, include_artifacts, card)
        ]
        operations: list[CommitOperationAdd | CommitOperationDelete] = [
            CommitOperationAdd(path_in_repo=path, path_or_fileobj=staging / path) for path in files
        ]
        operations += [CommitOperationDelete(path_in_repo=path) for path in stale]
        commit = api.create_commit(
            repo_id,
            operations=list(operations),
            commit_message=commit_message,
            repo_type="dataset",
            parent_commit=info.sha,
        )
    return PublishResult(
        repo_id=repo_id, files=files, deleted=stale, commit_url=str(commit.commit_url)
    )


def _with_retries(
    upload: Callable[[], PublishResult], *, repo_id: str, retries: int, timeout: float
) -> PublishResult:
    """Retry transient failures (network, timeouts, 5xx, 429) by `agfsync.retry`'s rule,
    waiting at least what the Hub's `Retry-After` asks. Any failure leaves the repo
    unchanged: the commit is the last call, and atomic."""
    attempts = 1

    def report(error: BaseException, attempt: int, delay: float) -> None:
        nonlocal attempts
        attempts = attempt + 1
        logger.warning(
            f"Publishing to {repo_id}: {_reason(error, timeout)}; retry {attempt}/{retries} "
            f"in {delay:.1f} s."
        )

    try:
        return call_with_retries(
            upload, backoff=Backoff(retries=retries), is_transient=_transient, on_retry=report
        )
    except AgfsyncError:
        raise
    except ValueError as error:  # a 200 whose body is not the Hub's JSON
        endpoint = HF_ENDPOINT.get("https://huggingface.co")
        raise PublishError(
            f"Publishing to {repo_id} failed: {endpoint} answered with something that is "
            f"not the Hub's API ({type(error).__name__}: {error}). No commit was made. "
            "Check HF_ENDPOINT (and any proxy)."
        ) from error
    except (HfHubHTTPError, httpx2.HTTPError, OSError) as error:
        raise PublishError(
            f"Publishing to {repo_id} failed after {attempts} attempt(s) "
            f"({_reason(error, timeout)}). No commit was made: the repository is "
            "unchanged. Check the token's write access, the repo id and the network "
            "(HF_ENDPOINT), then run the same command again."
        ) from error


def _transient(error: BaseException) -> bool:
    """Network errors, timeouts, 429 and 5xx; not the other 4xx answers."""
    if not isinstance(error, HfHubHTTPError | httpx2.HTTPError | OSError):
        return False
    status = http_status(error)
    return status is None or status in RETRYABLE_STATUS_CODES or status >= 500


def _reason(error: BaseException, timeout: float) -> str:
    if isinstance(error, httpx2.TimeoutException):
        return f"no answer within {timeout:g} s"
    status = http_status(error)
    reason = f"HTTP {status}: {error}" if status else f"{type(error).__name__}: {error}"
    return reason.splitlines()[0]
