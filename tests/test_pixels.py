"""Judge preprocessing: the shared tensor path against the models' own processors."""

import numpy
import pytest
import torch
from PIL import Image
from transformers import BlipImageProcessorPil, CLIPImageProcessorPil

from agfsync.errors import ConfigurationError
from agfsync.models import resolve_model
from agfsync.scoring import (
    AestheticScorer,
    CLIPScorer,
    JudgeImages,
    PixelRecipe,
    ScorerSpec,
    VQAScorer,
)
from agfsync.scoring.pixels import resize_float, resize_uint8

PROCESSORS = {
    "clip": CLIPImageProcessorPil(),  # resize the short side to 224, crop 224, bicubic
    "blip": BlipImageProcessorPil(size={"height": 96, "width": 96}),  # exact size, no crop
    "bilinear": CLIPImageProcessorPil(
        size={"shortest_edge": 64}, crop_size={"height": 48, "width": 64}, resample=2
    ),
}


def photo_like(width: int, height: int, seed: int) -> Image.Image:
    """Smooth colour fields, grain and a hard-edged square: what resampling meets in
    generated images (pure noise or flat colour would hide or exaggerate differences)."""
    rng = numpy.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=numpy.uint8))
    smooth = numpy.asarray(coarse.resize((width, height), Image.Resampling.BICUBIC), float)
    pixels = numpy.clip(smooth + rng.normal(0, 6, smooth.shape), 0, 255).astype(numpy.uint8)
    pixels[height // 4 : height // 2, width // 4 : width // 2] = rng.integers(0, 256, 3)
    return Image.fromarray(pixels)


IMAGES = [photo_like(w, h, seed) for seed, (w, h) in enumerate([(512, 512), (300, 451)])]


class TestPixelRecipe:
    def test_reads_the_processors_settings(self) -> None:
        clip = PixelRecipe.of(PROCESSORS["clip"])
        assert clip is not None
        assert (clip.shortest_edge, clip.size, clip.crop, clip.mode) == (
            224,
            None,
            (224, 224),
            "bicubic",
        )
        assert clip.rescale == pytest.approx(1 / 255)
        blip = PixelRecipe.of(PROCESSORS["blip"])
        assert blip is not None
        assert (blip.shortest_edge, blip.size, blip.crop) == (None, (96, 96), None)

    @pytest.mark.parametrize(
        "settings",
        [
            {"resample": Image.Resampling.LANCZOS},
            {"do_pad": True},
            {"crop_size": {"height": 256, "width": 256}},  # larger than the resized image
            {"size": {"shortest_edge": 224, "longest_edge": 300}},
        ],
    )
    def test_refuses_what_it_does_not_reproduce(self, settings: dict) -> None:
        assert PixelRecipe.of(CLIPImageProcessorPil(**settings)) is None

    def test_equal_settings_are_one_recipe(self) -> None:
        assert PixelRecipe.of(CLIPImageProcessorPil()) == PixelRecipe.of(PROCESSORS["clip"])
        assert PixelRecipe.of(PROCESSORS["clip"]) != PixelRecipe.of(PROCESSORS["blip"])


class TestAgainstTheProcessors:
    @pytest.mark.parametrize("processor", sorted(PROCESSORS))
    @pytest.mark.parametrize("resize", [resize_uint8, resize_float])
    def test_pixels_differ_by_rounding_only(self, processor: str, resize, monkeypatch) -> None:
        # resize_float is what an accelerator runs; here it runs on the CPU.
        monkeypatch.setattr("agfsync.scoring.pixels.resize_uint8", resize)
        recipe = PixelRecipe.of(PROCESSORS[processor])
        assert recipe is not None and recipe.std is not None
        for image in IMAGES:
            expected = PROCESSORS[processor]([image], return_tensors="pt").pixel_values
            ours = JudgeImages([image]).pixels(recipe, torch.device("cpu"))
            assert ours.shape == expected.shape
            levels = (ours - expected).abs() * torch.tensor(recipe.std).view(1, 3, 1, 1) * 255
            assert levels.max() < 1.01  # one uint8 level at most ...
            assert (levels > 0.5).float().mean() < 0.01  # ... on under 1% of the values
            assert levels.mean() > 0 or resize is resize_float  # not vacuous: it resized

    def test_the_processor_path_is_the_processor(self, tiny_clip_path: str) -> None:
        scorer = CLIPScorer(tiny_clip_path, device="cpu", preprocessing="processor")
        scorer.load()
        assert scorer.pixel_recipe is None
        expected = scorer.image_processor(IMAGES, return_tensors="pt").pixel_values
        assert torch.equal(scorer.pixel_values(JudgeImages(IMAGES)), expected)

    def test_vqa_scores_agree(self) -> None:
        path = resolve_model("tiny:blip2")
        questions = [["Is there a lighthouse?", "Is it night?"], ["Are there cats?"]]
        answers = {}
        for preprocessing in ("tensor", "processor"):
            scorer = VQAScorer(path, device="cpu", mode="probability", preprocessing=preprocessing)
            scorer.load()
            answers[preprocessing] = scorer.answer(IMAGES, questions)
        for ours, theirs in zip(answers["tensor"], answers["processor"], strict=True):
            assert ours == pytest.approx(theirs, abs=1e-3)


class TestSharing:
    def test_judges_with_one_input_size_resize_once(self, tiny_clip_path: str, monkeypatch) -> None:
        clip = CLIPScorer(tiny_clip_path, device="cpu")
        aesthetic = AestheticScorer(resolve_model("tiny:clip-vit-large"), device="cpu")
        for judge in (clip, aesthetic):
            judge.load()
        assert clip.pixel_recipe == aesthetic.pixel_recipe
        calls = []
        original = PixelRecipe.apply

        def counted(recipe: PixelRecipe, pixels: torch.Tensor) -> torch.Tensor:
            calls.append(pixels.shape[0])
            return original(recipe, pixels)

        monkeypatch.setattr(PixelRecipe, "apply", counted)
        shared = JudgeImages(IMAGES[:1] * 3)
        prompts = ["a lighthouse"] * 3
        together = clip.score(shared, prompts).values, aesthetic.score(shared, prompts).values
        assert len(calls) == 1  # one size, one chunk, one recipe: one resize for both
        alone = clip.score(IMAGES[:1] * 3, prompts).values
        assert torch.equal(together[0], alone)

    def test_images_of_several_sizes_keep_their_order(self) -> None:
        recipe = PixelRecipe.of(PROCESSORS["clip"])
        assert recipe is not None
        mixed = [IMAGES[0], IMAGES[1], IMAGES[0]]
        together = JudgeImages(mixed).pixels(recipe, torch.device("cpu"))
        for index, image in enumerate(mixed):
            alone = JudgeImages([image]).pixels(recipe, torch.device("cpu"))[0]
            assert torch.equal(together[index], alone)
        assert not torch.equal(together[0], together[1])


class TestSetting:
    def test_a_spec_passes_it_to_the_judge(self, tiny_clip_path: str) -> None:
        spec = ScorerSpec(name="clip", model=tiny_clip_path, preprocessing="processor")
        assert spec.create(device="cpu").preprocessing == "processor"
        assert ScorerSpec(name="clip", model=tiny_clip_path).preprocessing == "tensor"

    def test_unknown_values_are_refused_with_the_choices(self, tiny_clip_path: str) -> None:
        with pytest.raises(ConfigurationError, match="tensor or processor"):
            CLIPScorer(tiny_clip_path, preprocessing="gpu")  # type: ignore[arg-type]
