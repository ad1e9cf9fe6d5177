"""Shared fixtures: isolated caches and tiny models built once per session.

Caches are pointed at a session temp dir before anything runs, so the tests
never read or write `~/.cache` and never download.
"""

import os
from collections.abc import Iterator
from typing import Any

import pytest

from agfsync.models import resolve_model


@pytest.fixture(scope="session", autouse=True)
def isolated_caches(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    root = tmp_path_factory.mktemp("caches")
    overrides = {
        "DISTILABEL_CACHE_DIR": str(root / "distilabel"),
        "AGFSYNC_CACHE_DIR": str(root / "agfsync"),
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(root / "hf"),
    }
    previous = {name: os.environ.get(name) for name in overrides}
    os.environ.update(overrides)
    yield overrides
    for name, value in previous.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def tiny_sd_path(isolated_caches: dict[str, str]) -> str:
    """A Stable-Diffusion-1.x-shaped pipeline folder, via the preset's own resolver."""
    return resolve_model("tiny:stable-diffusion")


@pytest.fixture(scope="session")
def tiny_clip_path(isolated_caches: dict[str, str]) -> str:
    return resolve_model("tiny:clip")


@pytest.fixture(scope="session")
def tiny_pag_path(tiny_sd_path: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The tiny SD weights as a perturbed-attention-guidance pipeline, a class
    agfsync has no embedding-noise support for (the generic path)."""
    from diffusers import StableDiffusionPAGPipeline, StableDiffusionPipeline

    components = StableDiffusionPipeline.from_pretrained(tiny_sd_path).components
    pag: Any = StableDiffusionPAGPipeline(
        **components, requires_safety_checker=False, pag_applied_layers=["mid"]
    )
    target = tmp_path_factory.mktemp("pag")
    pag.save_pretrained(target)
    return str(target)
