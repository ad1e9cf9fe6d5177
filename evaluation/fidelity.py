"""Prompt fidelity by visual question answering: TIFA multiple choice and DSG yes/no.

TIFA (Hu et al., 2023) asks a VQA model free-form questions about the image and
maps each answer to the closest of the question's choices; the image's score is
the share of questions whose mapped answer is the correct one. TIFA maps with
SBERT similarity; here the mapping needs no extra model (`closest_choice`):

1. an answer equal to a choice (case, punctuation and articles aside) is that choice;
2. a number (digits or a word up to twenty) among numeric choices maps to the
   numerically nearest choice ("0" among 1-4 is "1", as TIFA's sample result has it);
3. otherwise the choice that appears earliest as whole words in the answer
   ("yes, there is" -> "yes");
4. otherwise the choice with the highest character similarity (difflib ratio).

The VQA model is asked with AGFSync's template extended to the question's own
choices: `Question: {question} Choices:['a','b'] Answer:`, which for yes/no questions
is exactly the AGFSync VQA prompt.

DSG (Cho et al., 2024) asks only yes/no questions, with dependencies: a question
whose parent is answered "no" counts as "no" ("is the car red?" cannot be right
when there is no car). Answers come from agfsync's `VQAScorer` (1/0 in its answer
mode, P(yes) in its probability mode; a parent counts as "no" below 0.5).
"""

from __future__ import annotations

import difflib
import re
import string
from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

from agfsync.evaluation.suites import Question
from agfsync.scoring import VQAScorer

_NUMBER_WORDS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty"
)
NUMBER_WORDS = {word: value for value, word in enumerate(_NUMBER_WORDS.split())}
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans(dict.fromkeys(string.punctuation, " "))


def normalize(text: str) -> str:
    """Lowercase, punctuation and articles removed, spaces collapsed."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION)).split())


def as_number(text: str) -> float | None:
    word = normalize(text)
    if word in NUMBER_WORDS:
        return float(NUMBER_WORDS[word])
    try:
        return float(word)
    except ValueError:
        return None


def closest_choice(answer: str, choices: Sequence[str]) -> str:
    """The choice a free-form answer means (rules in the module docstring)."""
    normalized = normalize(answer)
    for choice in choices:
        if normalize(choice) == normalized:
            return choice
    number = as_number(answer)
    numeric_choices = [(choice, as_number(choice)) for choice in choices]
    if number is not None and all(value is not None for _, value in numeric_choices):
        return min(numeric_choices, key=lambda pair: abs(pair[1] - number))[0]  # type: ignore[operator]
    padded = f" {normalized} "
    mentioned = [
        (padded.find(f" {normalize(choice)} "), position, choice)
        for position, choice in enumerate(choices)
        if normalize(choice) and f" {normalize(choice)} " in padded
    ]
    if mentioned:
        return min(mentioned)[2]
    return max(choices, key=lambda choice: _similarity(normalized, normalize(choice)))


def _similarity(first: str, second: str) -> float:
    return difflib.SequenceMatcher(None, first, second).ratio()


def multiple_choice_prompt(question: Question) -> str:
    """AGFSync's VQA template with the question's own choices."""
    choices = ",".join(f"'{choice}'" for choice in question.choices)
    return f"Question: {question.text} Choices:[{choices}] Answer:"


def tifa_correct(questions: Sequence[Question], answers: Sequence[str]) -> list[float]:
    """1.0 where the free-form answer maps to the correct choice, else 0.0."""
    return [
        float(closest_choice(answer, question.choices) == question.answer)
        for question, answer in zip(questions, answers, strict=True)
    ]


def dsg_correct(questions: Sequence[Question], yes_values: Sequence[float]) -> list[float]:
    """Each question's "yes" value (1/0 or P(yes)), zeroed when any parent is a "no".

    DSG's questions all expect "yes"; parents are looked up by question id and a
    missing parent id (a malformed row) is ignored.
    """
    answered_yes = {
        question.id: value >= 0.5 for question, value in zip(questions, yes_values, strict=True)
    }
    return [
        value if all(answered_yes.get(parent, True) for parent in question.parents) else 0.0
        for question, value in zip(questions, yes_values, strict=True)
    ]


@torch.inference_mode()
def free_form_answers(
    scorer: VQAScorer, images: Sequence[Image.Image], prompts: Sequence[Sequence[str]]
) -> list[list[str]]:
    """For each image, the VQA model's short answer to each of its prompts (greedy).

    Uses the loaded judge's model and processor, in batches of its batch size.
    """
    pairs = [(index, prompt) for index, texts in enumerate(prompts) for prompt in texts]
    answers: list[list[str]] = [[] for _ in images]
    for start in range(0, len(pairs), scorer.batch_size):
        batch = pairs[start : start + scorer.batch_size]
        inputs: Any = scorer.processor(
            images=[images[index].convert("RGB") for index, _ in batch],
            text=[prompt for _, prompt in batch],
            return_tensors="pt",
            padding=True,
        ).to(scorer.device, scorer.dtype)
        generated = scorer.vlm.generate(
            **inputs, max_new_tokens=scorer.max_new_tokens, do_sample=False
        )
        if not scorer.vlm.config.is_encoder_decoder and getattr(
            scorer.vlm.config, "use_decoder_only_language_model", False
        ):
            generated = generated[:, inputs["input_ids"].shape[1] :]
        texts = scorer.processor.batch_decode(generated, skip_special_tokens=True)
        for (index, _), text in zip(batch, texts, strict=True):
            answers[index].append(text.strip())
    return answers
