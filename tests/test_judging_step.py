"""ImageJudging as a distilabel step: several judges, weights, unreadable images."""

import math
from pathlib import Path

import pytest
from PIL import Image

from agfsync.models import resolve_model
from agfsync.scoring import ScorerSpec
from agfsync.steps import ImageJudging, PreferencePairSelection

QA = [
    {
        "question": "Is it red?",
        "answer": "yes",
        "element_type": "color",
        "element": "red",
        "valid": True,
    }
]


@pytest.fixture
def judged_rows(tiny_clip_path: str, tmp_path: Path) -> list[dict]:
    rows = []
    for prompt_id, colors in {
        "a": ["red", "blue", "green"],
        "b": ["white", "black", "gray"],
    }.items():
        paths = []
        for index, color in enumerate(colors):
            path = tmp_path / "gen" / prompt_id / f"{index}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (32, 32), color).save(path)
            paths.append(f"gen/{prompt_id}/{index}.png")
        rows.append({"prompt": f"a {colors[0]} square", "image_paths": paths, "qa_pairs": QA})
    (tmp_path / "gen" / "b" / "1.png").write_bytes(b"truncated")
    step = ImageJudging(
        name="judge_images",
        scorers=[
            ScorerSpec(name="clip", model=tiny_clip_path, weight=0.25),
            ScorerSpec(
                name="vqa",
                model=resolve_model("tiny:blip2"),
                weight=0.75,
                options={"mode": "probability"},
            ),
        ],
    )
    step.set_pipeline_artifacts_path(tmp_path)
    step.load()
    return next(step.process(rows))


class TestImageJudging:
    def test_declares_the_context_and_detail_columns_its_judges_need(
        self, tiny_clip_path: str
    ) -> None:
        step = ImageJudging(
            name="judge_images",
            scorers=[
                ScorerSpec(name="clip", model=tiny_clip_path),
                ScorerSpec(name="vqa", model="tiny:blip2"),
            ],
        )
        assert step.inputs == ["prompt", "image_paths", "qa_pairs"]
        assert step.outputs == [
            "clip_scores",
            "vqa_scores",
            "clip_truncated",
            "vqa_answers",
            "weighted_scores",
            "judging_errors",
        ]

    def test_weighted_score_combines_the_judges(self, judged_rows: list[dict]) -> None:
        row = judged_rows[0]
        assert len(row["clip_scores"]) == len(row["vqa_scores"]) == 3
        for clip, vqa, combined in zip(
            row["clip_scores"], row["vqa_scores"], row["weighted_scores"], strict=True
        ):
            assert combined == pytest.approx(0.25 * clip + 0.75 * vqa)
        assert [len(answers) for answers in row["vqa_answers"]] == [1, 1, 1]
        assert row["vqa_scores"][0] == pytest.approx(100 * row["vqa_answers"][0][0])
        assert row["judging_errors"] == [None, None, None]

    def test_unreadable_image_is_scored_nan_with_its_reason(self, judged_rows: list[dict]) -> None:
        row = judged_rows[1]
        assert math.isnan(row["clip_scores"][1]) and math.isnan(row["vqa_scores"][1])
        assert math.isnan(row["weighted_scores"][1])
        assert row["vqa_answers"][1] is None
        assert row["judging_errors"][1].startswith("unreadable image: gen/b/1.png")
        assert not math.isnan(row["weighted_scores"][0])

    def test_pair_selection_leaves_the_unreadable_image_out(self, judged_rows: list[dict]) -> None:
        selector = PreferencePairSelection(name="select_pairs")
        (paired,) = next(selector.process([dict(judged_rows[1])]))
        assert 1 not in (paired["chosen_index"], paired["rejected_index"])
