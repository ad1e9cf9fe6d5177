"""`evaluate`: base against tuned on the chosen suites, from images to report.

1. load the suites' prompts;
2. render the missing images of both models (same prompts, same seeds, cached);
3. measure: each judge is loaded once and scores every suite that needs it;
4. compare (win rates, paired differences with intervals) and write `metrics.json`,
   `observations.jsonl` and `report/index.html`.
"""

from __future__ import annotations

import gc
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from pydantic import BaseModel, Field

from agfsync.errors import ConfigurationError
from agfsync.evaluation.fidelity import (
    dsg_correct,
    free_form_answers,
    multiple_choice_prompt,
    tifa_correct,
)
from agfsync.evaluation.generate import ImageCache, ModelUnderTest, Sampling, render_missing
from agfsync.evaluation.metrics import (
    ALL,
    STATISTICS_NOTE,
    Comparison,
    ModelRole,
    Observation,
    compare,
)
from agfsync.evaluation.report import write_report
from agfsync.evaluation.suites import PromptItem, Suite, SuiteName, load_suite
from agfsync.evaluation.vlm_judge import JUDGE_QUESTIONS, PairJudge, VLMJudgeConfig, judge_pairs
from agfsync.ownership import (
    FolderKind,
    check_output_folder,
    check_writable,
    claim_folder,
    write_folder,
)
from agfsync.progress import progress
from agfsync.run.preflight import ModelNeed, check_disk, check_models, png_bytes
from agfsync.scoring import ImageScorer, ScorerSpec, VQAScorer
from agfsync.scoring.aesthetic import DEFAULT_AESTHETIC_BACKBONE

logger = logging.getLogger(__name__)

ROLES: tuple[ModelRole, ...] = ("base", "tuned")
METRICS_FILE = "metrics.json"
OBSERVATIONS_FILE = "observations.jsonl"
CHUNK_SIZE = 64
"""Images read into memory at once while scoring."""
IMAGE_SCORE_SUITES: tuple[SuiteName, ...] = ("hpsv2", "heldout")
"""Suites scored image by image with CLIP, aesthetic and any extra judge."""


class EvaluationConfig(BaseModel):
    """What to compare, on what, with which judges; defaults follow the AGFSync paper."""

    base: str = Field(description="The base model: Hub id, folder or `tiny:<name>`.")
    tuned: str = Field(
        description="The tuned model, or a folder with LoRA weights for the base "
        "(what `agfsync train` writes)."
    )
    suites: list[SuiteName] = Field(default_factory=lambda: ["dsg", "hpsv2"])
    prompts_per_suite: int | None = Field(
        default=None, ge=1, description="Evenly spread prompts per suite; None: all."
    )
    tifa_question_answers: Path | None = Field(
        default=None, description="TIFA v1.0 question–answer file (needed by `tifa`)."
    )
    heldout_prompts: Path | None = Field(
        default=None, description="JSONL prompts with QA pairs (needed by `heldout`)."
    )
    sampling: Sampling = Field(default_factory=Sampling)
    vqa: ScorerSpec = Field(
        default_factory=lambda: ScorerSpec(name="vqa", model="Salesforce/blip2-flan-t5-xxl"),
        description="VQA judge of TIFA, DSG and held-out (paper: BLIP-2 flan-t5-xxl).",
    )
    clip: ScorerSpec = Field(
        default_factory=lambda: ScorerSpec(name="clip", model="openai/clip-vit-base-patch16"),
        description="CLIP-score judge (paper: ViT-B/16).",
    )
    aesthetic: ScorerSpec = Field(
        default_factory=lambda: ScorerSpec(name="aesthetic", model=DEFAULT_AESTHETIC_BACKBONE),
        description="Aesthetic judge: the LAION head on CLIP ViT-L/14 (paper: VILA).",
    )
    extra_scorers: list[ScorerSpec] = Field(
        default_factory=list,
        description="Further registered judges on HPSv2 and held-out, e.g. pickscore.",
    )
    vlm: VLMJudgeConfig = Field(default_factory=VLMJudgeConfig)
    device: str | None = Field(default=None, description="torch device; None: CUDA if any.")
    dtype: str = Field(default="auto", description="auto: fp16 on CUDA, fp32 elsewhere.")
    batch_size: int = Field(default=8, ge=1, description="Images per denoising call.")
    image_cache: Path | None = Field(
        default=None, description="Where images are cached; None: `<out>/images`."
    )
    bootstrap_seed: int = Field(default=0, description="Seed of the bootstrap intervals.")
    grid_size: int = Field(default=8, ge=1, description="Prompts per suite in the image grids.")


@dataclass(frozen=True)
class EvaluationResult:
    metrics_path: Path
    report_path: Path
    comparisons: list[Comparison]


class PairedImages:
    """The cached images of both models, by prompt."""

    def __init__(self, caches: dict[ModelRole, ImageCache]) -> None:
        self.caches = caches

    def paths(self, role: ModelRole, item: PromptItem) -> list[Path]:
        cache = self.caches[role]
        return [cache.path(item, index) for index in range(cache.sampling.images_per_prompt)]

    def chunks(
        self, items: list[PromptItem], what: str, size: int = CHUNK_SIZE
    ) -> Iterator[list[tuple[ModelRole, PromptItem, Path]]]:
        """Every (model, prompt, image path), `size` at a time (to bound memory), with
        the progress of `what` (say, "dsg: vqa") shown."""
        entries = [
            (role, item, path)
            for role in ROLES
            for item in items
            for path in self.paths(role, item)
        ]
        with progress(what, total=len(entries), unit="images") as bar:
            for start in range(0, len(entries), size):
                chunk = entries[start : start + size]
                yield chunk
                bar.advance(len(chunk))


def _models_to_load(
    config: EvaluationConfig, models: dict[ModelRole, ModelUnderTest]
) -> list[ModelNeed]:
    """Every model the evaluation will load (the judges of the chosen suites only), for
    the check before any image is rendered."""
    needs = [ModelNeed(models["base"].model, "--base"), ModelNeed(models["tuned"].model, "--tuned")]
    names = set(config.suites)
    judges = [(config.vqa, "--vqa-model")] if names & {"tifa", "dsg", "heldout"} else []
    if names & set(IMAGE_SCORE_SUITES):
        judges += [(config.clip, "--clip-model"), (config.aesthetic, "--aesthetic-model")]
        judges += [(spec, f"--scorer {spec.name}") for spec in config.extra_scorers]
    for spec, flag in judges:
        needs += [ModelNeed(reference, flag) for reference in spec.model_references()]
    return needs


EVALUATION_ENTRIES = (METRICS_FILE, OBSERVATIONS_FILE, "images/", "report/")
"""The names an evaluation folder of agfsync holds."""
FALLBACK_IMAGE_SIDE = 1024
"""Pixels per side assumed for the disk check when neither the sampling options nor
the model's configuration give the image size (the largest supported default)."""


def preflight(
    config: EvaluationConfig,
    out_dir: Path,
    caches: dict[ModelRole, ImageCache],
    prompts: list[PromptItem],
    suites: int,
) -> None:
    """Before the output folder is claimed and any model loads: the image cache accepts
    the images still to render (a read-only cache that holds them all is fine), and the
    disk has room for them and the report (`evaluation_disk_needs`). The output folder's
    own check is `check_output_folder`'s."""
    missing = {role: len(cache.missing(prompts)) for role, cache in caches.items()}
    for role, cache in caches.items():
        if missing[role]:
            check_writable(
                cache.folder,
                what="the image cache (--image-cache)" if config.image_cache else "--output",
                fix="choose a folder you can write to with --image-cache",
            )
    check_disk(
        evaluation_disk_needs(config, out_dir, caches, missing, len(prompts), suites),
        hint="free some space, choose another --output or --image-cache, or evaluate "
        "fewer prompts (--prompts-per-suite)",
    )


def evaluation_disk_needs(
    config: EvaluationConfig,
    out_dir: Path,
    caches: dict[ModelRole, ImageCache],
    missing: dict[ModelRole, int],
    prompts: int,
    suites: int,
) -> dict[Path, int]:
    """A rough bound of what `evaluate` writes: the `missing` images of each model's
    cache, and the report's grids (`grid_size` of the `prompts` per suite, both models),
    at `PNG_BYTES_PER_PIXEL` of the sampling size (else the model's native one)."""
    needs: dict[Path, int] = {}
    for role, cache in caches.items():
        width, height = _image_size(config.sampling, cache.model.model)
        needs[cache.folder] = png_bytes(width, height, missing[role])
        report = suites * min(config.grid_size, prompts) * config.sampling.images_per_prompt
        needs[out_dir] = needs.get(out_dir, 0) + png_bytes(width, height, report)
    return needs


def _image_size(sampling: Sampling, model: str) -> tuple[int, int]:
    """(width, height) the images are rendered at: the sampling options, else the model's
    native resolution read from its configuration (no weights), else a generous guess."""
    if sampling.width and sampling.height:
        return sampling.width, sampling.height
    try:
        from agfsync.train.models import inspect_base_model

        side = inspect_base_model(model).native_resolution
    except Exception:  # not an SD pipeline we can read: the bound, not the run, guesses
        side = FALLBACK_IMAGE_SIDE
    return sampling.width or side, sampling.height or side


def evaluate(
    config: EvaluationConfig, out_dir: Path, *, overwrite: bool = False
) -> EvaluationResult:
    """Compare tuned with base on `config.suites`; write the results under `out_dir`,
    an agfsync evaluation folder (`agfsync.ownership`: a user's files there are kept,
    and a folder of another kind is refused before anything runs)."""
    check_output_folder(
        out_dir,
        FolderKind.EVALUATION,
        flag="--output",
        overwrite=overwrite,
        reserved=EVALUATION_ENTRIES,
    )
    suites = [
        load_suite(
            name,
            prompts_per_suite=config.prompts_per_suite,
            tifa_question_answers=config.tifa_question_answers,
            heldout_prompts=config.heldout_prompts,
        )
        for name in dict.fromkeys(config.suites)
    ]
    judge = config.vlm.create() if any(suite.name == "vlm" for suite in suites) else None
    models: dict[ModelRole, ModelUnderTest] = {
        "base": ModelUnderTest(config.base),
        "tuned": ModelUnderTest.tuned(config.tuned, config.base),
    }
    check_models(_models_to_load(config, models))
    cache_root = config.image_cache or out_dir / "images"
    caches = {
        role: ImageCache(cache_root, model, config.sampling) for role, model in models.items()
    }
    prompts = list({item.id: item for suite in suites for item in suite.items}.values())
    preflight(config, out_dir, caches, prompts, len(suites))
    owned = claim_folder(
        out_dir,
        FolderKind.EVALUATION,
        flag="--output",
        overwrite=overwrite,
        reserved=EVALUATION_ENTRIES,
    )
    owned.add(*EVALUATION_ENTRIES)
    for cache in caches.values():
        render_missing(
            cache, prompts, device=config.device, dtype=config.dtype, batch_size=config.batch_size
        )
    images = PairedImages(caches)

    observations: list[Observation] = []
    by_name = {suite.name: suite for suite in suites}
    unreadable = 0
    if judge is not None:  # first: an API failure shows before the local judges load
        judged, unreadable = measure_vlm(by_name["vlm"], images, judge, config.vlm.concurrency)
        observations += judged
    if by_name.keys() & {"tifa", "dsg", "heldout"}:
        observations += _with_judge(
            config.vqa, config, lambda vqa: measure_fidelity(by_name, images, vqa)
        )
    image_score_suites = [by_name[name] for name in IMAGE_SCORE_SUITES if name in by_name]
    if image_score_suites:
        for spec in [config.clip, config.aesthetic, *config.extra_scorers]:
            observations += _with_judge(
                spec,
                config,
                lambda scorer: [
                    observation
                    for suite in image_score_suites
                    for observation in measure_scores(suite, images, scorer)
                ],
            )

    order = {suite.name: position for position, suite in enumerate(suites)}
    comparisons = sorted(
        compare(observations, seed=config.bootstrap_seed), key=lambda c: order[c.suite]
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = {
        "models": {role: {**asdict(model), "label": model.label} for role, model in models.items()},
        "config": json.loads(config.model_dump_json()),
        "suites": {
            suite.name: {
                "prompts": len(suite.items),
                "images": 2 * len(suite.items) * config.sampling.images_per_prompt,
                "questions": sum(len(item.questions) for item in suite.items),
            }
            for suite in suites
        },
        "vlm_unreadable_answers": unreadable,
        "statistics": STATISTICS_NOTE,
        "comparisons": [comparison.as_dict() for comparison in comparisons],
    }
    metrics_path = out_dir / METRICS_FILE
    # Written aside and recorded (`OwnedFolder.write_file`): a later run replaces them
    # only while they are unchanged.
    owned.write_file(
        METRICS_FILE,
        lambda path: path.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8"),
    )

    def write_observations(path: Path) -> None:
        with path.open("w", encoding="utf-8") as handle:
            for observation in observations:
                handle.write(json.dumps(asdict(observation)) + "\n")

    owned.write_file(OBSERVATIONS_FILE, write_observations)
    report = out_dir / "report"  # an agfsync report folder: only an earlier one is replaced
    write_folder(
        report,
        FolderKind.REPORT,
        partial(
            write_report,
            metrics=metrics,
            comparisons=comparisons,
            observations=observations,
            suites=suites,
            image_paths=images.paths,
            grid_size=config.grid_size,
        ),
        flag="report folder",
        what="the report",
    )
    return EvaluationResult(metrics_path, report / "index.html", comparisons)


def measure_fidelity(
    suites: dict[SuiteName, Suite], images: PairedImages, vqa: ImageScorer
) -> list[Observation]:
    """The VQA judge's suites: TIFA, DSG and the held-out VQA score."""
    if not isinstance(vqa, VQAScorer):
        raise ConfigurationError(f"The VQA judge must be `vqa`, not {vqa.name!r}.")
    observations = []
    if "tifa" in suites:
        observations += measure_tifa(suites["tifa"], images, vqa)
    if "dsg" in suites:
        observations += measure_dsg(suites["dsg"], images, vqa)
    if "heldout" in suites:
        observations += measure_scores(suites["heldout"], images, vqa)
    return observations


def measure_tifa(suite: Suite, images: PairedImages, vqa: VQAScorer) -> list[Observation]:
    """TIFA accuracy (0-100) per image, and per question by question type."""
    observations = []
    for chunk in images.chunks(suite.items, f"{suite.name}: {vqa.name}"):
        answers = free_form_answers(
            vqa,
            [_read(path) for _, _, path in chunk],
            [[multiple_choice_prompt(q) for q in item.questions] for _, item, _ in chunk],
        )
        for (role, item, _), image_answers in zip(chunk, answers, strict=True):
            correct = tifa_correct(item.questions, image_answers)
            observations += _question_observations(suite, role, item, correct)
    return observations


def measure_dsg(suite: Suite, images: PairedImages, vqa: VQAScorer) -> list[Observation]:
    """DSG accuracy (0-100) with dependencies, per image and per question category."""
    observations = []
    for chunk in images.chunks(suite.items, f"{suite.name}: {vqa.name}"):
        yes_values = vqa.answer(
            [_read(path) for _, _, path in chunk],
            [[question.text for question in item.questions] for _, item, _ in chunk],
        )
        for (role, item, _), values in zip(chunk, yes_values, strict=True):
            observations += _question_observations(
                suite, role, item, dsg_correct(item.questions, values)
            )
    return observations


def _question_observations(
    suite: Suite, role: ModelRole, item: PromptItem, correct: list[float]
) -> list[Observation]:
    """The image's accuracy under `ALL`, and each question under its category."""
    accuracy = 100.0 * sum(correct) / len(correct) if correct else float("nan")
    observations = [Observation(suite.name, suite.name, ALL, item.id, role, accuracy)]
    observations += [
        Observation(
            suite.name, suite.name, question.category, f"{item.id}#{question.id}", role, 100 * value
        )
        for question, value in zip(item.questions, correct, strict=True)
    ]
    return observations


def measure_scores(suite: Suite, images: PairedImages, scorer: ImageScorer) -> list[Observation]:
    """A judge's 0-100 score of every image, overall and by the suite's groups."""
    observations = []
    for chunk in images.chunks(suite.items, f"{suite.name}: {scorer.name}"):
        context: dict[str, Any] = {}
        if "qa_pairs" in scorer.required_context:
            context["qa_pairs"] = [
                [{"question": question.text} for question in item.questions] for _, item, _ in chunk
            ]
        scores = scorer.score(
            [_read(path) for _, _, path in chunk], [item.prompt for _, item, _ in chunk], **context
        ).values
        observations += [
            Observation(suite.name, scorer.name, group, item.id, role, float(score))
            for (role, item, _), score in zip(chunk, scores.tolist(), strict=True)
            for group in (ALL, item.group)
        ]
    return observations


def measure_vlm(
    suite: Suite, images: PairedImages, judge: PairJudge, concurrency: int
) -> tuple[list[Observation], int]:
    """Votes of the VLM judge per pair and question (see `vlm_judge`), overall and by
    style; returns the observations and the number of unreadable (pair, question)s."""
    pairs = [
        (item.prompt, _read(base), _read(tuned), item)
        for item in suite.items
        for base, tuned in zip(images.paths("base", item), images.paths("tuned", item), strict=True)
    ]
    verdicts = judge_pairs(judge, [pair[:3] for pair in pairs], concurrency=concurrency)
    observations = []
    unreadable = 0
    for (_, _, _, item), verdict in zip(pairs, verdicts, strict=True):
        for question in JUDGE_QUESTIONS:
            counted = verdict.votes(question)
            if counted is None:
                unreadable += 1
                continue
            for role, value in zip(ROLES, (counted[1], counted[0]), strict=True):
                observations += [
                    Observation(suite.name, question, group, item.id, role, float(value))
                    for group in (ALL, item.group)
                ]
    return observations, unreadable


def _with_judge(
    spec: ScorerSpec,
    config: EvaluationConfig,
    measure: Callable[[ImageScorer], list[Observation]],
) -> list[Observation]:
    """Load a judge, measure with it, and free its weights before the next one loads."""
    scorer = spec.create(device=config.device, dtype=config.dtype)
    scorer.load()
    try:
        return measure(scorer)
    finally:
        del scorer
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _read(path: Path) -> Image.Image:
    """An image read into memory (its file closed)."""
    with Image.open(path) as image:
        return image.convert("RGB")


def parse_scorer(text: str) -> ScorerSpec:
    """A judge from `NAME=MODEL[,OPTION=VALUE...]`, e.g.
    `pickscore=yuvalkirstain/PickScore_v1,processor=laion/CLIP-ViT-H-14-laion2B-s32B-b79K`."""
    head, *options = text.split(",")
    name, separator, model = head.partition("=")
    pairs = [option.partition("=") for option in options]
    if not separator or not name or not model or any(not sep for _, sep, _ in pairs):
        raise ConfigurationError(
            f"Cannot read judge {text!r}; write NAME=MODEL[,OPTION=VALUE...], "
            "e.g. pickscore=yuvalkirstain/PickScore_v1."
        )
    spec = ScorerSpec(name=name, model=model, options={key: value for key, _, value in pairs})
    spec.scorer_class()  # an unknown name fails here, before any image is rendered
    return spec
