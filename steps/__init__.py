"""distilabel steps: thin adapters from dataset columns to agfsync's engines."""

from agfsync.steps.image_generation import CandidateImageGeneration
from agfsync.steps.judging import ImageJudging
from agfsync.steps.pairs import PreferencePairSelection
from agfsync.steps.prompts import LoadPrompts
from agfsync.steps.qa_decomposition import QADecomposition

__all__ = [
    "CandidateImageGeneration",
    "ImageJudging",
    "LoadPrompts",
    "PreferencePairSelection",
    "QADecomposition",
]
