"""The full GPU presets: LLM prompts and QA -> diffusers candidates -> judges -> pairs.

`agfsync-sd15` and `agfsync-sdxl` follow the paper: prompts from an OpenAI model, QA
from Gemini, N = 8 candidates at 50 steps, BLIP-2 VQA, CLIP ViT-B/16 and the LAION
aesthetic judge. `local-llm` runs both LLM stages on any OpenAI-compatible server.
"""

from distilabel.models.llms.base import LLM
from distilabel.pipeline import Pipeline

from agfsync.pipelines.text import add_text_steps, gemini_qa_llm, openai_llm
from agfsync.scoring import WEIGHT_PRESETS, ScorerSpec
from agfsync.step_names import (
    EXPORT_PAIRS_STEP,
    GENERATE_IMAGES_STEP,
    JUDGE_IMAGES_STEP,
    SELECT_PAIRS_STEP,
)
from agfsync.steps import (
    CandidateImageGeneration,
    ImageJudging,
    PreferenceDatasetExport,
    PreferencePairSelection,
)
from agfsync.steps.qa_decomposition import QA_RESPONSE_SCHEMA

SD15_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
SDXL_MODEL = "stabilityai/stable-diffusion-xl-base-1.0"


def paper_judges() -> list[ScorerSpec]:
    """The paper's three judges with the `equal` weights (VQA in the paper's answer mode)."""
    weights = WEIGHT_PRESETS["equal"]
    return [
        ScorerSpec(
            name="vqa", model="Salesforce/blip2-flan-t5-xxl", weight=weights["vqa"], batch_size=64
        ),
        ScorerSpec(name="clip", model="openai/clip-vit-base-patch16", weight=weights["clip"]),
        ScorerSpec(
            name="aesthetic", model="openai/clip-vit-large-patch14", weight=weights["aesthetic"]
        ),
    ]


def build_full_pipeline(
    name: str, qa_llm: LLM, image_model: str, height: int | None = None
) -> Pipeline:
    """Text stage -> N candidates per prompt -> judges -> best/worst pair -> the pair config."""
    with Pipeline(
        name=name, description=f"AGFSync end to end: LLM prompts and QA, {image_model}."
    ) as pipeline:
        decompose = add_text_steps(qa_llm)
        generate_images = CandidateImageGeneration(
            name=GENERATE_IMAGES_STEP,
            model=image_model,
            height=height,
            width=height,
            input_batch_size=8,
        )
        judge_images = ImageJudging(
            name=JUDGE_IMAGES_STEP, scorers=paper_judges(), input_batch_size=8
        )
        select_pairs = PreferencePairSelection(name=SELECT_PAIRS_STEP, input_batch_size=8)
        export_pairs = PreferenceDatasetExport(name=EXPORT_PAIRS_STEP, input_batch_size=8)
        decompose >> generate_images >> judge_images >> select_pairs >> export_pairs
    return pipeline


def build_agfsync_sd15_pipeline() -> Pipeline:
    return build_full_pipeline("agfsync-sd15", gemini_qa_llm(), SD15_MODEL)


def build_agfsync_sdxl_pipeline() -> Pipeline:
    return build_full_pipeline("agfsync-sdxl", gemini_qa_llm(), SDXL_MODEL, height=1024)


def build_local_llm_pipeline() -> Pipeline:
    return build_full_pipeline(
        "agfsync-local-llm", openai_llm("qa_pairs", QA_RESPONSE_SCHEMA), SD15_MODEL
    )
