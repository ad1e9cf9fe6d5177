"""Where models come from: Hub ids, local folders, or built-in tiny models.

A model reference is a string. `tiny:<name>` names one of the tiny random models
of `agfsync.testing.tiny_models`, built on first use into agfsync's cache (the
colon cannot appear in a Hub id, so these never shadow a real repository);
anything else is passed unchanged to `from_pretrained`, which accepts both Hub
ids and local folders.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch

from agfsync.errors import ConfigurationError

TINY_MODEL_PREFIX = "tiny:"
TINY_MODELS_VERSION = "v1"
"""Bumped whenever a tiny builder changes, so cached copies are rebuilt."""


def cache_dir() -> Path:
    """agfsync's cache folder: `$AGFSYNC_CACHE_DIR`, else `~/.cache/agfsync`."""
    configured = os.environ.get("AGFSYNC_CACHE_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "agfsync"


def resolve_model(reference: str) -> str:
    """Turn a model reference into something `from_pretrained` can load."""
    if not reference.startswith(TINY_MODEL_PREFIX):
        return reference
    from agfsync.testing.tiny_models import TINY_MODEL_BUILDERS

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
    """`None` picks the first CUDA device when there is one, else the CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


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
