"""Near-duplicate filtering of generated prompts, reported per category."""

from collections import Counter
from typing import TYPE_CHECKING, Literal

from distilabel.mixins.runtime_parameters import RuntimeParameter
from distilabel.steps import GlobalStep, StepInput
from pydantic import Field

from agfsync.run.cache import UpstreamSignatureMixin
from agfsync.run.preflight import ModelNeed
from agfsync.text.dedup import SentenceEmbedder, embedding_duplicates, minhash_duplicates

if TYPE_CHECKING:
    from distilabel.typing import StepOutput


class PromptDeduplication(GlobalStep, UpstreamSignatureMixin):
    """Drops prompts too similar to an earlier one, as AGFSync did (BGE-large cosine
    similarity >= 0.90), or with model-free MinHash for CPU-only runs.

    It sees every prompt at once (a global step), keeps the first of each group of
    near-duplicates and logs how many were removed per category. distilabel's own
    `MinHashDedup` only flags rows (and tokenizes words with nltk) and its
    `EmbeddingDedup` needs a faiss index, so this step does both routes itself.

    Runtime parameters:
        - `method`: `embedding` (default, as the paper) or `minhash`.
        - `threshold`: similarity at or above which a prompt is a duplicate (0.9).
        - `embedding_model`: sentence encoder for the embedding route.

    Input columns:
        - prompt, category (`str`).

    Categories:
        - filtering

    Examples:
        Drop near-duplicates without a model (MinHash):

        ```python
        from agfsync.steps import PromptDeduplication

        dedup = PromptDeduplication(method="minhash", threshold=0.8)
        dedup.load()
        kept = next(
            dedup.process(
                [
                    {"prompt": "a red fox in the snow at dawn", "category": "Animals"},
                    {"prompt": "a red fox in the snow at dawn.", "category": "Animals"},
                    {"prompt": "a lighthouse on a cliff in a storm", "category": "Places"},
                ]
            )
        )
        # two rows: the second fox is a duplicate of the first
        ```
    """

    method: RuntimeParameter[Literal["embedding", "minhash"]] = Field(
        default="embedding", description="embedding (as the paper) or minhash (no model)."
    )
    threshold: RuntimeParameter[float] = Field(
        default=0.9, description="Similarity at or above which a prompt is dropped (paper: 0.9)."
    )
    embedding_model: RuntimeParameter[str] = Field(
        default="BAAI/bge-large-en-v1.5",
        description="Sentence encoder of the embedding route (paper: BGE-large).",
    )
    device: RuntimeParameter[str] | None = Field(default=None, description="torch device.")

    def models_to_load(self) -> list[ModelNeed]:
        """The sentence encoder of the embedding route, for the run's preflight check."""
        if self.method != "embedding":
            return []
        return [
            ModelNeed(
                self.embedding_model,
                f"{self.name}.embedding_model",
                alternative="use --dedup minhash, which needs no model",
            )
        ]

    @property
    def inputs(self) -> list[str]:
        return ["prompt", "category"]

    @property
    def outputs(self) -> list[str]:
        return []

    def process(self, inputs: StepInput) -> "StepOutput":
        # Rows without a prompt (a failed generation) pass through with their reason.
        positions = [index for index, row in enumerate(inputs) if row["prompt"]]
        prompts = [inputs[index]["prompt"] for index in positions]
        if self.method == "minhash":
            found = minhash_duplicates(prompts, threshold=self.threshold)
        else:
            embedder = SentenceEmbedder(self.embedding_model, device=self.device)
            embedder.load()
            found = embedding_duplicates(embedder.embed(prompts), self.threshold)
        duplicates = {positions[index] for index in found}
        removed = Counter(inputs[index]["category"] for index in duplicates)
        for category, count in sorted(removed.items()):
            self._logger.info(f"Near-duplicates removed from {category!r}: {count}")
        self._logger.info(f"Near-duplicates removed in total: {len(duplicates)} of {len(inputs)}")
        yield [row for index, row in enumerate(inputs) if index not in duplicates]
