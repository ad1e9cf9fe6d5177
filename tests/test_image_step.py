"""CandidateImageGeneration as a distilabel step: files, resume, formats."""

import base64
import io
import json
from pathlib import Path

import numpy
import pytest
import torch
from PIL import Image
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from agfsync.errors import ConfigurationError
from agfsync.generation import CandidateImageGenerator, EngineConfig, GenerationConfig, plan_jobs
from agfsync.models import resolve_model
from agfsync.steps import CandidateImageGeneration

ROWS = [
    {"prompt_id": "lighthouse", "prompt": "a red lighthouse on a cliff"},
    {"prompt_id": "cats", "prompt": "two cats on a sofa"},
]


def _step(tiny_sd_path: str, artifacts: Path, **options: object) -> CandidateImageGeneration:
    step = CandidateImageGeneration(
        name="generate_images",
        model=tiny_sd_path,
        num_images=3,
        num_inference_steps=2,
        **options,
    )
    step.set_pipeline_artifacts_path(artifacts)
    step.load()
    return step


def _run(step: CandidateImageGeneration) -> list[dict]:
    return next(step.process([dict(row) for row in ROWS]))


class TestCandidateImageGeneration:
    def test_writes_one_file_per_candidate_and_records_metadata(
        self, tiny_sd_path: str, tmp_path: Path
    ) -> None:
        rows = _run(_step(tiny_sd_path, tmp_path))
        assert rows[0]["image_paths"] == [
            f"generate_images/images/lighthouse/{index}.png" for index in range(3)
        ]
        assert rows[1]["noise_sigmas"] == [0.0, 0.1, 0.1]
        assert len(set(rows[0]["image_seeds"] + rows[1]["image_seeds"])) == 6
        assert rows[0]["generation_config"]["num_inference_steps"] == 2
        for row in rows:
            for path in row["image_paths"]:
                assert Image.open(tmp_path / path).size == (32, 32)

    def test_rerun_regenerates_only_missing_and_corrupt_images(
        self, tiny_sd_path: str, tmp_path: Path
    ) -> None:
        step = _step(tiny_sd_path, tmp_path)
        paths = [tmp_path / path for row in _run(step) for path in row["image_paths"]]
        originals = {path: numpy.array(Image.open(path)) for path in paths}
        missing, corrupt, *kept = paths
        missing.unlink()
        corrupt.write_bytes(b"not an image")
        kept_times = {path: path.stat().st_mtime_ns for path in kept}

        _run(step)

        assert {path: path.stat().st_mtime_ns for path in kept} == kept_times
        for path in (missing, corrupt):
            assert numpy.array_equal(numpy.array(Image.open(path)), originals[path])

    @pytest.mark.parametrize(("image_format", "suffix"), [("jpeg", ".jpg"), ("webp", ".webp")])
    def test_lossy_formats(
        self, tiny_sd_path: str, tmp_path: Path, image_format: str, suffix: str
    ) -> None:
        rows = _run(_step(tiny_sd_path, tmp_path, image_format=image_format, image_quality=80))
        path = tmp_path / rows[0]["image_paths"][0]
        assert path.suffix == suffix
        assert Image.open(path).format == image_format.upper()

    @pytest.mark.parametrize(
        "options",
        [
            {"image_png_level": 0},
            {"image_png_level": 9},
            {"image_format": "webp", "image_webp_lossless": True},
            {"image_writer_threads": 0},
        ],
    )
    def test_lossless_encodings_keep_the_pixels(
        self, tiny_sd_path: str, tmp_path: Path, options: dict[str, object]
    ) -> None:
        reference = _run(_step(tiny_sd_path, tmp_path / "png"))
        rows = _run(_step(tiny_sd_path, tmp_path / "other", **options))
        for row, reference_row in zip(rows, reference, strict=True):
            for path, reference_path in zip(
                row["image_paths"], reference_row["image_paths"], strict=True
            ):
                pixels = numpy.array(Image.open(tmp_path / "other" / path))
                expected = numpy.array(Image.open(tmp_path / "png" / reference_path))
                assert numpy.array_equal(pixels, expected)
        first = tmp_path / "other" / rows[0]["image_paths"][0]
        if options.get("image_png_level") == 0:  # stored, not compressed
            assert first.stat().st_size > 32 * 32 * 3

    def test_load_refuses_noise_for_pipelines_without_support(
        self, tiny_pag_path: str, tmp_path: Path
    ) -> None:
        with pytest.raises(ConfigurationError, match="has no embedding-noise support"):
            _step(tiny_pag_path, tmp_path)
        rows = _run(_step(tiny_pag_path, tmp_path, noise_sigma=0.0))
        assert len(rows[0]["image_paths"]) == 3

    def test_num_images_below_two_is_rejected(self, tiny_sd_path: str) -> None:
        with pytest.raises(ValueError, match="greater than or equal to 2"):
            CandidateImageGeneration(name="generate_images", model=tiny_sd_path, num_images=1)


class TestStableDiffusionXL:
    @pytest.fixture(scope="class")
    def tiny_sdxl_path(self, isolated_caches: dict[str, str]) -> str:
        return resolve_model("tiny:stable-diffusion-xl")

    def test_same_seed_gives_identical_pixels(self, tiny_sdxl_path: str) -> None:
        generator = CandidateImageGenerator(tiny_sdxl_path, EngineConfig(device="cpu"))
        generator.load()
        config = GenerationConfig(num_images=2, num_inference_steps=2)
        jobs = plan_jobs(["p"], config)
        first = [numpy.array(image) for _, image in generator.generate(["a cat"], jobs, config)]
        second = [numpy.array(image) for _, image in generator.generate(["a cat"], jobs, config)]
        assert first[0].shape == (64, 64, 3)
        assert all(numpy.array_equal(a, b) for a, b in zip(first, second, strict=True))
        assert not numpy.array_equal(first[0], first[1])

    def test_noise_reaches_the_pooled_embedding(self, tiny_sdxl_path: str) -> None:
        generator = CandidateImageGenerator(tiny_sdxl_path, EngineConfig(device="cpu"))
        generator.load()
        config = GenerationConfig(num_images=2, noise_sigma=0.5)
        encoded = generator.encode_prompts(["a cat"], config)
        assert set(encoded) >= {"prompt_embeds", "pooled_prompt_embeds"}
        (clean_job, noised_job) = plan_jobs(["p"], config)
        from agfsync.generation import _add_noise

        pooled = encoded["pooled_prompt_embeds"][0]
        assert torch.equal(_add_noise(pooled, clean_job, "pooled_prompt_embeds"), pooled)
        assert not torch.equal(_add_noise(pooled, noised_job, "pooled_prompt_embeds"), pooled)


class TestLoRA:
    @pytest.fixture(scope="class")
    def lora_dir(self, tiny_sd_path: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
        """A random LoRA on the tiny UNet's attention, saved in diffusers format."""
        from diffusers import StableDiffusionPipeline
        from peft import LoraConfig
        from peft.utils import get_peft_model_state_dict

        pipeline = StableDiffusionPipeline.from_pretrained(tiny_sd_path)
        pipeline.unet.add_adapter(
            LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"])
        )
        torch.manual_seed(0)
        for name, parameter in pipeline.unet.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(parameter, std=0.5)
        target = tmp_path_factory.mktemp("lora")
        StableDiffusionPipeline.save_lora_weights(
            target, unet_lora_layers=get_peft_model_state_dict(pipeline.unet)
        )
        return target

    def test_lora_changes_the_images(self, tiny_sd_path: str, lora_dir: Path) -> None:
        config = GenerationConfig(num_images=2, num_inference_steps=2)
        jobs = plan_jobs(["p"], config)
        images = []
        for lora in (None, str(lora_dir)):
            generator = CandidateImageGenerator(
                tiny_sd_path, EngineConfig(device="cpu", lora_weights=lora)
            )
            generator.load()
            images.append([numpy.array(i) for _, i in generator.generate(["a cat"], jobs, config)])
        assert not numpy.array_equal(images[0][0], images[1][0])


class TestSafetyFlags:
    def test_without_a_checker_the_column_is_empty(self, tiny_sd_path: str, tmp_path: Path) -> None:
        assert _run(_step(tiny_sd_path, tmp_path))[0]["safety_flags"] is None

    @pytest.mark.parametrize(("checker", "expected"), [("flags_all", True), ("flags_none", False)])
    def test_flags_are_recorded_and_images_kept(
        self,
        tiny_sd_path: str,
        tiny_safety_checkers: dict[str, str],
        tmp_path: Path,
        checker: str,
        expected: bool,
    ) -> None:
        step = _step(tiny_sd_path, tmp_path, safety_checker=tiny_safety_checkers[checker])
        rows = _run(step)
        assert [row["safety_flags"] for row in rows] == [[expected] * 3] * 2
        first = numpy.array(Image.open(tmp_path / rows[0]["image_paths"][0]))
        assert first.any(), "a flagged image must be kept as rendered, not blackened"


def _png_base64(color: str) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), color).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


class TestRemoteImageGeneration:
    """The step with distilabel's OpenAIImageGeneration, over real HTTP on loopback."""

    def test_renders_through_the_openai_images_api(
        self, httpserver: HTTPServer, tmp_path: Path
    ) -> None:
        from distilabel.models.image_generation import OpenAIImageGeneration

        requests: list[dict] = []

        def images_endpoint(request: Request) -> Response:
            body = json.loads(request.data)
            requests.append({"body": body, "auth": request.headers.get("Authorization")})
            colors = ["red", "green", "blue", "white"][: body["n"]]
            payload = {"created": 0, "data": [{"b64_json": _png_base64(c)} for c in colors]}
            return Response(json.dumps(payload), content_type="application/json")

        httpserver.expect_request("/v1/images/generations", method="POST").respond_with_handler(
            images_endpoint
        )
        step = CandidateImageGeneration(
            name="generate_images",
            num_images=3,
            image_generation_model=OpenAIImageGeneration(
                model="dall-e-2",
                base_url=httpserver.url_for("/v1"),
                api_key="sk-loopback-secret",
                generation_kwargs={"response_format": "b64_json", "size": "256x256"},
            ),
        )
        step.set_pipeline_artifacts_path(tmp_path)
        step.load()
        rows = _run(step)

        assert [r["body"]["prompt"] for r in requests] == [row["prompt"] for row in ROWS]
        assert all(r["body"]["model"] == "dall-e-2" and r["body"]["n"] == 3 for r in requests)
        assert all(r["body"]["response_format"] == "b64_json" for r in requests)
        assert requests[0]["auth"] == "Bearer sk-loopback-secret"
        colors = [Image.open(tmp_path / path).getpixel((0, 0)) for path in rows[0]["image_paths"]]
        assert colors == [(255, 0, 0), (0, 128, 0), (0, 0, 255)]
        assert rows[0]["image_seeds"] == [None] * 3
        assert rows[0]["image_model"] == "dall-e-2"

        # A re-run asks only for what is missing.
        (tmp_path / rows[1]["image_paths"][2]).unlink()
        _run(step)
        assert [r["body"]["n"] for r in requests[2:]] == [1]

    def test_serializes_without_the_api_key(self, httpserver: HTTPServer) -> None:
        from distilabel.models.image_generation import OpenAIImageGeneration

        step = CandidateImageGeneration(
            name="generate_images",
            image_generation_model=OpenAIImageGeneration(
                model="dall-e-3", base_url=httpserver.url_for("/v1"), api_key="sk-never-dumped"
            ),
        )
        dumped = json.dumps(step.dump())
        assert "sk-never-dumped" not in dumped
        assert "OpenAIImageGeneration" in dumped

    def test_renders_through_an_inference_endpoint(
        self, httpserver: HTTPServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        import huggingface_hub.constants
        from distilabel.models.image_generation import InferenceEndpointsImageGeneration

        # The suite runs with HF_HUB_OFFLINE=1; this test's only peer is the loopback server.
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)

        requests: list[dict] = []

        def text_to_image(request: Request) -> Response:
            requests.append(
                {"body": json.loads(request.data), "auth": request.headers.get("Authorization")}
            )
            return Response(base64.b64decode(_png_base64("red")), content_type="image/png")

        httpserver.expect_request("/", method="POST").respond_with_handler(text_to_image)
        step = CandidateImageGeneration(
            name="generate_images",
            num_images=2,
            image_generation_model=InferenceEndpointsImageGeneration(
                base_url=httpserver.url_for("/"), api_key="hf_loopback_secret"
            ),
        )
        step.set_pipeline_artifacts_path(tmp_path)
        step.load()
        rows = _run(step)

        # The endpoint renders one image per request: N requests per prompt.
        assert [r["body"]["inputs"] for r in requests] == [ROWS[0]["prompt"]] * 2 + [
            ROWS[1]["prompt"]
        ] * 2
        assert requests[0]["auth"] == "Bearer hf_loopback_secret"
        for row in rows:
            for path in row["image_paths"]:
                # distilabel re-encodes the endpoint's image as JPEG: red, within a few levels.
                pixel = numpy.array(Image.open(tmp_path / path).convert("RGB"))[0, 0]
                assert pixel[0] > 240 and pixel[1] < 15 and pixel[2] < 15
