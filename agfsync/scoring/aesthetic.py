"""Aesthetic score: LAION's "improved aesthetic predictor" on CLIP ViT-L/14 image embeddings.

The predictor (christophschuhmann/improved-aesthetic-predictor, checkpoint
`sac+logos+ava1-l14-linearMSE`) is a small head trained by regression on human
1–10 ratings (SAC, LAION-Logos, AVA) over the L2-normalized image embeddings of
OpenAI's CLIP ViT-L/14. The head ships with agfsync
(`agfsync/data/laion_aesthetic_head.safetensors`, Apache-2.0, see
`agfsync/data/README.md`), so only the CLIP backbone is downloaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from agfsync.errors import ConfigurationError
from agfsync.models import resolve_model
from agfsync.scoring.base import PROCESSOR_BACKEND, ImageScorer, Scores
from agfsync.scoring.pixels import JudgeImages, Preprocessing

DEFAULT_AESTHETIC_BACKBONE = "openai/clip-vit-large-patch14"
"""The CLIP the LAION head was trained on (OpenAI ViT-L/14, 224 px); use it as `model`."""

LAION_AESTHETIC_HEAD_PATH = (
    Path(__file__).resolve().parent.parent / "data" / "laion_aesthetic_head.safetensors"
)
"""The shipped LAION head, the original state dict re-saved as safetensors (same keys)."""

AESTHETIC_EMBEDDING_WIDTH = 768
"""Width of the image embeddings the head reads: CLIP ViT-L/14's projection width."""

LAION_RATING_MAX = 10.0
"""Top of the 1–10 rating scale the head was trained to predict."""


class AestheticHead(torch.nn.Module):
    """The LAION predictor's MLP, 768 -> 1024 -> 128 -> 64 -> 16 -> 1, layer for layer.

    It has no activations (the upstream code has its ReLUs commented out), so it
    is an affine map trained with dropout; the dropouts are kept so the module's
    state-dict keys (`layers.0`, `.2`, `.4`, `.6`, `.7`) are the upstream ones and
    any checkpoint of the upstream repository loads unchanged. It is always run
    in eval mode, where dropout does nothing.
    """

    def __init__(self) -> None:
        super().__init__()
        self.layers = torch.nn.Sequential(
            torch.nn.Linear(AESTHETIC_EMBEDDING_WIDTH, 1024),
            torch.nn.Dropout(0.2),
            torch.nn.Linear(1024, 128),
            torch.nn.Dropout(0.2),
            torch.nn.Linear(128, 64),
            torch.nn.Dropout(0.1),
            torch.nn.Linear(64, 16),
            torch.nn.Linear(16, 1),
        )

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Predicted rating (about 1–10) per L2-normalized embedding, shape `(N,)`."""
        return self.layers(embeddings).squeeze(-1)

    @classmethod
    def from_file(cls, path: str | Path) -> AestheticHead:
        """Load a head from a safetensors state dict, checking every key and shape.

        A file with other keys or shapes (another head, a `.pth`, a head for a
        different CLIP width) is refused with the differences listed, rather than
        half-loaded or failing later with a bare matrix-shape error.
        """
        path = Path(path)
        if not path.is_file():
            raise ConfigurationError(f"Aesthetic head {str(path)!r} does not exist.")
        try:
            state = load_file(path)
        except SafetensorError as error:
            raise ConfigurationError(
                f"Aesthetic head {str(path)!r} is not a safetensors file ({error}); convert a "
                "`.pth` state dict with `safetensors.torch.save_file(torch.load(...))`."
            ) from error
        head = cls()
        expected = {name: tuple(tensor.shape) for name, tensor in head.state_dict().items()}
        found = {name: tuple(tensor.shape) for name, tensor in state.items()}
        if found != expected:
            problems = [
                f"{name}: expected {expected.get(name, 'no such tensor')}, "
                f"found {found.get(name, 'missing')}"
                for name in sorted(expected.keys() | found.keys())
                if expected.get(name) != found.get(name)
            ]
            raise ConfigurationError(
                f"Aesthetic head {str(path)!r} is not a LAION aesthetic MLP "
                f"({AESTHETIC_EMBEDDING_WIDTH} -> 1024 -> 128 -> 64 -> 16 -> 1): "
                + "; ".join(problems)
                + "."
            )
        head.load_state_dict({name: tensor.float() for name, tensor in state.items()})
        return head.requires_grad_(False).eval()


class AestheticScorer(ImageScorer):
    """Aesthetic quality: `10 * clamp(LAION rating, 0, 10)`, from a CLIP ViT-L/14 embedding.

    AGFSync scored aesthetics with VILA (Google's VILA-R, 0–1, times 100), which
    is released only as a TF-Hub model with no PyTorch weights; the LAION
    improved aesthetic predictor is the open, widely used stand-in. `model` is the
    CLIP backbone, a full CLIP checkpoint (Hub id, folder or `tiny:<name>`); the
    head was trained on `openai/clip-vit-large-patch14` (`DEFAULT_AESTHETIC_BACKBONE`)
    and its scores mean something only with those embeddings. Any backbone whose
    image projection is 768 wide loads (the tiny test models do); others are refused.

    Scale: the head predicts a mean human rating on LAION's 1–10 scale (typical
    images land between 4 and 7). It is clamped to [0, 10] and multiplied by 10,
    a pure rescaling (a rating of 5.5 scores 55) that puts it on the same 0–100
    footing as the paper's VILA x 100 and the other judges of the weighted sum;
    the clamp only catches the rare predictions outside the rating range (the
    head is affine, so it is unbounded).

    `head` is a safetensors state dict with the upstream key names (see
    `AestheticHead`); None means the LAION `sac+logos+ava1-l14-linearMSE` head
    shipped with agfsync. The head runs in float32 whatever `dtype` the backbone
    uses, as the embeddings are upcast before normalizing.
    """

    name = "aesthetic"

    def __init__(
        self,
        model: str,
        *,
        device: str | None = None,
        dtype: str = "auto",
        batch_size: int = 32,
        preprocessing: Preprocessing = "tensor",
        head: str | None = None,
    ) -> None:
        super().__init__(
            model, device=device, dtype=dtype, batch_size=batch_size, preprocessing=preprocessing
        )
        self.head_path = Path(head) if head is not None else LAION_AESTHETIC_HEAD_PATH
        self.vision: Any = None
        self.projection: Any = None
        self.head: AestheticHead | None = None

    def load(self) -> None:
        from transformers import AutoImageProcessor, CLIPModel

        # The head first: a wrong file fails in milliseconds, before a 1.7 GB download.
        head = AestheticHead.from_file(self.head_path)
        path = resolve_model(self.model)
        clip: Any = CLIPModel.from_pretrained(path, dtype=self.dtype)
        width = clip.visual_projection.out_features
        if width != AESTHETIC_EMBEDDING_WIDTH:
            raise ConfigurationError(
                f"The aesthetic head reads {AESTHETIC_EMBEDDING_WIDTH}-wide CLIP ViT-L/14 image "
                f"embeddings, but {self.model!r} projects images to {width} dimensions; use "
                f"{DEFAULT_AESTHETIC_BACKBONE!r} or another {AESTHETIC_EMBEDDING_WIDTH}-wide CLIP."
            )
        self.image_processor = AutoImageProcessor.from_pretrained(path, backend=PROCESSOR_BACKEND)
        # Only the vision tower and its projection go to the device: the text tower
        # (123M of ViT-L/14's 428M parameters) is never used and is freed with `clip`.
        self.vision = clip.vision_model.to(self.device).eval()
        self.projection = clip.visual_projection.to(self.device).eval()
        self.head = head.to(self.device)

    @torch.inference_mode()
    def _score(self, images: JudgeImages, prompts: Sequence[str], **context: Any) -> Scores:
        """One 0–100 score per image; the prompts are not used (aesthetics ignore them)."""
        if self.head is None:
            raise RuntimeError("AestheticScorer.score called before load().")
        scores = []
        for start in range(0, len(images), self.batch_size):
            pixel_values = self.pixel_values(images, start, start + self.batch_size)
            embeddings = self._embed_images(pixel_values)
            ratings = self.head(embeddings)
            scores.append(ratings.clamp(0.0, LAION_RATING_MAX) * (100.0 / LAION_RATING_MAX))
        return Scores(torch.cat(scores).float().cpu() if scores else torch.empty(0))

    def _embed_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """L2-normalized float32 CLIP image embeddings (`get_image_features`, by parts)."""
        pooled = self.vision(pixel_values=pixel_values).pooler_output
        return torch.nn.functional.normalize(self.projection(pooled).float(), dim=-1)
