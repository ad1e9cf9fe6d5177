import pytest

from agfsync.llm.json_output import MalformedOutputError, parse_json_list


class TestParseJsonList:
    def test_plain_list(self) -> None:
        assert parse_json_list('["a", "b"]') == ["a", "b"]

    def test_code_fence_and_prose(self) -> None:
        text = 'Here you go:\n```json\n[{"q": "Is it red?"}]\n```\nEnjoy!'
        assert parse_json_list(text) == [{"q": "Is it red?"}]

    def test_trailing_commas(self) -> None:
        assert parse_json_list('[{"a": 1,}, {"a": 2},]') == [{"a": 1}, {"a": 2}]

    def test_single_quotes(self) -> None:
        assert parse_json_list("[{'question': 'Is it red?', 'answer': 'yes'}]") == [
            {"question": "Is it red?", "answer": "yes"}
        ]

    def test_truncated_list_keeps_the_complete_items(self) -> None:
        text = '[{"q": "one"}, {"q": "two, with a comma"}, {"q": "thr'
        assert parse_json_list(text) == [{"q": "one"}, {"q": "two, with a comma"}]

    def test_truncated_list_of_strings(self) -> None:
        assert parse_json_list('["a red fox", "a blue ca') == ["a red fox"]

    def test_list_under_a_key(self) -> None:
        assert parse_json_list('{"prompts": ["x", "y"]}', key="prompts") == ["x", "y"]

    @pytest.mark.parametrize(
        ("text", "reason"),
        [
            ("I cannot help with that.", "no JSON"),
            ('{"a": 1}', "expected a JSON list"),
            ('[{"q": "never closed', "cut off before its first item"),
        ],
    )
    def test_unrecoverable_output_says_why(self, text: str, reason: str) -> None:
        with pytest.raises(MalformedOutputError, match=reason):
            parse_json_list(text)
