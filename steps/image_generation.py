"""The image stage: N candidate images per prompt, written as files."""

import base64
import copy
import io
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Self, TypeVar

from distilabel.mixins.runtime_parameters import RuntimeParameter
from distilabel.models.image_generation.base import ImageGenerationModel
from distilabel.steps import Step, StepInput
from PIL import Image
from pydantic import BaseModel, Field, PrivateAttr, model_validator

from agfsync.errors import ConfigurationError
from agfsync.generation import (
    CandidateImageGenerator,
    EngineConfig,
    GenerationConfig,
    ImageJob,
    calls_to_repeat,
    plan_jobs,
)
from agfsync.image_writer import ImageWriter
from agfsync.models import free_models
from agfsync.progress import report_done
from agfsync.run.artifacts import run_artifacts_root
from agfsync.run.cache import UpstreamSignatureMixin, keep_out_of_the_cache_key
from agfsync.run.failures import RecordsFailures
from agfsync.run.preflight import ModelNeed
from agfsync.safe_paths import path_component
from agfsync.safety import SafetyChecker
from agfsync.step_names import IMAGES_ARTIFACT
from agfsync.text.prompt_files import prompt_id_for

if TYPE_CHECKING:
    from distilabel.typing import StepOutput


def image_is_readable(path: Path) -> bool:
    """True when `path` exists and decodes completely as an image."""
    try:
        with Image.open(path) as image:
            image.load()
    except (OSError, SyntaxError, ValueError):
        return False
    return True


SettingsT = TypeVar("SettingsT", bound=BaseModel)


def _declared(config: type[BaseModel], name: str) -> Any:
    """A step field declared by `config`'s field `name`: the same default, constraints
    and help, so a setting is declared once (in `agfsync.generation`)."""
    return copy.copy(config.model_fields[name])


class CandidateImageGeneration(Step, UpstreamSignatureMixin, RecordsFailures):
    """Renders N candidate images per prompt with a diffusers text-to-image model.

    As in AGFSync, the prompt is encoded once; image 0 uses the clean embedding
    and images 1..N-1 add `noise_sigma * randn` to it, on top of a per-image seed
    derived from (`seed`, prompt id, image index). Images are written under the
    run's artifacts folder as `<step name>/images/<prompt_id>/<index>.<ext>` (an id that
    is not a safe file name gets a folder named after it plus a digest; see
    `agfsync.safe_paths`), never
    passed through the pipeline's queues. On a re-run, images that already exist
    and decode are kept; a missing or corrupt one is rendered again together with the
    rest of the denoising call that first made it, so with the same batch size it comes
    back identical (a remote service renders anew).

    Attributes:
        model: Hub id, local folder or `tiny:<name>` of a diffusers pipeline.
        num_images, num_inference_steps, guidance_scale, negative_prompt, height,
        width, noise_sigma, seed: how candidates are rendered; declared (default, help)
            in `agfsync.generation.GenerationConfig`.
        scheduler, lora_weights, lora_scale, batch_size, device, dtype, cpu_offload,
        vae_slicing, vae_tiling, compile_denoiser, channels_last, fuse_qkv, vae: where
            and how the model runs; declared in `agfsync.generation.EngineConfig`.
        image_format, image_quality, image_png_level, image_webp_lossless: png
            (default), jpeg or webp files, and how they are encoded.
        image_writer_threads: images are encoded and written on this many background
            threads while the next batch is denoised (4; 0 writes inline).
        safety_checker: optional checker whose verdicts are recorded, never applied.
        image_generation_model: optional distilabel image generation model
            (`OpenAIImageGeneration`, `InferenceEndpointsImageGeneration`) that renders
            remotely instead of `model`; images are written the same way, with no
            seeds or embedding noise to record.

    Runtime parameters:
        - every attribute above.

    Input columns:
        - prompt (`str`): the text to render.
        - prompt_id (`str`, optional): names the image folder and seeds the images; when
          absent, derived from the prompt text (and `category`, if any), so it is stable
          across runs (`agfsync.text.prompt_files.prompt_id_for`) and added to the output.

    Output columns:
        - image_paths (`list[str]`): relative to the run's artifacts folder.
        - image_seeds (`list[int]`): seed of each image's initial latent (None: remote).
        - noise_sigmas (`list[float]`): sigma of the embedding noise (None: remote).
        - image_model (`str`): the model reference.
        - generation_config (`dict`): steps, guidance, size, negative prompt, run seed.
        - safety_flags (`list[bool]`): the safety checker's verdicts; None without one.
        - generation_error (`str`): why some of the prompt's images could not be rendered
          (they are rendered when the same command runs again); None when all exist.

    Categories:
        - image-generation

    Examples:
        Render candidates for prompts alone (the ids are derived from the text):

        ```python
        from pathlib import Path

        from agfsync.steps import CandidateImageGeneration

        generate = CandidateImageGeneration(
            name="generate_images",
            model="tiny:stable-diffusion",  # e.g. "stable-diffusion-v1-5/stable-diffusion-v1-5"
            num_images=2,
            num_inference_steps=2,
            height=64,
            width=64,
        )
        generate.set_pipeline_artifacts_path(Path("artifacts"))
        generate.load()
        (row,) = next(generate.process([{"prompt": "a red cube on a blue sphere"}]))
        generate.unload()
        # row["image_paths"]: ["generate_images/images/<prompt_id>/0.png", ".../1.png"]
        # (under artifacts/), row["image_seeds"], row["noise_sigmas"]: [0.0, 0.1]
        ```

        In a pipeline, from prompts to a Diffusion-DPO dataset: see `PreferenceDatasetExport`.
    """

    failure_column: ClassVar[str] = "generation_error"
    shared_imports: ClassVar[tuple[str, ...]] = (
        "diffusers.pipelines.pipeline_utils",
        "transformers.models.clip.modeling_clip",
    )
    """Imported once before distilabel forks the step processes (`import_before_fork`)."""

    model: RuntimeParameter[str] = Field(
        default="stable-diffusion-v1-5/stable-diffusion-v1-5",
        description="Diffusers text-to-image pipeline (Hub id, folder or tiny:<name>).",
    )
    num_images: RuntimeParameter[int] = _declared(GenerationConfig, "num_images")
    num_inference_steps: RuntimeParameter[int] = _declared(GenerationConfig, "num_inference_steps")
    guidance_scale: RuntimeParameter[float] = _declared(GenerationConfig, "guidance_scale")
    negative_prompt: RuntimeParameter[str] | None = _declared(GenerationConfig, "negative_prompt")
    height: RuntimeParameter[int] | None = _declared(GenerationConfig, "height")
    width: RuntimeParameter[int] | None = _declared(GenerationConfig, "width")
    noise_sigma: RuntimeParameter[float | list[float]] = _declared(GenerationConfig, "noise_sigma")
    seed: RuntimeParameter[int] = _declared(GenerationConfig, "seed")
    scheduler: RuntimeParameter[str] | None = _declared(EngineConfig, "scheduler")
    lora_weights: RuntimeParameter[str] | None = _declared(EngineConfig, "lora_weights")
    lora_scale: RuntimeParameter[float] = _declared(EngineConfig, "lora_scale")
    cpu_offload: RuntimeParameter[bool] = _declared(EngineConfig, "cpu_offload")
    vae_slicing: RuntimeParameter[bool] = _declared(EngineConfig, "vae_slicing")
    vae_tiling: RuntimeParameter[bool] = _declared(EngineConfig, "vae_tiling")
    safety_checker: RuntimeParameter[str] | None = Field(
        default=None,
        description="Safety checker (e.g. CompVis/stable-diffusion-safety-checker) whose "
        "verdicts go into `safety_flags`; flagged images are kept, not replaced.",
    )
    image_generation_model: ImageGenerationModel | None = Field(
        default=None,
        description="A distilabel image generation model (OpenAIImageGeneration, "
        "InferenceEndpointsImageGeneration) that renders remotely instead of `model`.",
    )
    compile_denoiser: RuntimeParameter[bool] = _declared(EngineConfig, "compile_denoiser")
    channels_last: RuntimeParameter[bool] = _declared(EngineConfig, "channels_last")
    fuse_qkv: RuntimeParameter[bool] = _declared(EngineConfig, "fuse_qkv")
    vae: RuntimeParameter[str] | None = _declared(EngineConfig, "vae")
    image_format: RuntimeParameter[Literal["png", "jpeg", "webp"]] = Field(
        default="png", description="File format of the images; png is lossless."
    )
    image_quality: RuntimeParameter[int] = Field(
        default=95, ge=1, le=100, description="Quality of jpeg/webp files."
    )
    image_png_level: RuntimeParameter[int] = Field(
        default=6,
        ge=0,
        le=9,
        description="zlib level of png files (Pillow's default 6; 1 encodes about a quarter "
        "faster for 9% more bytes, benchmarks/RESULTS.md).",
    )
    image_webp_lossless: RuntimeParameter[bool] = Field(
        default=False,
        description="Lossless webp files (7% smaller than png, 2.4x its encoding time).",
    )
    image_writer_threads: RuntimeParameter[int] = Field(
        # One thread keeps up with 10 images/s of 512 px PNGs, but a batch waits for
        # its last call's images: 8% of the step's time with one thread on an H200,
        # cut by each thread added (Pillow encodes without the GIL); benchmarks/RESULTS.md.
        default=4,
        ge=0,
        description="Threads that encode and write images while the next batch is "
        "denoised; a batch ends when its last call's images are written, sooner with more "
        "threads. 0 writes each image before the next call. Not part of the cache key.",
    )
    batch_size: RuntimeParameter[int] = _declared(EngineConfig, "batch_size")
    device: RuntimeParameter[str] | None = _declared(EngineConfig, "device")
    dtype: RuntimeParameter[str] = _declared(EngineConfig, "dtype")

    _generator: CandidateImageGenerator | None = PrivateAttr(default=None)
    _safety_checker: SafetyChecker | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _writers_are_not_part_of_the_cache_key(self) -> Self:
        """A rerun with another number of writer threads reuses the images written."""
        keep_out_of_the_cache_key(self, "image_writer_threads")
        return self

    @property
    def inputs(self) -> dict[str, bool]:
        return {"prompt": True, "prompt_id": False}

    @property
    def outputs(self) -> list[str]:
        return [
            "prompt_id",
            "image_paths",
            "image_seeds",
            "noise_sigmas",
            "image_model",
            "generation_config",
            "safety_flags",
            "generation_error",
        ]

    def load(self) -> None:
        super().load()
        if self.image_generation_model is not None:
            self.image_generation_model.load()
        else:
            self._generator = CandidateImageGenerator(self.model, self._settings(EngineConfig))
            self._generator.load()
            if not self._generator.supports_embedding_noise and any(self._config().sigmas()):
                raise ConfigurationError(
                    f"{self.model} ({type(self._generator.pipeline).__name__}) has no "
                    "embedding-noise support; set noise_sigma=0 for it (candidates then "
                    "differ by seed only)."
                )
        if self.safety_checker is not None:
            self._safety_checker = SafetyChecker(
                self.safety_checker, device=self.device, dtype=self.dtype
            )
            self._safety_checker.load()

    def unload(self) -> None:
        """Drops the pipeline and the safety checker and gives their device memory back."""
        if self.image_generation_model is not None:
            self.image_generation_model.unload()
        self._generator = None
        self._safety_checker = None
        free_models(self.device)
        super().unload()

    def models_to_load(self) -> list[ModelNeed]:
        """The models `load()` will load, for the run's preflight check."""
        if self.image_generation_model is not None:
            return []
        needs = [ModelNeed(self.model, f"{self.name}.model")]
        if self.lora_weights:
            needs.append(ModelNeed(self.lora_weights, f"{self.name}.lora_weights"))
        if self.vae:
            needs.append(ModelNeed(self.vae, f"{self.name}.vae"))
        if self.safety_checker:
            needs.append(ModelNeed(self.safety_checker, f"{self.name}.safety_checker"))
        return needs

    def _config(self) -> GenerationConfig:
        return self._settings(GenerationConfig)

    def _settings(self, config: type[SettingsT]) -> SettingsT:
        """`config` from this step's fields of the same names."""
        return config(**{name: getattr(self, name) for name in config.model_fields})

    def _save_options(self) -> dict[str, Any]:
        """`Image.save` options of this step's image format."""
        options: dict[str, Any] = {"format": self.image_format, "quality": self.image_quality}
        if self.image_format == "png":
            options["compress_level"] = self.image_png_level
        if self.image_format == "webp":
            options["lossless"] = self.image_webp_lossless
        return options

    def _relative_path(self, prompt_id: str, image_index: int) -> str:
        """Where an image goes; the prompt id, untrusted, becomes one safe folder name."""
        extension = "jpg" if self.image_format == "jpeg" else self.image_format
        folder = path_component(prompt_id)
        return f"{self.name}/{IMAGES_ARTIFACT}/{folder}/{image_index}.{extension}"

    def _render_remotely(
        self, prompts: list[str], jobs: list[ImageJob]
    ) -> Iterator[tuple[ImageJob, Image.Image]]:
        """Requests per prompt until its missing candidates are there; the service picks
        seeds. Some services render one image per request whatever is asked (distilabel's
        Inference Endpoints model ignores `num_generations`), so the rest is asked again."""
        assert self.image_generation_model is not None
        model = self.image_generation_model
        for prompt_index in sorted({job.prompt_index for job in jobs}):
            own_jobs = [job for job in jobs if job.prompt_index == prompt_index]
            encoded: list[str] = []
            while len(encoded) < len(own_jobs):
                (generations,) = model.generate(
                    inputs=[prompts[prompt_index]],
                    num_generations=len(own_jobs) - len(encoded),
                    **model.get_generation_kwargs(),
                )
                received = [image for generation in generations for image in generation["images"]]
                if not received:
                    raise RuntimeError(
                        f"{type(model).__name__} returned no image for prompt "
                        f"{prompts[prompt_index]!r}; re-run to retry the missing candidates."
                    )
                encoded += received
            for job, data in zip(own_jobs, encoded, strict=False):
                yield job, Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")

    def process(self, inputs: StepInput) -> "StepOutput":
        config = self._config()
        prompts = [row["prompt"] for row in inputs]
        for row in inputs:
            if row.get("prompt_id") is None:
                row["prompt_id"] = prompt_id_for(row.get("category") or "", row["prompt"])
        prompt_ids = [row["prompt_id"] for row in inputs]
        jobs = plan_jobs(prompt_ids, config)
        root = run_artifacts_root(self)
        paths = [
            root / self._relative_path(prompt_ids[j.prompt_index], j.image_index) for j in jobs
        ]
        # Each job whose file is absent or unreadable, with the path it is written to.
        missing = {
            job: path for job, path in zip(jobs, paths, strict=True) if not image_is_readable(path)
        }

        def write_images(_: Path) -> None:
            if self.image_generation_model is None:
                assert self._generator is not None, "load() must run before process()"
                batch_size = self._generator.engine.batch_size
                repeated = calls_to_repeat(jobs, missing.keys(), batch_size)
                rendered = self._generator.generate(prompts, repeated, config)
            else:
                rendered = self._render_remotely(prompts, [job for job in jobs if job in missing])
            # Encoding and writing overlap the next denoising call; all are on disk, each
            # whole or absent, when the writer is left.
            save_options = self._save_options()
            with ImageWriter(self.image_writer_threads, self.batch_size * 2) as writer:
                for job, image in rendered:
                    if job in missing:  # the others are on disk already, identical
                        writer.submit(missing[job], image, **save_options)

        failure = None
        try:
            self.save_artifact(
                IMAGES_ARTIFACT,
                write_function=write_images,
                metadata={
                    "layout": f"<prompt_id>/<index>.{self.image_format}",
                    "model": self._model_name(),
                    # Lets a later execution find these images (`carry_over_artifacts`).
                    "step_signature": self.signature,
                },
            )
        except ConfigurationError:
            raise  # a setting that cannot work fails the same way on every run
        except Exception as error:
            # Out of memory at one image per call, a failed remote request, ...: the
            # prompts still missing images say so, the others keep theirs, and running
            # the same command again renders only what is missing.
            self._logger.warning(f"Rendering a batch failed:\n{traceback.format_exc()}")
            failure = f"rendering failed: {type(error).__name__}: {error}"
        if failure is None:
            report_done(self._logger, "images", len(jobs), f"{self.name}: {len(jobs)} images")
        flags = None if failure else self._safety_flags(paths)
        generation_config = config.model_dump(exclude={"num_images", "noise_sigma"})
        remote = self.image_generation_model is not None
        for prompt_index, row in enumerate(inputs):
            own = slice(prompt_index * config.num_images, (prompt_index + 1) * config.num_images)
            row["image_paths"] = [str(path.relative_to(root)) for path in paths[own]]
            # A remote service picks its own seeds and sees no embedding noise.
            row["image_seeds"] = [None if remote else job.seed for job in jobs[own]]
            row["noise_sigmas"] = [None if remote else job.sigma for job in jobs[own]]
            row["image_model"] = self._model_name()
            row["generation_config"] = generation_config
            row["safety_flags"] = None if flags is None else flags[own]
            complete = failure is None or all(image_is_readable(path) for path in paths[own])
            row["generation_error"] = None if complete else failure
        yield inputs

    def _model_name(self) -> str:
        if self.image_generation_model is not None:
            return self.image_generation_model.model_name
        return self.model

    def _safety_flags(self, paths: list[Path]) -> list[bool] | None:
        """Flags of every candidate of the batch, kept ones included, when a checker is set."""
        if self._safety_checker is None:
            return None
        images = []
        for path in paths:
            with Image.open(path) as image:
                images.append(image.convert("RGB"))
        return self._safety_checker.flag(images)
