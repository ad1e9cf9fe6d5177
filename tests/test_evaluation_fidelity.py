"""TIFA multiple choice, DSG dependencies and the suites' prompt files.

TIFA ships a sample evaluation (`sample_evaluation_result.json`): for 19 questions, the
VQA model's free-form answer, the choice TIFA mapped it to, and the resulting scores.
Scripting those free-form answers must reproduce TIFA's own mapping and numbers."""

import json
from collections import defaultdict
from pathlib import Path
from statistics import fmean, stdev

import pytest

from agfsync.errors import ConfigurationError
from agfsync.evaluation.fidelity import (
    closest_choice,
    dsg_correct,
    multiple_choice_prompt,
    tifa_correct,
)
from agfsync.evaluation.suites import (
    DATA_DIR,
    HPSV2_STYLES,
    TIFA_SAMPLE_QUESTION_ANSWERS,
    Question,
    load_dsg,
    load_heldout,
    load_hpsv2,
    load_suite,
    load_tifa,
)
from agfsync.scoring.vqa import VQA_PROMPT

SAMPLE_RESULT = DATA_DIR / "tifa" / "sample_evaluation_result.json"


@pytest.fixture(scope="module")
def tifa_sample() -> dict:
    return json.loads(SAMPLE_RESULT.read_text())


class TestTifaMultipleChoice:
    def test_scripted_free_form_answers_reproduce_tifa_sample_result(
        self, tifa_sample: dict
    ) -> None:
        items = {item.id: item for item in load_tifa(TIFA_SAMPLE_QUESTION_ANSWERS)}
        per_text: dict[str, float] = {}
        by_type: dict[str, list[float]] = defaultdict(list)
        for text_id, details in tifa_sample["question_details"].items():
            questions = items[text_id].questions
            assert [q.text for q in questions] == list(details)
            answers = [details[q.text]["free_form_vqa"] for q in questions]
            for question, answer in zip(questions, answers, strict=True):
                assert closest_choice(answer, question.choices) == str(
                    details[question.text]["multiple_choice_vqa"]
                )
            correct = tifa_correct(questions, answers)
            assert correct == [float(details[q.text]["scores"]) for q in questions]
            per_text[text_id] = fmean(correct)
            for question, value in zip(questions, correct, strict=True):
                by_type[question.category].append(value)
        assert per_text == pytest.approx(tifa_sample["caption_scores"])
        assert fmean(per_text.values()) == pytest.approx(tifa_sample["tifa_average"])
        assert stdev(per_text.values()) == pytest.approx(tifa_sample["tifa_stdev"])
        assert {name: fmean(values) for name, values in by_type.items()} == pytest.approx(
            tifa_sample["accuracy_by_type"]
        )

    @pytest.mark.parametrize(
        ("answer", "choices", "expected"),
        [
            ("Yes.", ["yes", "no"], "yes"),
            ("no, there is not", ["yes", "no"], "no"),
            ("a surfer", ["surfer", "swimmer", "diver", "skier"], "surfer"),
            ("three", ["1", "2", "3", "4"], "3"),
            ("7", ["1", "2", "3", "4"], "4"),
            ("the sky is blue and gray", ["gray", "black", "red", "blue"], "blue"),
            ("grey", ["gray", "black", "red", "blue"], "gray"),
        ],
    )
    def test_closest_choice(self, answer: str, choices: list[str], expected: str) -> None:
        assert closest_choice(answer, choices) == expected

    def test_yes_no_prompt_is_agfsync_vqa_template(self) -> None:
        question = Question(id="0", text="Is there a cat?", answer="yes", category="animal")
        assert multiple_choice_prompt(question) == VQA_PROMPT.format(question="Is there a cat?")
        choices = Question("1", "What color?", "red", "color", choices=("red", "blue"))
        expected = "Question: What color? Choices:['red','blue'] Answer:"
        assert multiple_choice_prompt(choices) == expected


class TestDsg:
    def test_a_question_whose_parent_is_no_counts_as_no(self) -> None:
        questions = [
            Question("1", "Is there a car?", "yes", "entity"),
            Question("2", "Is the car red?", "yes", "attribute", parents=("1",)),
            Question("3", "Is there a road?", "yes", "entity"),
            Question("4", "Is the car on the road?", "yes", "relation", parents=("1", "3")),
        ]
        assert dsg_correct(questions, [1.0, 1.0, 1.0, 1.0]) == [1.0, 1.0, 1.0, 1.0]
        assert dsg_correct(questions, [0.0, 1.0, 1.0, 1.0]) == [0.0, 0.0, 1.0, 0.0]
        # Probabilities: a parent below 0.5 is a "no"; the child keeps its own value.
        assert dsg_correct(questions, [0.7, 0.9, 0.4, 0.8]) == [0.7, 0.9, 0.4, 0.0]

    def test_dsg_1k_file(self) -> None:
        items = load_dsg()
        assert len(items) == 1060
        assert sum(len(item.questions) for item in items) == 8182
        categories = {q.category for item in items for q in item.questions}
        assert categories == {"entity", "attribute", "relation", "global", "other"}
        whoops = next(item for item in items if item.id == "whoops_5")
        assert whoops.prompt == "A rubix cube with ten squares of purple"
        assert [q.parents for q in whoops.questions] == [(), ("1",), ("1",)]


class TestSuites:
    def test_hpsv2_evenly_spread_takes_the_same_number_per_style(self) -> None:
        assert len(load_hpsv2()) == 4 * 800
        suite = load_suite("hpsv2", prompts_per_suite=8)
        assert [item.group for item in suite.items] == [s for s in HPSV2_STYLES for _ in (0, 1)]
        assert suite.items[0].id == "hpsv2-anime-000"
        assert suite.items[1].id == "hpsv2-anime-400"
        # The VLM judge compares the HPSv2 prompts' images (same ids: shared cache).
        assert load_suite("vlm", prompts_per_suite=8).items == suite.items

    def test_tifa_needs_its_question_file(self) -> None:
        with pytest.raises(ConfigurationError, match="--tifa-qa"):
            load_suite("tifa")

    def test_tifa_refuses_an_answer_outside_its_choices(self, tmp_path: Path) -> None:
        entries = json.loads(TIFA_SAMPLE_QUESTION_ANSWERS.read_text())
        entries[1]["answer"] = "astronaut"
        broken = tmp_path / "qa.json"
        broken.write_text(json.dumps(entries))
        with pytest.raises(ConfigurationError, match="entry 1 answers 'astronaut'"):
            load_tifa(broken)

    def test_heldout_reads_agfsync_prompt_files(self, tmp_path: Path) -> None:
        path = tmp_path / "heldout.jsonl"
        rows = [
            {
                "prompt_id": "p-1",
                "prompt": "A red bus",
                "category": "Transportation",
                "qa_pairs": [
                    {"question": "Is there a bus?", "element_type": "object", "valid": True},
                    {"question": "Is it blue?", "element_type": "color", "valid": False},
                ],
            },
            {"prompt": "A cat"},
        ]
        path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
        first, second = load_heldout(path)
        assert (first.id, first.group, [q.text for q in first.questions]) == (
            "p-1",
            "Transportation",
            ["Is there a bus?"],
        )
        assert (second.id, second.group, second.questions) == ("heldout-00002", "(none)", ())
