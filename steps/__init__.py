"""distilabel steps: thin adapters from dataset columns to agfsync's engines."""

from agfsync.llm.gemini import GeminiLLM
from agfsync.steps.dedup import PromptDeduplication
from agfsync.steps.image_generation import CandidateImageGeneration
from agfsync.steps.judging import ImageJudging
from agfsync.steps.pairs import PreferencePairSelection
from agfsync.steps.preference_export import PreferenceDatasetExport
from agfsync.steps.prompt_generation import CategoryPromptGeneration, LoadCategories
from agfsync.steps.prompts import LoadPrompts
from agfsync.steps.qa_decomposition import QADecomposition
from agfsync.steps.style_rewriting import StylePromptRewriting

__all__ = [
    "CandidateImageGeneration",
    "CategoryPromptGeneration",
    "GeminiLLM",
    "ImageJudging",
    "LoadCategories",
    "LoadPrompts",
    "PreferenceDatasetExport",
    "PreferencePairSelection",
    "PromptDeduplication",
    "QADecomposition",
    "StylePromptRewriting",
]
