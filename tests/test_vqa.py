"""The VQA judge on a tiny BLIP-2 (ViT + Q-Former + T5) built from configs."""

import math
from typing import Any

import pytest
import torch
from PIL import Image
from transformers import Blip2ForConditionalGeneration, Blip2Processor

from agfsync.models import resolve_model
from agfsync.scoring.vqa import VQA_PROMPT, VQAScorer, answer_is_yes

IMAGES = [Image.new("RGB", (40, 40), color) for color in ("red", "navy", "olive")]
QA_PAIRS: list[list[dict[str, Any]]] = [
    [
        {"question": "Is the lighthouse red?", "valid": True},
        {"question": "Is there a cliff?", "valid": True},
        {"question": "Is it night?", "valid": False},
    ],
    [{"question": "Are there two cats?", "valid": True}],
    [{"question": "Is it flagged?", "valid": False}],
]


@pytest.fixture(scope="module")
def tiny_blip2_path(isolated_caches: dict[str, str]) -> str:
    return resolve_model("tiny:blip2")


def _scorer(path: str, **options: Any) -> VQAScorer:
    scorer = VQAScorer(path, device="cpu", **{"batch_size": 2, **options})
    scorer.load()
    return scorer


class TestAnswerIsYes:
    @pytest.mark.parametrize("text", ["yes", "Yes.", " YES, it is", "yes yes"])
    def test_yes_answers(self, text: str) -> None:
        assert answer_is_yes(text)

    @pytest.mark.parametrize("text", ["no", "", "yesterday", "not yes", "maybe"])
    def test_other_answers(self, text: str) -> None:
        assert not answer_is_yes(text)


class TestProbabilityMode:
    def test_matches_an_independent_forward_pass_per_question(self, tiny_blip2_path: str) -> None:
        scorer = _scorer(tiny_blip2_path, mode="probability")
        assert scorer.reuses_image_features
        _, answers = scorer.score(IMAGES, ["p"] * 3, qa_pairs=QA_PAIRS)
        assert answers is not None

        model = Blip2ForConditionalGeneration.from_pretrained(tiny_blip2_path).eval()
        processor = Blip2Processor.from_pretrained(tiny_blip2_path)
        yes = processor.tokenizer("yes", add_special_tokens=False).input_ids[0]
        no = processor.tokenizer("no", add_special_tokens=False).input_ids[0]
        expected = []
        for image, pairs in zip(IMAGES, QA_PAIRS, strict=True):
            row = []
            for pair in (p for p in pairs if p["valid"]):
                inputs = processor(
                    images=[image],
                    text=[VQA_PROMPT.format(question=pair["question"])],
                    return_tensors="pt",
                )
                with torch.no_grad():
                    logits = model(**inputs, decoder_input_ids=torch.zeros(1, 1, dtype=torch.long))
                both = logits.logits[0, 0, [yes, no]].softmax(dim=-1)
                row.append(both[0].item())
            expected.append(row)
        assert [len(row) for row in answers] == [2, 1, 0]
        for ours, theirs in zip(answers, expected, strict=True):
            assert ours == pytest.approx(theirs, abs=1e-4)

    def test_score_is_the_mean_yes_share_and_nan_without_questions(
        self, tiny_blip2_path: str
    ) -> None:
        scores, answers = _scorer(tiny_blip2_path, mode="probability").score(
            IMAGES, ["p"] * 3, qa_pairs=QA_PAIRS
        )
        assert answers is not None
        assert scores[0].item() == pytest.approx(100 * sum(answers[0]) / 2, abs=1e-4)
        assert scores[1].item() == pytest.approx(100 * answers[1][0], abs=1e-4)
        assert math.isnan(scores[2].item())

    def test_feature_reuse_gives_the_same_answers_as_full_passes(
        self, tiny_blip2_path: str
    ) -> None:
        reused = _scorer(tiny_blip2_path, mode="probability")
        full = _scorer(tiny_blip2_path, mode="probability", reuse_image_features=False)
        assert not full.reuses_image_features
        questions = [[p["question"] for p in pairs] for pairs in QA_PAIRS]
        for a, b in zip(
            reused.answer(IMAGES, questions), full.answer(IMAGES, questions), strict=True
        ):
            assert a == pytest.approx(b, abs=1e-4)


class ScriptedHead(torch.nn.Module):
    """An LM head that emits a fixed token sequence, one token per decoding step."""

    def __init__(self, tokens: list[int], vocab_size: int) -> None:
        super().__init__()
        self.tokens = tokens
        self.vocab_size = vocab_size
        self.step = 0

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = torch.full((*hidden.shape[:-1], self.vocab_size), -1e4)
        logits[..., self.tokens[min(self.step, len(self.tokens) - 1)]] = 1e4
        self.step += 1
        return logits


class TestAnswerMode:
    @pytest.mark.parametrize(("word", "expected"), [("yes", 100.0), ("no", 0.0)])
    def test_generated_answers_are_matched(
        self, tiny_blip2_path: str, word: str, expected: float
    ) -> None:
        scorer = _scorer(tiny_blip2_path, mode="answer", batch_size=8)
        tokenizer = scorer.processor.tokenizer
        script = [*tokenizer(word, add_special_tokens=False).input_ids, tokenizer.eos_token_id]
        language_model = scorer.vlm.language_model
        language_model.lm_head = ScriptedHead(script, language_model.config.vocab_size)
        scores, answers = scorer.score(IMAGES[:2], ["p"] * 2, qa_pairs=QA_PAIRS[:2])
        assert scores.tolist() == [expected, expected]
        assert answers == [[expected / 100] * 2, [expected / 100]]
