"""What a run will cost before it starts: LLM calls, tokens, API cost, GPU hours, disk.

`estimate_run` reads the preset's pipeline (which LLM steps, how many candidates,
how many denoising steps, which judges) and combines it with two configurable
tables shipped in `agfsync/data/`: throughput profiles (images/s and judged
pairs/s measured by `benchmarks/`, see benchmarks/RESULTS.md) and LLM prices.
Every assumption it uses is printed next to the numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Self

import yaml
from distilabel.pipeline import Pipeline
from pydantic import BaseModel, Field, ValidationError, model_validator

from agfsync.errors import ConfigurationError, describe_validation_error
from agfsync.input_files import parse_yaml, read_text
from agfsync.step_names import GENERATE_IMAGES_STEP, JUDGE_IMAGES_STEP, LOAD_PROMPTS_STEP
from agfsync.text.prompt_files import load_prompt_records

PAPER_QUESTIONS_PER_PROMPT = 9.03
"""AGFSync's measured mean of valid questions per prompt (REFERENCE.md)."""


class ThroughputProfile(BaseModel):
    """Measured speeds of one machine on one model family (see benchmarks/RESULTS.md)."""

    description: str
    images_per_second: float = Field(description="Candidate images rendered per second.")
    reference_steps: int = Field(description="Denoising steps the images/s was measured at.")
    fixed_seconds_per_image: float = Field(
        default=0.0,
        ge=0,
        description="The part of each image's time that does not scale with the denoising "
        "steps (decoding, writing); the rest scales with the steps run.",
    )
    vqa_pairs_per_second: float = Field(description="(image, question) pairs judged per second.")
    judge_images_per_second: float | None = Field(
        default=None, description="Images per second through the non-VQA judges together."
    )
    bytes_per_image: int = Field(description="Mean size of one candidate file on disk.")
    bytes_per_prompt: int = Field(
        default=0,
        description="Everything else a run writes per prompt: the rows of every step in "
        "distilabel's cache, the steps' journals, the dataset's row data.",
    )
    startup_seconds: float = Field(
        default=0.0, description="Pipeline start and model loading, paid once per run."
    )
    image_model: str | None = Field(
        default=None, description="The image model measured; None: any (the user's own table)."
    )
    vqa_model: str | None = Field(
        default=None, description="The VQA judge's model measured; None: any."
    )
    stages_overlap: bool = Field(
        default=False,
        description="True when the figures were measured with generation and judging "
        "running at once on the same devices (each slowed by the other), as `agfsync "
        "generate` runs them: a run then takes the slower stage's time. False: the "
        "stages' times add up (figures measured alone, or fitted to wall times).",
    )

    @model_validator(mode="after")
    def _fixed_part_fits(self) -> Self:
        if self.fixed_seconds_per_image >= 1 / self.images_per_second:
            raise ValueError(
                "fixed_seconds_per_image must be less than the time of one image "
                "(1 / images_per_second)"
            )
        return self

    def seconds_per_image(self, steps: int) -> float:
        """One image's time at `steps` denoising steps: the fixed part, and the rest
        scaled from `reference_steps`."""
        scaled = 1 / self.images_per_second - self.fixed_seconds_per_image
        return self.fixed_seconds_per_image + scaled * steps / self.reference_steps


class LLMCallProfile(BaseModel):
    """Tokens of one call of an LLM step (our estimates of the shipped prompts)."""

    input_tokens: int
    output_tokens: int


class LLMPrice(BaseModel):
    input_per_million: float
    output_per_million: float


TABLES_FORMAT = "see agfsync/data/estimate.yaml for the format"


class EstimateTables(BaseModel):
    profiles: dict[str, ThroughputProfile]
    preset_profiles: dict[str, str] = Field(description="Profile used by default for each preset.")
    llm_calls: dict[str, LLMCallProfile] = Field(description="By LLM step name.")
    prices: dict[str, LLMPrice] = Field(description="By model name, USD per million tokens.")
    prices_as_of: str

    @classmethod
    def load(cls, path: Path | None = None) -> EstimateTables:
        if path is not None and not path.is_file():
            raise ConfigurationError(
                f"Estimate tables {path} do not exist; pass an existing YAML file "
                f"({TABLES_FORMAT})."
            )
        if path is None:
            text = resources.files("agfsync").joinpath("data/estimate.yaml").read_text("utf-8")
            return cls.model_validate(yaml.safe_load(text))
        raw = parse_yaml(read_text(path), path, TABLES_FORMAT)
        try:
            return cls.model_validate(raw)
        except ValidationError as error:
            raise ConfigurationError(
                f"Invalid estimate tables {path}: {describe_validation_error(error)}"
            ) from None


@dataclass(frozen=True)
class LLMStepEstimate:
    step: str
    model: str
    calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: float | None
    """None when the model has no price in the tables."""


@dataclass(frozen=True)
class Estimate:
    preset: str
    num_prompts: int
    profile: str
    llm_steps: list[LLMStepEstimate] = field(default_factory=list)
    num_images: int = 0
    num_questions: int = 0
    generation_hours: float | None = 0.0
    """None: the profile did not measure the preset's image model."""
    judging_hours: float | None = 0.0
    """None: the profile did not measure the preset's VQA model."""
    startup_hours: float = 0.0
    stages_overlap: bool = False
    """The profile measured generation and judging running at once."""
    disk_bytes: int = 0
    assumptions: list[str] = field(default_factory=list)

    @property
    def gpu_hours(self) -> float | None:
        """Device hours with the stages one after another."""
        if self.generation_hours is None or self.judging_hours is None:
            return None
        return self.generation_hours + self.judging_hours + self.startup_hours

    @property
    def overlapped_hours(self) -> float | None:
        """Hours of a run whose profile measured the stages running at once (as `agfsync
        generate` runs them): the slower stage sets the pace. None for other profiles,
        whose stages' times add up (`gpu_hours`)."""
        if not self.stages_overlap or self.gpu_hours is None:
            return None
        assert self.generation_hours is not None and self.judging_hours is not None
        return max(self.generation_hours, self.judging_hours) + self.startup_hours

    @property
    def llm_cost_usd(self) -> float:
        return sum(step.cost_usd or 0.0 for step in self.llm_steps)


def estimate_run(
    pipeline: Pipeline,
    preset: str,
    num_prompts: int,
    *,
    tables: EstimateTables,
    profile: str | None = None,
    num_images: int | None = None,
    questions_per_prompt: float | None = None,
) -> Estimate:
    """The expected cost of running `pipeline` on `num_prompts` prompts.

    `questions_per_prompt` defaults to the mean of the preset's prompt file when it reads
    prompts with their QA pairs from a file, else to the paper's 9.03."""
    if num_prompts < 1:
        raise ConfigurationError("--prompts must be at least 1.")
    llm_steps, assumptions = _llm_steps(pipeline, num_prompts, tables)
    if GENERATE_IMAGES_STEP not in pipeline.dag:
        return Estimate(preset, num_prompts, "-", llm_steps, assumptions=assumptions)
    profile_name = profile or tables.preset_profiles.get(preset)
    if profile_name not in tables.profiles:
        raise ConfigurationError(
            f"No throughput profile {profile_name!r}; choose one of: "
            f"{', '.join(sorted(tables.profiles))} (or give --tables with your own)."
        )
    speeds = tables.profiles[profile_name]
    generation = pipeline.dag.get_step(GENERATE_IMAGES_STEP)["step"]
    per_prompt = num_images or generation.num_images
    images = num_prompts * per_prompt
    scorers = pipeline.dag.get_step(JUDGE_IMAGES_STEP)["step"].scorers
    judges = [spec.name for spec in scorers]
    vqa_models = [spec.model for spec in scorers if spec.name == "vqa"]
    if questions_per_prompt is None:
        questions_per_prompt = _questions_per_prompt(pipeline)
    questions = round(images * questions_per_prompt) if "vqa" in judges else 0
    other_judges = [name for name in judges if name != "vqa"]
    judging_seconds = questions / speeds.vqa_pairs_per_second
    if other_judges and speeds.judge_images_per_second:
        judging_seconds += images / speeds.judge_images_per_second
    assumptions += [
        f"throughput profile {profile_name}: {speeds.description}",
        f"{speeds.images_per_second:g} images/s at {speeds.reference_steps} steps, scaled to "
        f"{generation.num_inference_steps} steps"
        + (
            f" beyond a fixed {speeds.fixed_seconds_per_image:g} s per image"
            if speeds.fixed_seconds_per_image
            else ""
        ),
        f"{questions_per_prompt:g} questions per prompt, "
        f"{speeds.vqa_pairs_per_second:g} judged (image, question) pairs/s",
    ]
    generation_hours: float | None = (
        images * speeds.seconds_per_image(generation.num_inference_steps) / 3600
    )
    judging_hours: float | None = judging_seconds / 3600
    if not _measured(speeds.image_model, [generation.model]):
        generation_hours = None
        assumptions.append(
            f"no generation time: profile {profile_name} measured {speeds.image_model}, the "
            f"preset renders with {generation.model} (add a measured profile with --tables)"
        )
    if not _measured(speeds.vqa_model, vqa_models):
        judging_hours = None
        assumptions.append(
            f"no judging time: profile {profile_name} measured VQA with {speeds.vqa_model}, "
            f"the preset judges with {', '.join(vqa_models)} (benchmarks/judging.py measures "
            "it; add the profile with --tables)"
        )
    return Estimate(
        preset=preset,
        num_prompts=num_prompts,
        profile=profile_name,
        llm_steps=llm_steps,
        num_images=images,
        num_questions=questions,
        generation_hours=generation_hours,
        judging_hours=judging_hours,
        startup_hours=speeds.startup_seconds / 3600,
        stages_overlap=speeds.stages_overlap,
        disk_bytes=run_disk_bytes(images, num_prompts, speeds),
        assumptions=assumptions,
    )


def run_disk_bytes(images: int, prompts: int, speeds: ThroughputProfile) -> int:
    """Bytes a run leaves on disk: every candidate once (the dataset folder's copies are
    hard links to the run cache's), the chosen and rejected images once more per pair
    (`jpg_0`/`jpg_1` in the parquet shards), and the rows and records per prompt."""
    return (images + 2 * prompts) * speeds.bytes_per_image + prompts * speeds.bytes_per_prompt


def _measured(profile_model: str | None, used: list[str]) -> bool:
    """Whether a profile's figure applies to the models a preset uses (a profile that
    names no model applies to any)."""
    return profile_model is None or all(model == profile_model for model in used)


def _questions_per_prompt(pipeline: Pipeline) -> float:
    """Mean valid questions per prompt of the prompt file a preset reads, if it reads one."""
    if LOAD_PROMPTS_STEP not in pipeline.dag:
        return PAPER_QUESTIONS_PER_PROMPT
    records = load_prompt_records(pipeline.dag.get_step(LOAD_PROMPTS_STEP)["step"].data_files)
    valid = [pair for record in records for pair in record["qa_pairs"] if pair.get("valid", True)]
    return len(valid) / len(records) if valid else PAPER_QUESTIONS_PER_PROMPT


def _llm_steps(
    pipeline: Pipeline, num_prompts: int, tables: EstimateTables
) -> tuple[list[LLMStepEstimate], list[str]]:
    estimates, assumptions = [], []
    for name in pipeline.dag:
        step = pipeline.dag.get_step(name)["step"]
        llm = getattr(step, "llm", None)
        if llm is None:
            continue
        calls = _calls(step, num_prompts)
        profile = tables.llm_calls.get(name)
        if profile is None:
            raise ConfigurationError(f"No token profile for LLM step {name!r} in the tables.")
        model = str(getattr(llm, "model", ""))
        price = tables.prices.get(model)
        input_tokens = calls * profile.input_tokens
        output_tokens = calls * profile.output_tokens
        cost = (
            None
            if price is None
            else (input_tokens * price.input_per_million + output_tokens * price.output_per_million)
            / 1e6
        )
        estimates.append(LLMStepEstimate(name, model, calls, input_tokens, output_tokens, cost))
        assumptions.append(
            f"{name}: {profile.input_tokens} input + {profile.output_tokens} output tokens per call"
            + ("" if price else f"; no price for {model} (add it with --tables)")
        )
    if estimates:
        assumptions.append(f"LLM prices as of {tables.prices_as_of}; check your provider's")
    return estimates, assumptions


def _calls(step: object, num_prompts: int) -> int:
    """LLM calls a step makes for `num_prompts` final prompts."""
    per_call = getattr(step, "prompts_per_call", None)
    if per_call:  # the prompt writer: several prompts per call
        return math.ceil(num_prompts / per_call)
    return num_prompts * int(getattr(step, "num_generations", 1) or 1)
