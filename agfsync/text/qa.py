"""The question–answer pairs a prompt is decomposed into (the `qa_pairs` column)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

from pydantic import BaseModel, Field

from agfsync.text.compare import normalize_text

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


REJECTION_REASONS = (
    "malformed",
    "empty",
    "flagged_invalid",
    "answer_not_yes",
    "unknown_element_type",
    "element_not_in_prompt",
    "duplicate",
)
"""Why a generated question is dropped, in the order the checks run."""

_ELEMENT_TYPES = set(get_args(ElementType))


def _rejection_reason(prompt: str, item: Any) -> str | None:
    if not isinstance(item, dict):
        return "malformed"
    question = str(item.get("question") or "").strip()
    element = str(item.get("element") or "").strip()
    if not question or not element:
        return "empty"
    # The official prompt marks details "not mentioned in the text" with flag 0.
    if item.get("flag", 1) in (0, "0") or item.get("valid") is False:
        return "flagged_invalid"
    if str(item.get("answer", "")).strip().lower() != "yes":
        return "answer_not_yes"
    if item.get("element_type") not in _ELEMENT_TYPES:
        return "unknown_element_type"
    if normalize_text(element) not in normalize_text(prompt):
        return "element_not_in_prompt"
    return None


def validate_qa_pairs(
    prompt: str, rounds: Sequence[Sequence[Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Merge the raw items of k decomposition rounds into validated `qa_pairs`.

    Returns the accepted pairs (as `QAPair` dicts, first occurrence kept) and the
    rejected ones as `{question, reason}` with a reason from `REJECTION_REASONS`, so
    every dropped question is accounted for (the `qa_rejected` column).
    """
    accepted: list[dict[str, Any]] = []
    rejected: list[dict[str, str]] = []
    seen: set[str] = set()
    for item in (item for round_items in rounds for item in round_items):
        reason = _rejection_reason(prompt, item)
        question = str(item.get("question", "")) if isinstance(item, dict) else str(item)
        if reason is None and normalize_text(question) in seen:
            reason = "duplicate"
        if reason is not None:
            rejected.append({"question": question, "reason": reason})
            continue
        seen.add(normalize_text(question))
        accepted.append(
            QAPair(
                question=question.strip(),
                answer="yes",
                element_type=item["element_type"],
                element=str(item["element"]).strip(),
                valid=True,
            ).model_dump()
        )
    return accepted, rejected


@dataclass(frozen=True)
class QAStatistics:
    """The dataset statistics the AGFSync paper reports (26.06 words and 9.03 valid
    questions per prompt on 45,834 prompts)."""

    num_prompts: int
    words_per_prompt: float
    questions_per_prompt: float
    element_types: dict[str, int]


def qa_statistics(rows: Sequence[dict[str, Any]]) -> QAStatistics:
    """Words per prompt, valid questions per prompt and element-type counts."""
    count = len(rows)
    types = Counter(
        pair["element_type"] for row in rows for pair in row["qa_pairs"] if pair["valid"]
    )
    return QAStatistics(
        num_prompts=count,
        words_per_prompt=sum(len(row["prompt"].split()) for row in rows) / count if count else 0,
        questions_per_prompt=sum(types.values()) / count if count else 0,
        element_types=dict(types.most_common()),
    )
