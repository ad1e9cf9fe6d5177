"""Where models come from: Hub ids, local folders, or built-in tiny models.

A model reference is a string. `tiny:<name>` names one of the tiny random models
of `agfsync.tiny_models`, built on first use into agfsync's cache (the
colon cannot appear in a Hub id, so these never shadow a real repository);
anything else is passed unchanged to `from_pretrained`, which accepts both Hub
ids and local folders.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO

import torch

from agfsync.environment import AGFSYNC_CACHE_DIR
from agfsync.errors import ConfigurationError
from agfsync.model_facts import TINY_MODEL_PREFIX

TINY_MODELS_VERSION = "v2"
"""Bumped whenever a tiny builder changes, so cached copies are rebuilt."""


def cache_dir() -> Path:
    """agfsync's cache folder: `$AGFSYNC_CACHE_DIR`, else `~/.cache/agfsync`."""
    configured = AGFSYNC_CACHE_DIR.get()
    return Path(configured) if configured else Path.home() / ".cache" / "agfsync"


def resolve_model(reference: str) -> str:
    """Turn a model reference into something `from_pretrained` can load."""
    if not reference.startswith(TINY_MODEL_PREFIX):
        return reference
    from agfsync.tiny_models import TINY_MODEL_BUILDERS

    name = reference[len(TINY_MODEL_PREFIX) :]
    if name not in TINY_MODEL_BUILDERS:
        raise ConfigurationError(
            f"Unknown tiny model {reference!r}; available: "
            f"{', '.join(TINY_MODEL_PREFIX + n for n in sorted(TINY_MODEL_BUILDERS))}."
        )
    target = cache_dir() / "tiny-models" / f"{name}-{TINY_MODELS_VERSION}"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        # Build beside the target and rename, so concurrent step processes never
        # see a half-written folder; the loser of a race discards its copy.
        staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
        TINY_MODEL_BUILDERS[name](staging)
        try:
            staging.rename(target)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
    return str(target)


def resolve_device(device: str | None) -> torch.device:
    """`None` picks a CUDA device when there is one (see `claim_device`), else the CPU."""
    if device is not None:
        return torch.device(device)
    if not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", claim_device(torch.cuda.device_count()))


def release_cached_memory(device: torch.device) -> None:
    """Give the allocator's cached blocks back after an out-of-memory error, so that the
    retry with a smaller batch starts from the memory the model really holds."""
    if device.type == "cuda":
        torch.cuda.empty_cache()


def free_models(device: str | torch.device | None) -> None:
    """After the last reference to a model was dropped (a step's `unload()`): collect it
    now and give its device memory back, so the next model of the process fits."""
    import gc

    gc.collect()
    release_cached_memory(
        resolve_device(device) if not isinstance(device, torch.device) else device
    )


_held_device_locks: list[IO[bytes]] = []
"""Open lock files of the devices this process claimed; closing them releases the claim."""


def claim_device(count: int, lock_dir: Path | None = None) -> int:
    """Index of a device (of `count`) that no other process on this machine claimed.

    Each replica of a GPU step (distilabel `StepResources(replicas=k, gpus=1)`) loads
    its model in its own process; claiming spreads them over the GPUs instead of
    stacking them all on GPU 0. A claim is an exclusive lock on a file, released when
    the process exits; when every device is claimed, devices are shared round-robin.
    """
    directory = lock_dir or cache_dir() / "device-locks"
    directory.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        handle = (directory / f"device-{index}.lock").open("wb")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        _held_device_locks.append(handle)
        return index
    return os.getpid() % count


_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """`auto` means fp16 on CUDA (as the paper generated images) and fp32 elsewhere."""
    if dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    aliases = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
    name = aliases.get(dtype, dtype)
    if name not in _DTYPES:
        raise ConfigurationError(
            f"Unknown dtype {dtype!r}; use one of auto, float32, float16, bfloat16."
        )
    return _DTYPES[name]
