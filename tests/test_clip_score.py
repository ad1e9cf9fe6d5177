import numpy
import pytest
import torch
from PIL import Image
from transformers import CLIPModel, CLIPProcessor

from agfsync.scoring import CLIPScorer, PickScorer

PROMPTS = ["a red lighthouse on a cliff", "two cats on a sofa", "a bowl of ramen"]


class _TensorFeaturesCLIP(CLIPModel):
    """torchmetrics 1.9 expects the transformers-4 `get_*_features`, which returned
    the projected embedding as a tensor; transformers 5 wraps it in `pooler_output`."""

    def get_image_features(self, *args, **kwargs):
        return super().get_image_features(*args, **kwargs).pooler_output

    def get_text_features(self, *args, **kwargs):
        return super().get_text_features(*args, **kwargs).pooler_output


def _images() -> list[Image.Image]:
    generator = torch.Generator().manual_seed(0)
    return [
        Image.fromarray((torch.rand(32, 32, 3, generator=generator) * 255).to(torch.uint8).numpy())
        for _ in PROMPTS
    ]


class TestCLIPScorer:
    def test_matches_an_independent_forward_pass(self, tiny_clip_path: str) -> None:
        scorer = CLIPScorer(tiny_clip_path, device="cpu", batch_size=2)
        scorer.load()
        images = _images()
        scores = scorer.score(images, PROMPTS).values

        model = CLIPModel.from_pretrained(tiny_clip_path).eval()
        processor = CLIPProcessor.from_pretrained(tiny_clip_path)
        with torch.no_grad():
            output = model(
                **processor(text=PROMPTS, images=images, return_tensors="pt", padding=True)
            )
        expected = 100 * torch.diagonal(output.image_embeds @ output.text_embeds.T).clamp(min=0)
        assert torch.allclose(scores, expected, atol=1e-4)

    def test_matches_torchmetrics_clip_score(self, tiny_clip_path: str) -> None:
        from torchmetrics.multimodal.clip_score import CLIPScore

        def tiny_clip() -> tuple[CLIPModel, CLIPProcessor]:
            return (
                _TensorFeaturesCLIP.from_pretrained(tiny_clip_path),
                CLIPProcessor.from_pretrained(tiny_clip_path),
            )

        scorer = CLIPScorer(tiny_clip_path, device="cpu")
        scorer.load()
        images = _images()
        ours = scorer.score(images, PROMPTS).values
        for image, prompt, score in zip(images, PROMPTS, ours, strict=True):
            metric = CLIPScore(model_name_or_path=tiny_clip)
            pixels = torch.from_numpy(numpy.array(image)).permute(2, 0, 1)
            metric.update(pixels, prompt)
            assert score.item() == pytest.approx(metric.compute().item(), abs=1e-4)

    def test_scores_are_on_a_0_to_100_scale(self, tiny_clip_path: str) -> None:
        scorer = CLIPScorer(tiny_clip_path, device="cpu")
        scorer.load()
        scores = scorer.score(_images(), PROMPTS).values
        assert scores.shape == (3,)
        assert bool(((scores >= 0) & (scores <= 100)).all())


class TestTruncation:
    def test_prompts_past_the_context_are_flagged(self, tiny_clip_path: str) -> None:
        scorer = CLIPScorer(tiny_clip_path, device="cpu")
        scorer.load()
        long_prompt = "a very long and detailed description " * 10
        _, truncated = scorer.score(_images()[:2], ["a cat", long_prompt])
        assert truncated == [False, True]


class TestPickScorer:
    def test_uses_the_model_logit_scale(self, tiny_clip_path: str) -> None:
        scorer = PickScorer(tiny_clip_path, device="cpu", processor=tiny_clip_path)
        scorer.load()
        images = _images()
        scores = scorer.score(images, PROMPTS).values
        model = CLIPModel.from_pretrained(tiny_clip_path).eval()
        processor = CLIPProcessor.from_pretrained(tiny_clip_path)
        with torch.no_grad():
            output = model(
                **processor(text=PROMPTS, images=images, return_tensors="pt", padding=True)
            )
        expected = torch.diagonal(output.logits_per_image).clamp(min=0, max=100)
        assert model.logit_scale.exp().item() != pytest.approx(100.0)
        assert torch.allclose(scores, expected, atol=1e-4)
