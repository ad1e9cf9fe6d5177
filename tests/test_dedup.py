"""Near-duplicate filtering: the two routes and the step's per-category report."""

import logging

import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from agfsync.models import resolve_model
from agfsync.steps import PromptDeduplication
from agfsync.text.dedup import SentenceEmbedder, embedding_duplicates, minhash_duplicates


class TestMinHash:
    def test_near_copies_are_dropped_and_the_first_kept(self) -> None:
        texts = [
            "a red fox sleeping in fresh snow under tall pine trees",
            "A red fox sleeping in fresh snow under tall pine trees.",
            "two cats playing with a ball of yarn on a sofa",
            "a red fox sleeping in fresh snow under tall pine trees!",
        ]
        assert minhash_duplicates(texts, threshold=0.8) == [1, 3]

    def test_different_texts_are_kept(self) -> None:
        texts = ["a bowl of ramen with egg", "a cyclist on a mountain road at dawn"]
        assert minhash_duplicates(texts, threshold=0.5) == []


class TestEmbeddingDuplicates:
    def test_cosine_at_or_above_threshold_is_a_duplicate(self) -> None:
        embeddings = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.6, 0.8]])
        # cos(0, 1) = 0.9939; cos(0, 3) = 0.6; cos(2, 3) = 0.8
        assert embedding_duplicates(embeddings, threshold=0.99) == [1]
        assert embedding_duplicates(embeddings, threshold=0.8) == [1, 3]

    def test_only_kept_prompts_can_make_later_ones_duplicates(self) -> None:
        # 1 duplicates 0 and is dropped; 2 is close to 1 but not to 0, so it stays.
        embeddings = torch.tensor([[1.0, 0.0], [0.95, 0.31], [0.81, 0.59]])
        assert embedding_duplicates(embeddings, threshold=0.95) == [1]


class TestSentenceEmbedder:
    def test_cls_pooled_and_normalized_like_bge(self, isolated_caches: dict[str, str]) -> None:
        path = resolve_model("tiny:bert")
        embedder = SentenceEmbedder(path, device="cpu")
        embedder.load()
        texts = ["a red fox", "two cats on a sofa"]
        ours = embedder.embed(texts)
        tokenizer, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path)
        with torch.no_grad():
            hidden = model(**tokenizer(texts, padding=True, return_tensors="pt")).last_hidden_state
        expected = torch.nn.functional.normalize(hidden[:, 0], dim=-1)
        assert torch.allclose(ours, expected, atol=1e-5)


class TestPromptDeduplicationStep:
    def test_drops_duplicates_and_reports_them_per_category(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        rows = [
            {"prompt": "a red fox asleep in deep snow at dusk", "category": "Animals"},
            {"prompt": "a red fox asleep in deep snow at dusk.", "category": "Animals"},
            {"prompt": "a bowl of ramen with a soft egg", "category": "Food"},
            {"prompt": "A bowl of ramen with a soft egg", "category": "Food"},
            {"prompt": "a sailboat on a calm lake", "category": "Transportation"},
        ]
        step = PromptDeduplication(name="dedup", method="minhash", threshold=0.8)
        step.load()
        with caplog.at_level(logging.INFO):
            kept = next(step.process([dict(row) for row in rows]))
        assert [row["prompt"] for row in kept] == [
            rows[0]["prompt"],
            rows[2]["prompt"],
            rows[4]["prompt"],
        ]
        assert "Near-duplicates removed from 'Animals': 1" in caplog.text
        assert "Near-duplicates removed from 'Food': 1" in caplog.text
        assert "removed in total: 2 of 5" in caplog.text
