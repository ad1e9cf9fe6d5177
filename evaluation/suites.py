"""Benchmark prompt sets, as lists of prompts with ids (and questions where the suite has them).

Every suite is read from files in the TIFA, DSG and HPSv2 formats: the prompt files
ship in `data/` with their licenses (see `data/SOURCES.md`); TIFA v1.0's
question–answer file is not redistributable here and is read from a path the user
gives, as is the held-out prompt file. Prompt ids are stable across runs, so cached
images are found again by id.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from agfsync.errors import ConfigurationError

DATA_DIR = Path(__file__).resolve().parent / "data"
TIFA_TEXT_INPUTS = DATA_DIR / "tifa" / "tifa_v1.0_text_inputs.json"
TIFA_SAMPLE_QUESTION_ANSWERS = DATA_DIR / "tifa" / "sample_question_answers.json"
"""TIFA's own 19-question sample in the v1.0 format; use it to try the suite."""
DSG_QUESTIONS = DATA_DIR / "dsg" / "dsg-1k-anns.csv"
HPSV2_DIR = DATA_DIR / "hpsv2"
HPSV2_STYLES = ("anime", "concept-art", "paintings", "photo")
"""The four styles of the HPSv2 benchmark, 800 prompts each."""

YES_NO = ("yes", "no")

SuiteName = Literal["tifa", "dsg", "hpsv2", "vlm", "heldout"]
SUITE_NAMES: tuple[SuiteName, ...] = ("tifa", "dsg", "hpsv2", "vlm", "heldout")


@dataclass(frozen=True)
class Question:
    """One question a VQA model answers about an image."""

    id: str
    text: str
    answer: str
    """The correct choice."""
    category: str
    """TIFA element type, DSG broad category, or the QA pair's element type."""
    choices: tuple[str, ...] = YES_NO
    parents: tuple[str, ...] = ()
    """DSG: ids of the questions this one presupposes (e.g. "is it red?" needs "is there
    a car?"); when a parent is answered wrongly, this question counts as wrong."""


@dataclass(frozen=True)
class PromptItem:
    """One prompt of a suite; images of it are cached under `id`."""

    id: str
    prompt: str
    group: str
    """What the suite breaks results down by: HPSv2 style, DSG source, held-out category."""
    questions: tuple[Question, ...] = field(default=(), repr=False)


@dataclass(frozen=True)
class Suite:
    name: SuiteName
    items: list[PromptItem]


def evenly_spaced(items: list[PromptItem], count: int | None) -> list[PromptItem]:
    """`count` items spread evenly over the list (all when `count` is None or larger).

    Deterministic and order-preserving; on HPSv2, whose prompts are listed style by
    style in equal numbers, a multiple of 4 takes the same number from each style.
    """
    if count is None or count >= len(items):
        return list(items)
    return [items[index * len(items) // count] for index in range(count)]


def load_tifa(question_answers: Path, text_inputs: Path = TIFA_TEXT_INPUTS) -> list[PromptItem]:
    """TIFA prompts with their multiple-choice questions.

    `question_answers` is a file in the TIFA v1.0 question–answer format (a JSON list
    of `{id, caption, question, choices, answer, element_type, element}`, see
    `data/tifa/README_tifa_v1.0.md`). The prompts are the texts that have questions,
    in the file's order; the caption comes from TIFA v1.0's text inputs when the id is
    one of them and from the question–answer file otherwise.
    """
    entries = _read_json_list(question_answers, "a TIFA question–answer file")
    captions = {entry["id"]: entry["caption"] for entry in json.loads(text_inputs.read_text())}
    questions: dict[str, list[Question]] = {}
    own_captions: dict[str, str] = {}
    for position, entry in enumerate(entries):
        missing = {"id", "caption", "question", "choices", "answer"} - entry.keys()
        if missing:
            raise ConfigurationError(
                f"{question_answers}: entry {position} lacks {', '.join(sorted(missing))}; "
                "expected the TIFA v1.0 question–answer format."
            )
        choices = tuple(str(choice) for choice in entry["choices"])
        if str(entry["answer"]) not in choices:
            raise ConfigurationError(
                f"{question_answers}: entry {position} answers {entry['answer']!r}, which "
                f"is not one of its choices {list(choices)}."
            )
        text_id = str(entry["id"])
        own_captions.setdefault(text_id, entry["caption"])
        questions.setdefault(text_id, []).append(
            Question(
                id=str(len(questions[text_id])),
                text=entry["question"],
                answer=str(entry["answer"]),
                category=entry.get("element_type") or "other",
                choices=choices,
            )
        )
    return [
        PromptItem(
            id=text_id,
            prompt=captions.get(text_id, own_captions[text_id]),
            group=text_id.rsplit("_", 1)[0],
            questions=tuple(text_questions),
        )
        for text_id, text_questions in questions.items()
    ]


def load_dsg(path: Path = DSG_QUESTIONS) -> list[PromptItem]:
    """DSG-1k: 1,060 prompts, each with yes/no questions, categories and dependencies."""
    items: dict[str, tuple[str, list[Question]]] = {}
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            parents = tuple(
                parent.strip() for parent in row["dependency"].split(",") if parent.strip() != "0"
            )
            question = Question(
                id=row["proposition_id"],
                text=row["question_natural_language"],
                answer="yes",
                category=row["category_broad"],
                parents=parents,
            )
            items.setdefault(row["item_id"], (row["text"], []))[1].append(question)
    return [
        PromptItem(
            id=item_id,
            prompt=text,
            group=item_id.rsplit("_", 1)[0],
            questions=tuple(questions),
        )
        for item_id, (text, questions) in items.items()
    ]


def load_hpsv2(directory: Path = HPSV2_DIR) -> list[PromptItem]:
    """The HPSv2 benchmark prompts, style by style; id `hpsv2-<style>-<index>` keeps the
    benchmark's convention that image i of a style belongs to its prompt i."""
    return [
        PromptItem(id=f"hpsv2-{style}-{index:03d}", prompt=prompt, group=style)
        for style in HPSV2_STYLES
        for index, prompt in enumerate(json.loads((directory / f"{style}.json").read_text()))
    ]


def load_heldout(path: Path) -> list[PromptItem]:
    """Held-out prompts in agfsync's prompt-file format: JSONL of `{prompt_id, prompt,
    category, qa_pairs}` (see `agfsync/data/README.md`); invalid QA pairs are skipped."""
    if not path.is_file():
        raise ConfigurationError(f"Held-out prompt file {str(path)!r} does not exist.")
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        row = json.loads(line)
        if "prompt" not in row:
            raise ConfigurationError(f"{path}:{number} has no `prompt`.")
        pairs = [pair for pair in row.get("qa_pairs") or [] if pair.get("valid", True)]
        items.append(
            PromptItem(
                id=str(row.get("prompt_id") or f"heldout-{number:05d}"),
                prompt=row["prompt"],
                group=row.get("category") or "(none)",
                questions=tuple(
                    Question(
                        id=str(index),
                        text=pair["question"],
                        answer=pair.get("answer", "yes"),
                        category=pair.get("element_type") or "other",
                    )
                    for index, pair in enumerate(pairs)
                ),
            )
        )
    if not items:
        raise ConfigurationError(f"Held-out prompt file {path} has no prompts.")
    return items


def _read_json_list(path: Path, what: str) -> list[dict[str, Any]]:
    if not path.is_file():
        raise ConfigurationError(f"{what.capitalize()} {str(path)!r} does not exist.")
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise ConfigurationError(f"{path} is not JSON ({error}); expected {what}.") from error
    if not isinstance(entries, list) or not entries:
        raise ConfigurationError(f"{path} is not a non-empty JSON list; expected {what}.")
    return entries


def load_suite(
    name: SuiteName,
    *,
    prompts_per_suite: int | None = None,
    tifa_question_answers: Path | None = None,
    heldout_prompts: Path | None = None,
) -> Suite:
    """A suite's prompts, `prompts_per_suite` of them evenly spread (all when None).

    The VLM judge has no prompt set of its own: it compares the images of the HPSv2
    prompts (so it reuses the HPSv2 suite's images).
    """
    if name == "tifa":
        if tifa_question_answers is None:
            raise ConfigurationError(
                "The tifa suite needs TIFA's question–answer file (--tifa-qa PATH, e.g. "
                "tifa_v1.0_question_answers.json from github.com/Yushi-Hu/tifa); the offline "
                "prompt-fidelity suite is dsg."
            )
        items = load_tifa(tifa_question_answers)
    elif name == "dsg":
        items = load_dsg()
    elif name in ("hpsv2", "vlm"):
        items = load_hpsv2()
    elif name == "heldout":
        if heldout_prompts is None:
            raise ConfigurationError(
                "The heldout suite needs a prompt file with QA pairs (--heldout PATH)."
            )
        items = load_heldout(heldout_prompts)
    else:
        raise ConfigurationError(f"Unknown suite {name!r}; choose from {', '.join(SUITE_NAMES)}.")
    return Suite(name=name, items=evenly_spaced(items, prompts_per_suite))
