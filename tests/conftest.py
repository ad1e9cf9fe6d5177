"""Shared fixtures: isolated caches and tiny models built once per session.

Caches are pointed at a session temp dir before anything runs, so the tests
never read or write `~/.cache` and never download.
"""

import json
import os
import resource
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from agfsync.models import resolve_model
from agfsync.tiny_models import TINY_VISION_TOWER

pytest_plugins = ["tests.argilla_server.fixture"]

# Set before any test module imports `datasets`, which reads its cache location at import.
_SESSION_ROOT = Path(tempfile.mkdtemp(prefix="agfsync-tests-"))
CACHE_OVERRIDES = {
    "DISTILABEL_CACHE_DIR": str(_SESSION_ROOT / "distilabel"),
    "AGFSYNC_CACHE_DIR": str(_SESSION_ROOT / "agfsync"),
    "HF_HUB_OFFLINE": "1",
    "HF_HOME": str(_SESSION_ROOT / "hf"),
}
os.environ.update(CACHE_OVERRIDES)


@pytest.fixture(scope="session", autouse=True)
def isolated_caches() -> Iterator[dict[str, str]]:
    yield CACHE_OVERRIDES
    shutil.rmtree(_SESSION_ROOT, ignore_errors=True)


@pytest.fixture(scope="session")
def tiny_sd_path(isolated_caches: dict[str, str]) -> str:
    """A Stable-Diffusion-1.x-shaped pipeline folder, via the preset's own resolver."""
    return resolve_model("tiny:stable-diffusion")


@pytest.fixture(scope="session")
def offline_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One dataset folder of the offline preset on 2 prompts, shared by the tests that
    only read it (a test that changes a dataset makes its own)."""
    from tests.helpers import generate_offline_run

    return generate_offline_run(tmp_path_factory.mktemp("offline-run") / "run", 2)


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


def _tiny_safety_checker(directory: Path, concept_threshold: float) -> str:
    """diffusers' safety checker on a tiny random CLIP vision tower. An image is
    flagged when its similarity to a concept exceeds the concept's threshold, so a
    threshold of -10 flags everything and +10 nothing, whatever the weights."""
    from diffusers.pipelines.stable_diffusion.safety_checker import (
        StableDiffusionSafetyChecker,
    )
    from transformers import CLIPConfig, CLIPImageProcessor

    config = CLIPConfig(
        text_config={"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4},
        vision_config=TINY_VISION_TOWER,
        projection_dim=16,
    )
    torch.manual_seed(0)
    checker: Any = StableDiffusionSafetyChecker(config)
    checker.concept_embeds_weights.data.fill_(concept_threshold)
    checker.special_care_embeds_weights.data.fill_(10.0)
    checker.save_pretrained(directory)
    CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    ).save_pretrained(directory)
    return str(directory)


@pytest.fixture(scope="session")
def tiny_safety_checkers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Two tiny checkers: one that flags every image, one that flags none."""
    root = tmp_path_factory.mktemp("safety")
    return {
        "flags_all": _tiny_safety_checker(root / "all", -10.0),
        "flags_none": _tiny_safety_checker(root / "none", 10.0),
    }


# --- what the suite costs: CPU time per test, commands forked or run anew ----------------

_STATS: dict[str, Any] = {"cpu": {}, "forked": 0, "new_processes": {}}
"""Per test (node id), the CPU seconds of its setup, call and teardown: this process,
the processes it waited for and the commands the warm runner forked for it."""


def _cpu_seconds() -> float:
    from tests.helpers import WARM_RUNNER

    own, waited = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + waited.ru_utime + waited.ru_stime + WARM_RUNNER.cpu_seconds


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    before = _cpu_seconds()
    yield
    _STATS["cpu"][item.nodeid] = _cpu_seconds() - before


def _merge(stats: dict[str, Any]) -> None:
    _STATS["cpu"].update(stats["cpu"])
    _STATS["forked"] += stats["forked"]
    for variables, count in stats["new_processes"].items():
        _STATS["new_processes"][variables] = _STATS["new_processes"].get(variables, 0) + count


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Stop the warm runner (waited for: its CPU time is counted) and hand this worker's
    figures to the controller under pytest-xdist."""
    from tests.helpers import WARM_RUNNER

    WARM_RUNNER.stop()
    _merge({"cpu": {}, "forked": WARM_RUNNER.forked, "new_processes": WARM_RUNNER.new_processes})
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["agfsync_stats"] = json.dumps(_STATS)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    output = getattr(node, "workeroutput", {}).get("agfsync_stats")
    if output:
        _merge(json.loads(output))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    cpu: dict[str, float] = _STATS["cpu"]
    if not cpu:
        return
    write = terminalreporter.write_line
    write(f"CPU time of the tests: {sum(cpu.values()):.0f} s (setup, call and teardown)")
    for nodeid, seconds in sorted(cpu.items(), key=lambda item: -item[1])[:15]:
        write(f"  {seconds:7.1f} s  {nodeid}")
    new = _STATS["new_processes"]
    write(
        f"commands: {_STATS['forked']} forked from the warm runner, "
        f"{sum(new.values())} in new processes"
    )
    for variables, count in sorted(new.items(), key=lambda item: -item[1]):
        write(f"  {count} for {variables}")


@pytest.fixture
def loopback_hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The loopback Hub (`tests.hub_server`) for huggingface_hub in this process, which
    read HF_ENDPOINT and HF_HUB_OFFLINE at import (a fresh process takes HF_ENDPOINT)."""
    from huggingface_hub import constants

    from tests.hub_server import HubServer

    server = HubServer().start()
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "ENDPOINT", server.url)
    template = server.url + "/{repo_id}/resolve/{revision}/{filename}"
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
    yield server
    server.stop()
