"""Checks that run before the first paid API call, model load or long job.

A run that is certain to fail should fail in its first second, naming the cause and
what to do instead, not after it has spent money on LLM calls or hours on a GPU.
`agfsync generate`, `train` and `evaluate` call these before any work:

- every model the run will load is available: a `tiny:` model, a local folder, a copy
  in the Hugging Face cache, or (unless `HF_HUB_OFFLINE` is set) a repository the Hub
  says exists and this user may download;
- every API key the run needs is set (`agfsync.llm.providers`), and a run that uploads
  to the Hub has a token, is not offline and reaches the Hub (`check_hub_upload`);
- every folder the run writes accepts a new file (`check_writable`): the output, the
  distilabel cache, the image and latent caches;
- there is room on disk for what the run will write (`check_disk`, given `agfsync
  estimate`'s figures for `generate`, and the rough bounds of `train` and `evaluate`).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from agfsync.environment import HF_ENDPOINT, HF_HUB_OFFLINE, hub_token
from agfsync.errors import ConfigurationError
from agfsync.models import TINY_MODEL_PREFIX
from agfsync.ownership import check_writable

HUB_TIMEOUT_SECONDS = 10.0
"""How long the check waits for the Hub's answer about one model."""
PNG_BYTES_PER_PIXEL = 1.5
"""Rough size of a rendered PNG per pixel, from `agfsync/data/estimate.yaml`'s measured
candidates (400 kB at 512 px, 1.5 MB at 1024 px): what `train`'s validation images
and `evaluate`'s images are budgeted at."""


@dataclass(frozen=True)
class ModelNeed:
    """A model a run will load, where it is configured, and what to use instead."""

    reference: str
    """Hub id, local folder or `tiny:<name>`."""
    used_by: str
    """Where it is set, e.g. `generate_images.model` or `--vqa-model`."""
    alternative: str = "pass a local folder"
    """What the user can do instead when the model is not available."""


def _hub_offline() -> bool:
    return (HF_HUB_OFFLINE.get() or "").strip().lower() in ("1", "true", "yes", "on")


def check_model(need: ModelNeed) -> None:
    """Raise ConfigurationError naming the model, its option and the alternative when
    the model cannot be loaded on this machine."""
    reference = need.reference
    if reference.startswith(TINY_MODEL_PREFIX):
        from agfsync.tiny_models import TINY_MODEL_BUILDERS

        if reference.removeprefix(TINY_MODEL_PREFIX) not in TINY_MODEL_BUILDERS:
            raise ConfigurationError(
                f"Unknown tiny model {reference!r} ({need.used_by}); available: "
                + ", ".join(TINY_MODEL_PREFIX + name for name in sorted(TINY_MODEL_BUILDERS))
                + "."
            )
        return
    path = Path(reference).expanduser()
    if path.is_dir():
        return
    if path.exists() or reference.startswith(("/", ".", "~")) or reference.count("/") > 1:
        raise ConfigurationError(
            f"Model folder {reference} ({need.used_by}) does not exist or is not a folder; "
            f"pass an existing folder or a Hub id."
        )
    _check_hub_model(need)


def _check_hub_model(need: ModelNeed) -> None:
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    reference = need.reference
    try:
        snapshot_download(reference, local_files_only=True)
        return
    except HFValidationError as error:
        raise ConfigurationError(
            f"{reference!r} ({need.used_by}) is neither a folder nor a valid Hub id "
            f"({error}); {need.alternative}."
        ) from None
    except (LocalEntryNotFoundError, OSError, ValueError):
        pass
    if _hub_offline():
        raise ConfigurationError(
            f"Model {reference} ({need.used_by}) is not in the Hugging Face cache and "
            f"HF_HUB_OFFLINE is set; download it first (hf download {reference}), or "
            f"{need.alternative}."
        )
    try:
        HfApi().model_info(reference, timeout=HUB_TIMEOUT_SECONDS)
    except GatedRepoError:
        raise ConfigurationError(
            f"Model {reference} ({need.used_by}) is gated: accept its terms on the Hub and "
            f"set HF_TOKEN, or {need.alternative}."
        ) from None
    except RepositoryNotFoundError:
        raise ConfigurationError(
            f"No model {reference} on the Hub ({need.used_by}); check the name (a private "
            f"repository needs HF_TOKEN), or {need.alternative}."
        ) from None
    except Exception as error:  # network, DNS, proxy, TLS: the download would fail too
        raise _unreachable(
            f"Model {reference} ({need.used_by}) is not in the Hugging Face cache",
            error,
            f"download it where the Hub is reachable, or {need.alternative}",
        ) from None


def _unreachable(what: str, error: BaseException, advice: str) -> ConfigurationError:
    """The one message for "the Hub did not answer": the model check's and the upload's."""
    endpoint = HF_ENDPOINT.get("https://huggingface.co")
    return ConfigurationError(
        f"{what} and the Hub ({endpoint}) cannot be reached ({type(error).__name__}); {advice}."
    )


def check_hub_upload(token: str | None, *, repo: str, flag: str, alternative: str) -> None:
    """Raise ConfigurationError, before any work, when an upload to the Hub at the end of
    the run is certain to fail: no token (`agfsync.environment.hub_token`: what the
    command was given, else HF_TOKEN or the login `hf auth login` stored), HF_HUB_OFFLINE
    set, the Hub not answering, or the Hub refusing the token (or knowing it as
    read-only)."""
    from huggingface_hub import constants
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

    token = hub_token(token)
    if not token:
        raise ConfigurationError(
            f"{flag} uploads to {repo} but there is no Hugging Face token: set HF_TOKEN, pass "
            f"--hub-token or run `hf auth login` (write access); or {alternative}."
        )
    if _hub_offline():
        raise ConfigurationError(
            f"{flag} uploads to {repo} but HF_HUB_OFFLINE is set; unset it, or {alternative}."
        )
    try:
        response = get_session().get(
            f"{constants.ENDPOINT}/api/whoami-v2",
            headers=build_hf_headers(token=token),
            timeout=HUB_TIMEOUT_SECONDS,
        )
        hf_raise_for_status(response)
        account = response.json()
    except HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else None
        if status == 401:
            raise ConfigurationError(
                f"The Hub rejected the Hugging Face token that {flag} would upload to {repo} "
                f"with (HF_TOKEN, --hub-token or `hf auth login`); set a valid token with "
                f"write access, or {alternative}."
            ) from None
        raise _unreachable(f"{flag} uploads to {repo}", error, alternative) from None
    except Exception as error:  # network, DNS, proxy, TLS, offline: the upload would fail too
        raise _unreachable(f"{flag} uploads to {repo}", error, alternative) from None
    role = ((account or {}).get("auth") or {}).get("accessToken", {}).get("role")
    if role == "read":
        raise ConfigurationError(
            f"{flag} uploads to {repo} but the Hugging Face token is read-only; use a token "
            f"with write access, or {alternative}."
        )


def check_distilabel_cache(folder: Path) -> None:
    """distilabel's cache folder (where `generate` keeps its steps' data and its run lock)
    accepts files."""
    check_writable(
        folder,
        what="the distilabel cache (DISTILABEL_CACHE_DIR)",
        fix="set DISTILABEL_CACHE_DIR to a folder you can write to",
    )


def check_models(needs: Iterable[ModelNeed]) -> None:
    """`check_model` for each distinct model."""
    seen: set[str] = set()
    for need in needs:
        if need.reference not in seen:
            seen.add(need.reference)
            check_model(need)


def check_disk(needs: Mapping[Path, int], *, hint: str) -> None:
    """Raise ConfigurationError when a file system lacks room for what will be written
    to it. `needs` maps a folder (existing or not) to the bytes written under it;
    folders on one file system add up."""
    by_device: dict[int, tuple[Path, int]] = {}
    for folder, size in needs.items():
        existing = folder.resolve()
        while not existing.exists():
            existing = existing.parent
        device = existing.stat().st_dev
        known, total = by_device.get(device, (existing, 0))
        by_device[device] = (known, total + size)
    for folder, size in by_device.values():
        free = shutil.disk_usage(folder).free
        if size > free:
            raise ConfigurationError(
                f"Not enough disk space: this run writes about {_size(size)} on the file "
                f"system of {folder}, which has {_size(free)} free; {hint}."
            )


def png_bytes(width: int, height: int, images: int = 1) -> int:
    """Rough bytes of `images` rendered PNGs of `width` x `height` (`PNG_BYTES_PER_PIXEL`)."""
    return int(width * height * PNG_BYTES_PER_PIXEL * images)


def _size(size: int) -> str:
    return f"{size / 1e9:,.2f} GB" if size >= 1e9 else f"{size / 1e6:,.1f} MB"
