import pytest

from agfsync.text.prompt_files import load_prompt_records
from agfsync.text.qa import qa_statistics, validate_qa_pairs

PROMPT = "A red lighthouse on a rocky cliff above a calm sea at sunset."


def _item(**overrides: object) -> dict:
    item = {
        "question": "Is there a lighthouse?",
        "answer": "yes",
        "element_type": "object",
        "element": "lighthouse",
        "flag": 1,
    }
    item.update(overrides)
    return item


class TestValidateQAPairs:
    def test_accepts_a_good_pair(self) -> None:
        accepted, rejected = validate_qa_pairs(PROMPT, [[_item()]])
        assert accepted == [
            {
                "question": "Is there a lighthouse?",
                "answer": "yes",
                "element_type": "object",
                "element": "lighthouse",
                "valid": True,
            }
        ]
        assert rejected == []

    @pytest.mark.parametrize(
        ("item", "reason"),
        [
            ("not a dict", "malformed"),
            (_item(question=""), "empty"),
            (_item(element=" "), "empty"),
            (_item(flag=0), "flagged_invalid"),
            (_item(valid=False), "flagged_invalid"),
            (_item(answer="no"), "answer_not_yes"),
            (_item(element_type="mood"), "unknown_element_type"),
            (_item(element="windmill", question="Is there a windmill?"), "element_not_in_prompt"),
        ],
    )
    def test_rejects_with_a_counted_reason(self, item: object, reason: str) -> None:
        accepted, rejected = validate_qa_pairs(PROMPT, [[item]])
        assert accepted == []
        assert [entry["reason"] for entry in rejected] == [reason]

    def test_duplicates_across_rounds_are_merged(self) -> None:
        rounds = [
            [
                _item(),
                _item(question="Is the lighthouse red?", element="red", element_type="color"),
            ],
            [_item(question="  is there a LIGHTHOUSE ")],
        ]
        accepted, rejected = validate_qa_pairs(PROMPT, rounds)
        assert [pair["question"] for pair in accepted] == [
            "Is there a lighthouse?",
            "Is the lighthouse red?",
        ]
        assert rejected == [{"question": "  is there a LIGHTHOUSE ", "reason": "duplicate"}]

    def test_element_match_ignores_case_and_spacing(self) -> None:
        accepted, _ = validate_qa_pairs(PROMPT, [[_item(element="Rocky  Cliff")]])
        assert len(accepted) == 1


class TestQAStatistics:
    def test_shipped_sample(self) -> None:
        stats = qa_statistics(load_prompt_records())
        assert stats.num_prompts == 24
        assert stats.words_per_prompt == pytest.approx(640 / 24, abs=0.01)
        assert stats.questions_per_prompt == pytest.approx(226 / 24, abs=0.01)
        assert sum(stats.element_types.values()) == 226

    def test_the_shipped_sample_passes_validation(self) -> None:
        for record in load_prompt_records():
            accepted, rejected = validate_qa_pairs(record["prompt"], [record["qa_pairs"]])
            assert rejected == [], record["prompt_id"]
            assert accepted == record["qa_pairs"]
