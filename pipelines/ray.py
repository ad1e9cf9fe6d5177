"""The `ray-*` presets: the same pipelines on distilabel's `RayPipeline`.

Each one is its local preset converted with `Pipeline.ray()`: the same steps with the
same settings and pipeline name; only the GPU steps' resources change. distilabel
1.5.3 means to leave resources out of a step's cache key but misses them (they are
nested), so a `ray-*` run does not reuse a local run's cache, nor a run with another
replica count.

`RayPipeline` connects to the cluster in `RAY_ADDRESS` (`ray.init()`), else to a node
started on this machine, else starts one. Every step replica is a Ray actor:

- the GPU steps, `generate_images` and `judge_images`, run `GPU_REPLICAS` replicas
  each, one GPU per replica (Ray gives each actor its own `CUDA_VISIBLE_DEVICES`).
  distilabel starts every step before sending the first batch, so a preset needs
  2 x `GPU_REPLICAS` GPUs; generation and judging then overlap.
- the LLM steps keep one replica, which works on one batch at a time: that bounds the
  requests in flight (`write_prompts`: one; `decompose_prompts`: one per prompt of a
  batch of `input_batch_size` = 8).
- the other steps are light and run one CPU replica each.

The replica count is a runtime parameter (`generate_images.resources.replicas`).
"""

from distilabel.pipeline import Pipeline, RayPipeline
from distilabel.steps import StepResources

from agfsync.pipelines.full import (
    build_agfsync_sd15_pipeline,
    build_agfsync_sdxl_pipeline,
    build_local_llm_pipeline,
)
from agfsync.pipelines.offline import build_offline_pipeline
from agfsync.step_names import GENERATE_IMAGES_STEP, JUDGE_IMAGES_STEP

GPU_STEPS = (GENERATE_IMAGES_STEP, JUDGE_IMAGES_STEP)
GPU_REPLICAS = 4
"""Replicas of each GPU step: 2 x 4 = 8 GPUs, the paper's 8 A100."""
CPU_REPLICAS = 2
"""Replicas of each (CPU) model step of `ray-offline`, so CI runs replicas too."""


def on_ray(pipeline: Pipeline, replicas: int, gpus: int | None) -> RayPipeline:
    """`pipeline` on Ray, with `replicas` replicas of `gpus` GPUs for each GPU step."""
    for name in GPU_STEPS:
        pipeline.dag.get_step(name)["step"].resources = StepResources(replicas=replicas, gpus=gpus)
    return pipeline.ray()


def build_ray_offline_pipeline() -> RayPipeline:
    """The offline preset on Ray: tiny models on CPUs, two replicas per model step."""
    return on_ray(build_offline_pipeline(), replicas=CPU_REPLICAS, gpus=None)


def build_ray_agfsync_sd15_pipeline() -> RayPipeline:
    return on_ray(build_agfsync_sd15_pipeline(), replicas=GPU_REPLICAS, gpus=1)


def build_ray_agfsync_sdxl_pipeline() -> RayPipeline:
    return on_ray(build_agfsync_sdxl_pipeline(), replicas=GPU_REPLICAS, gpus=1)


def build_ray_local_llm_pipeline() -> RayPipeline:
    return on_ray(build_local_llm_pipeline(), replicas=GPU_REPLICAS, gpus=1)
