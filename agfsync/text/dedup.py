"""Near-duplicate prompts: which ones to drop, keeping the first of each group.

AGFSync removed prompts whose BGE-large embeddings have cosine similarity >= 0.90
with an earlier one. The embedding route does the same with any sentence-embedding
model; the MinHash route needs no model (character 5-gram shingles, Jaccard
similarity estimated by MinHash LSH) for CPU-only runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from agfsync.models import resolve_device, resolve_model


def minhash_duplicates(
    texts: Sequence[str], threshold: float = 0.9, num_perm: int = 128, shingle: int = 5
) -> list[int]:
    """Indices of texts whose estimated Jaccard similarity to an earlier text is
    >= `threshold`."""
    from datasketch import MinHash, MinHashLSH

    index = MinHashLSH(threshold=threshold, num_perm=num_perm)
    duplicates = []
    for position, text in enumerate(texts):
        normalized = " ".join(text.lower().split())
        signature = MinHash(num_perm=num_perm, seed=1)
        for start in range(max(1, len(normalized) - shingle + 1)):
            signature.update(normalized[start : start + shingle].encode())
        if index.query(signature):
            duplicates.append(position)
        else:
            index.insert(str(position), signature)
    return duplicates


def embedding_duplicates(embeddings: torch.Tensor, threshold: float = 0.9) -> list[int]:
    """Indices whose cosine similarity to an earlier *kept* embedding is >= `threshold`."""
    normalized = torch.nn.functional.normalize(embeddings.float(), dim=-1)
    kept: list[int] = []
    duplicates = []
    for position in range(len(normalized)):
        if kept and bool((normalized[kept] @ normalized[position] >= threshold).any()):
            duplicates.append(position)
        else:
            kept.append(position)
    return duplicates


class SentenceEmbedder:
    """CLS-pooled, L2-normalized sentence embeddings (the BGE recipe) from any
    transformers encoder; default `BAAI/bge-large-en-v1.5`, as AGFSync used BGE-large."""

    def __init__(
        self, model: str = "BAAI/bge-large-en-v1.5", device: str | None = None, batch_size: int = 64
    ) -> None:
        self.model = model
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.encoder: Any = None
        self.tokenizer: Any = None

    def load(self) -> None:
        from transformers import AutoModel, AutoTokenizer

        path = resolve_model(self.model)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        encoder: Any = AutoModel.from_pretrained(path)
        self.encoder = encoder.to(self.device).eval()

    @torch.inference_mode()
    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        chunks = []
        for start in range(0, len(texts), self.batch_size):
            tokens = self.tokenizer(
                list(texts[start : start + self.batch_size]),
                padding=True,
                truncation=True,
                return_tensors="pt",
            ).to(self.device)
            hidden = self.encoder(**tokens).last_hidden_state[:, 0]
            chunks.append(torch.nn.functional.normalize(hidden.float(), dim=-1).cpu())
        return torch.cat(chunks) if chunks else torch.empty(0)
