"""The `ray-*` presets: `ray-offline` on a Ray cluster started here, on 127.0.0.1.

The pipeline reaches the cluster through `RAY_ADDRESS`, as on a real one, and must
produce the dataset of a local `offline` run: same rows, images and scores.
"""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from distilabel.pipeline import Pipeline, RayPipeline
from distilabel.pipeline.base import BasePipeline

from agfsync.pipelines import PRESETS, build_preset, preset_yaml_path
from agfsync.pipelines.ray import GPU_REPLICAS, GPU_STEPS
from tests.helpers import BIN_DIR, assert_same_dataset, run_command

pytestmark = pytest.mark.slow  # `make test-fast` skips this module

RAY_PRESETS = sorted(name for name in PRESETS if name.startswith("ray-"))
NUM_PROMPTS = 16
"""Two batches of 8 prompts: each of the two replicas of a model step gets one."""
ONE_THREAD = {"OMP_NUM_THREADS": "1"}
"""Ray runs an actor without a CPU request on one thread; CPU float sums depend on the
thread count, so the local run gets one too (the executor is what is compared)."""


def free_ports(count: int) -> list[int]:
    """`count` distinct loopback ports that were free a moment ago."""
    with contextlib.ExitStack() as stack:
        probes = [stack.enter_context(socket.socket()) for _ in range(count)]
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [int(probe.getsockname()[1]) for probe in probes]


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    """A one-node cluster (2 CPUs, no dashboard) in its own process group. Its GCS
    listens on every interface: Ray turns `--node-ip-address 127.0.0.1` into the
    machine's address, so the pipeline connects through 127.0.0.1 without one."""
    port, client_port, dashboard_port, agent_port = free_ports(4)
    # Ray's socket paths must stay under 108 bytes: a short temp dir, not pytest's.
    temp_dir = tempfile.mkdtemp(prefix="ray-")
    head = subprocess.Popen(
        [
            str(BIN_DIR / "ray"),
            "start",
            "--head",
            f"--port={port}",
            f"--ray-client-server-port={client_port}",
            f"--dashboard-port={dashboard_port}",
            f"--dashboard-agent-listen-port={agent_port}",
            "--include-dashboard=false",
            "--num-cpus=2",
            "--object-store-memory=200000000",
            f"--temp-dir={temp_dir}",
            "--disable-usage-stats",
        ],
        # The workers inherit this environment: the session's caches and tiny models.
        env={**os.environ, **ONE_THREAD},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        # `ray start` returns once the node is up; the node's processes stay in its group.
        output, _ = head.communicate(timeout=120)
        assert head.returncode == 0, output[-3000:]
        yield f"127.0.0.1:{port}"
    finally:
        # Only this node's processes; `ray stop` would stop every Ray node of the machine.
        # Its GCS ignores SIGTERM for a long while and there is nothing to save.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGKILL)
        shutil.rmtree(temp_dir, ignore_errors=True)


def generate(preset: str, output: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`agfsync generate` of the first prompts into `output`, with a cache of its own."""
    cache = {"DISTILABEL_CACHE_DIR": str(output.parent / f"{output.name}-cache")}
    return run_command(
        [
            *("agfsync", "generate", "--preset", preset, "-o", str(output)),
            *("--num-prompts", str(NUM_PROMPTS)),
        ],
        cwd=output.parent,
        env={**cache, **ONE_THREAD, **env},
    )


class TestRayOffline:
    def test_same_dataset_as_the_local_run(self, ray_address: str, tmp_path: Path) -> None:
        local = generate("offline", tmp_path / "local", env={})
        assert local.returncode == 0, local.stderr[-3000:]
        on_ray = generate("ray-offline", tmp_path / "ray", env={"RAY_ADDRESS": ray_address})
        assert on_ray.returncode == 0, on_ray.stderr[-3000:]
        port = ray_address.rsplit(":", 1)[1]
        connected = on_ray.stderr.partition("Connecting to existing Ray cluster at address: ")[2]
        assert connected.split("...", 1)[0].endswith(f":{port}"), on_ray.stderr[-3000:]

        # Both replicas of each model step worked on a batch.
        log = (tmp_path / "ray" / "pipeline.log").read_text()
        for step in GPU_STEPS:
            for replica in (0, 1):
                assert f"in '{step}' (replica ID: {replica})" in log, (step, replica)

        assert pq.read_table(tmp_path / "ray" / "data").num_rows == NUM_PROMPTS
        assert len(list((tmp_path / "ray" / "artifacts").rglob("*.png"))) == NUM_PROMPTS * 4
        assert_same_dataset(tmp_path / "ray", tmp_path / "local")


class TestRayPresets:
    @pytest.mark.parametrize("name", [name for name in RAY_PRESETS if name != "ray-offline"])
    def test_gpu_steps_are_replicas_of_one_gpu_llm_steps_one_replica(self, name: str) -> None:
        pipeline = build_preset(name)
        for step_name in pipeline.dag:
            step = pipeline.dag.get_step(step_name)["step"]
            resources = (step.resources.replicas, step.resources.gpus)
            if step_name in GPU_STEPS:
                assert resources == (GPU_REPLICAS, 1), step_name
            else:
                assert resources == (1, None), step_name

    @pytest.mark.parametrize("name", RAY_PRESETS)
    def test_same_steps_as_the_local_preset_but_resources(self, name: str) -> None:
        def without_resources(pipeline: BasePipeline) -> dict[str, Any]:
            dump = pipeline.dump()["pipeline"]
            for step in dump["steps"]:
                del step["step"]["resources"]
            return dump

        pipeline = build_preset(name)
        assert isinstance(pipeline, RayPipeline)
        local = build_preset(name.removeprefix("ray-"))
        assert without_resources(pipeline) == without_resources(local)

    @pytest.mark.parametrize("name", RAY_PRESETS)
    def test_committed_yaml_loads_back_and_converts_to_the_preset(self, name: str) -> None:
        """distilabel writes a RayPipeline as a `Pipeline`, so a YAML loads as one; the
        resources come back with it and `.ray()` gives the preset."""
        loaded = Pipeline.from_yaml(preset_yaml_path(name))
        assert type(loaded) is Pipeline
        assert loaded.ray().dump() == build_preset(name).dump()
