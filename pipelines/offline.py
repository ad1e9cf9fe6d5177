"""The `offline` preset: the whole pipeline on tiny random models, no network.

It proves the wiring end to end in seconds on any CPU. The prompts and QA pairs
are the shipped hand-written sample, the images come from a tiny random Stable
Diffusion and the judges are tiny random BLIP-2 (VQA, probability mode), CLIP and
CLIP-L with the real LAION aesthetic head: the pictures and scores are meaningless
by design.
"""

from distilabel.pipeline import Pipeline

from agfsync.scoring import WEIGHT_PRESETS, ScorerSpec
from agfsync.step_names import (
    EXPORT_PAIRS_STEP,
    GENERATE_IMAGES_STEP,
    JUDGE_IMAGES_STEP,
    LOAD_PROMPTS_STEP,
    SELECT_PAIRS_STEP,
)
from agfsync.steps import (
    CandidateImageGeneration,
    ImageJudging,
    LoadPrompts,
    PreferenceDatasetExport,
    PreferencePairSelection,
)

OFFLINE_PIPELINE_NAME = "agfsync-offline"


def build_offline_pipeline() -> Pipeline:
    """Prompts from a file -> N tiny-model images -> tiny VQA, CLIP and aesthetic judges
    with equal weights -> best/worst pair -> the pair config."""
    with Pipeline(
        name=OFFLINE_PIPELINE_NAME,
        description="AGFSync on tiny random models: proves the wiring, images are meaningless.",
    ) as pipeline:
        load_prompts = LoadPrompts(name=LOAD_PROMPTS_STEP, batch_size=8)
        generate_images = CandidateImageGeneration(
            name=GENERATE_IMAGES_STEP,
            model="tiny:stable-diffusion",
            num_images=4,
            num_inference_steps=4,
            guidance_scale=4.5,
            batch_size=16,
            input_batch_size=8,
        )
        weights = WEIGHT_PRESETS["equal"]
        judge_images = ImageJudging(
            name=JUDGE_IMAGES_STEP,
            scorers=[
                ScorerSpec(
                    name="vqa",
                    model="tiny:blip2",
                    weight=weights["vqa"],
                    options={"mode": "probability"},
                ),
                ScorerSpec(name="clip", model="tiny:clip", weight=weights["clip"]),
                ScorerSpec(
                    name="aesthetic", model="tiny:clip-vit-large", weight=weights["aesthetic"]
                ),
            ],
            input_batch_size=8,
        )
        select_pairs = PreferencePairSelection(name=SELECT_PAIRS_STEP, input_batch_size=8)
        export_pairs = PreferenceDatasetExport(name=EXPORT_PAIRS_STEP, input_batch_size=8)
        load_prompts >> generate_images >> judge_images >> select_pairs >> export_pairs
    return pipeline
