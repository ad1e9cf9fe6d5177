"""The image engine on the tiny SD-1.x pipeline: seeds, embedding noise, batching."""

from typing import Any

import numpy
import pytest
import torch
from diffusers import StableDiffusionPipeline

from agfsync.errors import ConfigurationError
from agfsync.generation import (
    CandidateImageGenerator,
    EngineConfig,
    GenerationConfig,
    calls_to_repeat,
    derive_seed,
    plan_jobs,
)
from agfsync.models import resolve_model

PROMPTS = ["a red lighthouse on a cliff", "two cats on a sofa"]
IDS = ["p0", "p1"]


class CallRecorder:
    """Spies on the real diffusers pipeline call: records each batch's conditioning
    and can raise one simulated out-of-memory error for batches above a size."""

    def __init__(self, fail_first_call_above: int | None = None) -> None:
        self.calls: list[dict[str, Any]] = []
        self.fail_first_call_above = fail_first_call_above

    def wrap(self, original: Any) -> Any:
        def call(pipeline: Any, **kwargs: Any) -> Any:
            batch = kwargs["prompt_embeds"].shape[0]
            self.calls.append({"batch": batch, "prompt_embeds": kwargs["prompt_embeds"].clone()})
            if self.fail_first_call_above is not None and batch > self.fail_first_call_above:
                self.fail_first_call_above = None
                raise torch.OutOfMemoryError("simulated")
            return original(pipeline, **kwargs)

        return call


def _record(monkeypatch: pytest.MonkeyPatch, **options: Any) -> CallRecorder:
    recorder = CallRecorder(**options)
    monkeypatch.setattr(
        StableDiffusionPipeline, "__call__", recorder.wrap(StableDiffusionPipeline.__call__)
    )
    return recorder


def _generator(tiny_sd_path: str, batch_size: int = 8) -> CandidateImageGenerator:
    generator = CandidateImageGenerator(
        tiny_sd_path, EngineConfig(device="cpu", batch_size=batch_size)
    )
    generator.load()
    return generator


def _render(generator: CandidateImageGenerator, config: GenerationConfig) -> list[numpy.ndarray]:
    jobs = plan_jobs(IDS, config)
    return [numpy.array(image) for _, image in generator.generate(PROMPTS, jobs, config)]


class TestSeeds:
    def test_derive_seed_is_stable_and_distinct(self) -> None:
        assert derive_seed(0, "p0", 1) == derive_seed(0, "p0", 1)
        seeds = {derive_seed(run, pid, i) for run in (0, 1) for pid in IDS for i in range(8)}
        assert len(seeds) == 32
        assert all(0 <= seed < 2**63 for seed in seeds)

    def test_image_zero_is_clean_and_others_get_sigma(self) -> None:
        config = GenerationConfig(num_images=4, noise_sigma=[0.1, 0.2, 0.3])
        assert [job.sigma for job in plan_jobs(["p"], config)] == [0.0, 0.1, 0.2, 0.3]

    def test_sigma_list_must_cover_the_noised_images(self) -> None:
        with pytest.raises(ValueError, match="needs 3"):
            GenerationConfig(num_images=4, noise_sigma=[0.1]).sigmas()


class TestCallsToRepeat:
    def test_a_lost_image_brings_back_its_whole_call(self) -> None:
        jobs = plan_jobs(["p0", "p1", "p2"], GenerationConfig(num_images=4))  # 12 jobs
        assert calls_to_repeat(jobs, {jobs[5]}, batch_size=4) == jobs[4:8]
        assert calls_to_repeat(jobs, {jobs[1], jobs[11]}, batch_size=5) == jobs[:5] + jobs[10:]
        assert calls_to_repeat(jobs, set(), batch_size=4) == []

    def test_the_repeated_call_reproduces_any_lost_image_exactly(self, tiny_sd_path: str) -> None:
        """Rendered alone, some of these images come out different in a few pixels (the
        batch changes the numerics); repeated with their whole call, none does."""
        generator = CandidateImageGenerator(tiny_sd_path, EngineConfig(device="cpu", batch_size=4))
        generator.load()
        config = GenerationConfig(num_images=4, num_inference_steps=2)
        ids = [f"p{index}" for index in range(8)]
        prompts = [f"prompt number {index} with a cat" for index in range(8)]
        jobs = plan_jobs(ids, config)
        first = {
            job: numpy.array(image) for job, image in generator.generate(prompts, jobs, config)
        }
        for lost in jobs[:12]:
            again = dict(generator.generate(prompts, calls_to_repeat(jobs, {lost}, 4), config))
            assert numpy.array_equal(numpy.array(again[lost]), first[lost]), lost


class TestCandidateImageGenerator:
    def test_same_seed_gives_identical_pixels(self, tiny_sd_path: str) -> None:
        config = GenerationConfig(num_images=3, num_inference_steps=3)
        generator = _generator(tiny_sd_path)
        first, second = _render(generator, config), _render(generator, config)
        assert all(numpy.array_equal(a, b) for a, b in zip(first, second, strict=True))

    def test_candidates_of_a_prompt_differ(self, tiny_sd_path: str) -> None:
        config = GenerationConfig(num_images=3, num_inference_steps=3)
        images = _render(_generator(tiny_sd_path), config)
        assert not numpy.array_equal(images[0], images[1])

    def test_sigma_zero_gives_identical_conditioning(
        self, tiny_sd_path: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        generator = _generator(tiny_sd_path)
        recorder = _record(monkeypatch)
        _render(generator, GenerationConfig(num_images=3, num_inference_steps=2, noise_sigma=0.0))
        embeds = recorder.calls[0]["prompt_embeds"]
        assert torch.equal(embeds[0], embeds[1]) and torch.equal(embeds[0], embeds[2])

    def test_noise_leaves_image_zero_clean_and_changes_the_others(
        self, tiny_sd_path: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        generator = _generator(tiny_sd_path)
        clean = generator.encode_prompts(PROMPTS[:1], GenerationConfig())["prompt_embeds"][0]
        recorder = _record(monkeypatch)
        _render(generator, GenerationConfig(num_images=3, num_inference_steps=2, noise_sigma=0.5))
        embeds = recorder.calls[0]["prompt_embeds"]
        assert torch.equal(embeds[0], clean)
        assert not torch.equal(embeds[1], clean)
        assert not torch.equal(embeds[1], embeds[2])
        assert (embeds[1] - clean).std().item() == pytest.approx(0.5, rel=0.2)

    @pytest.mark.parametrize("option", ["vae_slicing", "vae_tiling", "channels_last", "fuse_qkv"])
    def test_engine_options_keep_the_images(self, tiny_sd_path: str, option: str) -> None:
        config = GenerationConfig(num_images=3, num_inference_steps=2)
        plain = _render(_generator(tiny_sd_path), config)
        options: dict[str, Any] = {option: True}
        other = CandidateImageGenerator(tiny_sd_path, EngineConfig(device="cpu", **options))
        other.load()
        unet = other.pipeline.unet
        if option == "fuse_qkv":  # the option did act: the projections are fused
            assert any(type(p).__name__.startswith("Fused") for p in unet.attn_processors.values())
        if option == "channels_last":
            weight = next(p for p in unet.parameters() if p.dim() == 4)
            assert weight.is_contiguous(memory_format=torch.channels_last)
        for a, b in zip(plain, _render(other, config), strict=True):
            assert numpy.abs(a.astype(int) - b.astype(int)).max() <= 1

    def test_another_vae_is_used_instead(self, tiny_sd_path: str, tmp_path) -> None:
        from diffusers import AutoencoderKL

        vae = AutoencoderKL.from_pretrained(tiny_sd_path, subfolder="vae")
        vae.register_to_config(force_upcast=False)  # as the fp16-safe SDXL VAE ships
        with torch.no_grad():
            vae.decoder.conv_out.bias.add_(0.5)  # a visibly different decoder
        vae.save_pretrained(tmp_path / "vae")
        config = GenerationConfig(num_images=2, num_inference_steps=2)
        swapped = CandidateImageGenerator(
            tiny_sd_path, EngineConfig(device="cpu", vae=str(tmp_path / "vae"))
        )
        swapped.load()
        assert swapped.pipeline.vae.config.force_upcast is False
        plain = _render(_generator(tiny_sd_path), config)
        brighter = _render(swapped, config)
        assert all(
            (b.astype(int) >= a.astype(int)).all() for a, b in zip(plain, brighter, strict=True)
        )
        assert any((b != a).any() for a, b in zip(plain, brighter, strict=True))

    def test_the_fast_sampling_setting_loads_its_scheduler(self, tiny_sd_path: str) -> None:
        from agfsync.sampling import SAMPLING_PRESETS, sampling_settings

        fast = sampling_settings("fast")
        assert fast == SAMPLING_PRESETS["fast"] and fast["num_inference_steps"] < 50
        generator = CandidateImageGenerator(
            tiny_sd_path, EngineConfig(device="cpu", scheduler=fast["scheduler"])
        )
        generator.load()
        assert type(generator.pipeline.scheduler).__name__ == fast["scheduler"]
        assert generator.pipeline.scheduler.config.algorithm_type == "dpmsolver++"
        with pytest.raises(ConfigurationError, match="paper, fast"):
            sampling_settings("fastest")

    def test_generate_sampling_sets_the_image_steps_fields(self) -> None:
        from agfsync.pipelines import build_preset
        from agfsync.run.preset import RunOptions, _parameters

        pipeline = build_preset("agfsync-sd15")
        fast = _parameters(pipeline, RunOptions(sampling="fast"))["generate_images"]
        assert fast == {"scheduler": "DPMSolverMultistepScheduler", "num_inference_steps": 20}
        paper = _parameters(pipeline, RunOptions(sampling="paper"))["generate_images"]
        assert paper == {"num_inference_steps": 50}  # and the model's own scheduler
        assert pipeline.dag.get_step("generate_images")["step"].num_inference_steps == 50

    def test_out_of_memory_halves_the_batch_and_keeps_every_image(
        self, tiny_sd_path: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        config = GenerationConfig(num_images=3, num_inference_steps=2)
        generator = _generator(tiny_sd_path, batch_size=6)
        recorder = _record(monkeypatch, fail_first_call_above=3)
        jobs = plan_jobs(IDS, config)
        rendered = [job for job, _ in generator.generate(PROMPTS, jobs, config)]
        assert rendered == jobs
        assert [call["batch"] for call in recorder.calls] == [6, 3, 3]


def _loaded(reference: str) -> CandidateImageGenerator:
    generator = CandidateImageGenerator(resolve_model(reference), EngineConfig(device="cpu"))
    generator.load()
    return generator


class TestPipelineFamilies:
    """Every family with embedding noise: image 0 ignores sigma, the others follow it."""

    @pytest.mark.parametrize(
        ("reference", "size"),
        [
            ("tiny:stable-diffusion", None),
            ("tiny:stable-diffusion-xl", None),
            ("tiny:pixart-sigma", None),
            ("tiny:stable-diffusion-3", None),
            # FLUX's default is a fixed 128x128 latent grid (256 px with the tiny VAE,
            # about 1 s on a CPU); at 64 px the same pipeline takes hundredths of one.
            ("tiny:flux", 64),
        ],
    )
    def test_sigma_changes_only_the_noised_images(
        self, reference: str, size: int | None, isolated_caches: dict[str, str]
    ) -> None:
        generator = _loaded(reference)
        assert generator.supports_embedding_noise
        rendered = {}
        for sigma in (0.0, 0.5):
            config = GenerationConfig(
                num_images=2, num_inference_steps=2, noise_sigma=sigma, height=size, width=size
            )
            jobs = plan_jobs(["p"], config)
            rendered[sigma] = [
                numpy.array(i) for _, i in generator.generate(["a cat"], jobs, config)
            ]
        assert numpy.array_equal(rendered[0.0][0], rendered[0.5][0])
        assert not numpy.array_equal(rendered[0.0][1], rendered[0.5][1])

    @pytest.mark.parametrize(
        ("reference", "pooled"),
        [
            ("tiny:stable-diffusion", False),
            ("tiny:stable-diffusion-xl", True),
            ("tiny:pixart-sigma", False),
            ("tiny:stable-diffusion-3", True),
            ("tiny:flux", True),
        ],
    )
    def test_encode_prompts_returns_the_embeddings_to_noise(
        self, reference: str, pooled: bool, isolated_caches: dict[str, str]
    ) -> None:
        encoded = _loaded(reference).encode_prompts(["a cat"], GenerationConfig())
        assert encoded["prompt_embeds"].ndim == 3
        assert encoded["prompt_embeds"].shape[0] == 1
        if pooled:
            assert encoded["pooled_prompt_embeds"].ndim == 2
            assert encoded["pooled_prompt_embeds"].shape[0] == 1
        else:
            assert "pooled_prompt_embeds" not in encoded


class TestGenericPipelines:
    """Pipelines without embedding noise render from the prompt text (seeds only)."""

    def test_renders_distinct_reproducible_candidates_from_text(self, tiny_pag_path: str) -> None:
        generator = CandidateImageGenerator(tiny_pag_path, EngineConfig(device="cpu"))
        generator.load()
        assert not generator.supports_embedding_noise
        config = GenerationConfig(num_images=2, num_inference_steps=2, noise_sigma=0.0)
        first, second = (_render(generator, config) for _ in range(2))
        assert all(numpy.array_equal(a, b) for a, b in zip(first, second, strict=True))
        assert not numpy.array_equal(first[0], first[1])

    def test_refuses_embedding_noise_with_a_clear_message(self, tiny_pag_path: str) -> None:
        generator = CandidateImageGenerator(tiny_pag_path, EngineConfig(device="cpu"))
        generator.load()
        with pytest.raises(ConfigurationError, match="set noise_sigma=0"):
            _render(generator, GenerationConfig(num_images=2, num_inference_steps=1))
