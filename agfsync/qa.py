"""The question–answer pairs a prompt is decomposed into (the `qa_pairs` column)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

ElementType = Literal[
    "object",
    "human",
    "animal",
    "food",
    "activity",
    "attribute",
    "counting",
    "color",
    "material",
    "spatial",
    "location",
    "shape",
    "other",
]
"""The element types of the official AGFSync decomposition prompt."""


class QAPair(BaseModel):
    """One atomic yes/no question about a detail the prompt states explicitly."""

    question: str = Field(min_length=1, description="A general yes/no question.")
    answer: Literal["yes"] = Field(
        description="Always 'yes': the question checks something the prompt asserts."
    )
    element_type: ElementType = Field(description="What kind of detail is checked.")
    element: str = Field(
        min_length=1, description="The word or phrase of the prompt that is checked."
    )
    valid: bool = Field(
        description="False when the LLM itself flagged the detail as not in the text."
    )
