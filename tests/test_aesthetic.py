"""The LAION aesthetic judge: the shipped head, the score, its 0–100 scale, its checks."""

from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import CLIPImageProcessor, CLIPModel

from agfsync.errors import ConfigurationError
from agfsync.models import resolve_model
from agfsync.scoring.aesthetic import (
    LAION_AESTHETIC_HEAD_PATH,
    AestheticHead,
    AestheticScorer,
)
from agfsync.scoring.pixels import Preprocessing

PROMPTS = ["a red lighthouse on a cliff", "two cats on a sofa", "a bowl of ramen"]

LAION_LAYER_SHAPES = {
    "layers.0.weight": (1024, 768),
    "layers.0.bias": (1024,),
    "layers.2.weight": (128, 1024),
    "layers.2.bias": (128,),
    "layers.4.weight": (64, 128),
    "layers.4.bias": (64,),
    "layers.6.weight": (16, 64),
    "layers.6.bias": (16,),
    "layers.7.weight": (1, 16),
    "layers.7.bias": (1,),
}
"""768 -> 1024 -> 128 -> 64 -> 16 -> 1, under the upstream `nn.Sequential` indices."""

LAION_TENSOR_SUMS = {
    "layers.0.weight": -11.765618821832504,
    "layers.0.bias": -0.24403834371469202,
    "layers.2.weight": 15.560105307348294,
    "layers.2.bias": -0.9988987763354089,
    "layers.4.weight": 2.5633030382896322,
    "layers.4.bias": 2.8384753465652466,
    "layers.6.weight": 0.09084817548864521,
    "layers.6.bias": 7.606064677238464,
    "layers.7.weight": 1.5261942148208618,
    "layers.7.bias": 0.9899932146072388,
}
"""float64 sums of each tensor of the original `sac+logos+ava1-l14-linearMSE.pth`
(christophschuhmann/improved-aesthetic-predictor @ 6934dd81792f), computed once from
that file so the test pins the real weights without needing it."""


@pytest.fixture(scope="module")
def tiny_clip_large_path(isolated_caches: dict[str, str]) -> str:
    """A tiny random CLIP whose image embeddings are 768 wide, like ViT-L/14's."""
    return resolve_model("tiny:clip-vit-large")


def _images() -> list[Image.Image]:
    generator = torch.Generator().manual_seed(0)
    sizes = [(32, 32), (48, 40), (40, 64)]
    return [
        Image.fromarray(
            (torch.rand(height, width, 3, generator=generator) * 255).to(torch.uint8).numpy()
        )
        for width, height in sizes
    ]


def _constant_head(directory: Path, rating: float) -> str:
    """A head file whose every prediction is `rating`: zero weights, last bias = rating."""
    state = {name: torch.zeros(shape) for name, shape in LAION_LAYER_SHAPES.items()}
    state["layers.7.bias"] = torch.tensor([rating])
    path = directory / f"constant-{rating}.safetensors"
    save_file(state, str(path))
    return str(path)


class TestShippedHead:
    def test_has_the_laion_layer_shapes(self) -> None:
        state = load_file(LAION_AESTHETIC_HEAD_PATH)
        assert {name: tuple(tensor.shape) for name, tensor in state.items()} == LAION_LAYER_SHAPES
        head = AestheticHead.from_file(LAION_AESTHETIC_HEAD_PATH)
        linears = [layer for layer in head.layers if isinstance(layer, torch.nn.Linear)]
        widths = [linears[0].in_features] + [layer.out_features for layer in linears]
        assert widths == [768, 1024, 128, 64, 16, 1]

    def test_holds_the_real_laion_weights(self) -> None:
        state = load_file(LAION_AESTHETIC_HEAD_PATH)
        for name, expected in LAION_TENSOR_SUMS.items():
            assert state[name].double().sum().item() == pytest.approx(expected, abs=1e-4), name

    def test_loads_in_eval_mode_and_is_deterministic(self) -> None:
        head = AestheticHead.from_file(LAION_AESTHETIC_HEAD_PATH)
        assert not head.training
        embeddings = torch.nn.functional.normalize(
            torch.randn(4, 768, generator=torch.Generator().manual_seed(0)), dim=-1
        )
        with torch.no_grad():
            assert torch.equal(head(embeddings), head(embeddings))
            assert head(embeddings).shape == (4,)


class TestAestheticScorer:
    # The processor path is the reference computation; the tensor path (the default)
    # differs by one pixel level on a few values (tests/test_pixels.py).
    @pytest.mark.parametrize(
        ("preprocessing", "tolerance"), [("processor", 1e-4), ("tensor", 0.01)]
    )
    def test_matches_an_independent_computation(
        self, tiny_clip_large_path: str, preprocessing: Preprocessing, tolerance: float
    ) -> None:
        scorer = AestheticScorer(
            tiny_clip_large_path, device="cpu", batch_size=2, preprocessing=preprocessing
        )
        scorer.load()
        images = _images()
        scores = scorer.score(images, PROMPTS).values

        model = CLIPModel.from_pretrained(tiny_clip_large_path).eval()
        processor = CLIPImageProcessor.from_pretrained(tiny_clip_large_path)
        weights = load_file(LAION_AESTHETIC_HEAD_PATH)
        with torch.no_grad():
            pixels = processor(images=images, return_tensors="pt")["pixel_values"]
            features = model.get_image_features(pixel_values=pixels)
            if not isinstance(features, torch.Tensor):  # transformers 5: a model output
                features = features.pooler_output
            hidden = torch.nn.functional.normalize(features, dim=-1)
            for index in (0, 2, 4, 6, 7):
                hidden = torch.nn.functional.linear(
                    hidden, weights[f"layers.{index}.weight"], weights[f"layers.{index}.bias"]
                )
        expected = hidden.squeeze(-1).clamp(0, 10) * 10
        # Not vacuous: the random tower's ratings fall inside the scale, unclamped.
        assert bool(((expected > 0) & (expected < 100)).all())
        assert scores.shape == (3,)
        assert scores.dtype == torch.float32
        assert torch.allclose(scores, expected, atol=tolerance)

    def test_ignores_prompts_and_handles_no_images(self, tiny_clip_large_path: str) -> None:
        scorer = AestheticScorer(tiny_clip_large_path, device="cpu")
        scorer.load()
        images = _images()
        assert torch.equal(
            scorer.score(images, PROMPTS).values, scorer.score(images, ["", "", ""]).values
        )
        assert scorer.score([], []).values.shape == (0,)

    @pytest.mark.parametrize(
        ("rating", "score"),
        [(12.0, 100.0), (10.0, 100.0), (5.5, 55.0), (0.0, 0.0), (-3.0, 0.0)],
    )
    def test_maps_ratings_to_0_100_and_clamps(
        self, tiny_clip_large_path: str, tmp_path: Path, rating: float, score: float
    ) -> None:
        scorer = AestheticScorer(
            tiny_clip_large_path, device="cpu", head=_constant_head(tmp_path, rating)
        )
        scorer.load()
        scores = scorer.score(_images(), PROMPTS).values
        assert torch.allclose(scores, torch.full((3,), score), atol=1e-5)

    def test_refuses_a_backbone_of_another_width(self, tiny_clip_path: str) -> None:
        scorer = AestheticScorer(tiny_clip_path, device="cpu")
        with pytest.raises(ConfigurationError, match=r"768-wide.*projects images to 16"):
            scorer.load()

    def test_refuses_a_head_of_other_shapes(self, tmp_path: Path) -> None:
        state = {name: torch.zeros(shape) for name, shape in LAION_LAYER_SHAPES.items()}
        state["layers.0.weight"] = torch.zeros(1024, 512)
        path = tmp_path / "head-512.safetensors"
        save_file(state, str(path))
        with pytest.raises(ConfigurationError, match=r"layers\.0\.weight: expected \(1024, 768\)"):
            AestheticHead.from_file(path)

    def test_refuses_a_head_that_is_not_safetensors(self, tmp_path: Path) -> None:
        path = tmp_path / "head.pth"
        torch.save({"layers.0.weight": torch.zeros(1)}, path)
        with pytest.raises(ConfigurationError, match="not a safetensors file"):
            AestheticHead.from_file(path)
        with pytest.raises(ConfigurationError, match="does not exist"):
            AestheticHead.from_file(tmp_path / "missing.safetensors")
