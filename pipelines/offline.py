"""The `offline` preset: the whole pipeline on tiny random models, no network.

It proves the wiring end to end in seconds on any CPU. The prompts and QA pairs
are the shipped hand-written sample, the images come from a tiny random Stable
Diffusion and the judge is a tiny random CLIP: the pictures and scores are
meaningless by design.
"""

from distilabel.pipeline import Pipeline

from agfsync.scoring import ScorerSpec
from agfsync.steps import (
    CandidateImageGeneration,
    ImageJudging,
    LoadPrompts,
    PreferencePairSelection,
)

OFFLINE_PIPELINE_NAME = "agfsync-offline"


def build_offline_pipeline() -> Pipeline:
    """Prompts from a file -> N tiny-model images -> tiny CLIP score -> best/worst pair."""
    with Pipeline(
        name=OFFLINE_PIPELINE_NAME,
        description="AGFSync on tiny random models: proves the wiring, images are meaningless.",
    ) as pipeline:
        load_prompts = LoadPrompts(name="load_prompts", batch_size=8)
        generate_images = CandidateImageGeneration(
            name="generate_images",
            model="tiny:stable-diffusion",
            num_images=4,
            num_inference_steps=4,
            guidance_scale=4.5,
            batch_size=16,
            input_batch_size=8,
        )
        judge_images = ImageJudging(
            name="judge_images",
            scorers=[ScorerSpec(name="clip", model="tiny:clip", weight=1.0)],
            input_batch_size=8,
        )
        select_pairs = PreferencePairSelection(name="select_pairs", input_batch_size=8)
        load_prompts >> generate_images >> judge_images >> select_pairs
    return pipeline
