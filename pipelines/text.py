"""The text presets: category prompts -> near-duplicate filter -> QA decomposition.

`text-openai` uses one OpenAI-compatible endpoint for both LLM stages (OpenAI, or
vLLM / TGI / llama.cpp / Ollama through `OPENAI_BASE_URL`); `text-gemini` writes
prompts with it and decomposes them with Gemini, as the paper did.
"""

from distilabel.models.llms import OpenAILLM
from distilabel.models.llms.base import LLM
from distilabel.pipeline import Pipeline

from agfsync.llm.gemini import GeminiLLM
from agfsync.step_names import (
    DECOMPOSE_STEP,
    DEDUPLICATE_STEP,
    LOAD_CATEGORIES_STEP,
    LOAD_PROMPTS_STEP,
    REWRITE_PROMPTS_STEP,
    WRITE_PROMPTS_STEP,
)
from agfsync.steps import (
    CategoryPromptGeneration,
    LoadCategories,
    LoadPrompts,
    PromptDeduplication,
    StylePromptRewriting,
)
from agfsync.steps.prompt_generation import PROMPTS_RESPONSE_SCHEMA
from agfsync.steps.qa_decomposition import QA_RESPONSE_SCHEMA, QADecomposition

DEFAULT_OPENAI_MODEL = "gpt-4o-mini"
DEFAULT_GEMINI_MODEL = "gemini-2.0-flash"
GENERATION_KWARGS = {"temperature": 1.0, "max_new_tokens": 2048}
"""Long enough for 10 prompts or 15+ QA items per call; sampling keeps rounds diverse."""


def openai_json_schema(name: str, schema: dict) -> dict:
    """Generation kwargs asking an OpenAI-compatible server for JSON matching `schema`.

    distilabel's `response_format` argument only takes string values, so the schema
    travels in `extra_body`, which the client merges into the request (OpenAI, vLLM
    and llama.cpp honour it; `--no-structured-output` drops it for servers that don't).
    """
    response_format = {"type": "json_schema", "json_schema": {"name": name, "schema": schema}}
    return {**GENERATION_KWARGS, "extra_body": {"response_format": response_format}}


def openai_llm(name: str, schema: dict) -> OpenAILLM:
    return OpenAILLM(model=DEFAULT_OPENAI_MODEL, generation_kwargs=openai_json_schema(name, schema))


def add_text_steps(qa_llm: LLM) -> QADecomposition:
    """Inside a `Pipeline` context: categories -> prompts (OpenAI-compatible LLM) ->
    dedup -> QA (`qa_llm`); returns the last step, to chain more stages after it."""
    load_categories = LoadCategories(name=LOAD_CATEGORIES_STEP, batch_size=4)
    write_prompts = CategoryPromptGeneration(
        name=WRITE_PROMPTS_STEP,
        llm=openai_llm("prompts", PROMPTS_RESPONSE_SCHEMA),
        input_batch_size=4,
    )
    deduplicate = PromptDeduplication(name=DEDUPLICATE_STEP)
    decompose = QADecomposition(name=DECOMPOSE_STEP, llm=qa_llm, input_batch_size=8)
    load_categories >> write_prompts >> deduplicate >> decompose
    return decompose


def gemini_qa_llm() -> GeminiLLM:
    """Gemini for the QA rounds, as the paper, with its native structured output."""
    return GeminiLLM(
        model=DEFAULT_GEMINI_MODEL,
        generation_kwargs={**GENERATION_KWARGS, "response_schema": QA_RESPONSE_SCHEMA},
    )


def build_text_pipeline(name: str, qa_llm: LLM) -> Pipeline:
    """The text stage alone."""
    with Pipeline(
        name=name,
        description="AGFSync text stage: category prompts and validated yes/no QA pairs.",
    ) as pipeline:
        add_text_steps(qa_llm)
    return pipeline


def build_text_openai_pipeline() -> Pipeline:
    return build_text_pipeline("agfsync-text-openai", openai_llm("qa_pairs", QA_RESPONSE_SCHEMA))


def build_text_gemini_pipeline() -> Pipeline:
    """Prompts from an OpenAI-compatible LLM, QA from Gemini (as the paper)."""
    return build_text_pipeline("agfsync-text-gemini", gemini_qa_llm())


def build_text_image_preferences_pipeline() -> Pipeline:
    """Seed prompts -> one style x {simplified, complex} rewrites -> dedup -> QA, as the
    open image-preferences project built its prompts."""
    with Pipeline(
        name="agfsync-text-image-preferences",
        description="Seed prompts rewritten per style and complexity, with yes/no QA pairs.",
    ) as pipeline:
        load_seeds = LoadPrompts(name=LOAD_PROMPTS_STEP, batch_size=8)
        rewrite = StylePromptRewriting(
            name=REWRITE_PROMPTS_STEP,
            llm=OpenAILLM(model=DEFAULT_OPENAI_MODEL, generation_kwargs=GENERATION_KWARGS),
            input_batch_size=8,
        )
        deduplicate = PromptDeduplication(name=DEDUPLICATE_STEP)
        decompose = QADecomposition(
            name=DECOMPOSE_STEP,
            llm=openai_llm("qa_pairs", QA_RESPONSE_SCHEMA),
            input_batch_size=8,
        )
        load_seeds >> rewrite >> deduplicate >> decompose
    return pipeline
