"""The judging stage: every candidate image scored by several judges."""

import math
import traceback
from typing import TYPE_CHECKING, Any, ClassVar

from distilabel.mixins.runtime_parameters import RuntimeParameter
from distilabel.steps import Step, StepInput
from PIL import Image
from pydantic import Field, PrivateAttr

from agfsync.errors import ConfigurationError
from agfsync.logs import quiet_library_progress_bars
from agfsync.models import free_models
from agfsync.progress import report_done
from agfsync.run.artifacts import recorded_or_computed, run_artifacts_root
from agfsync.run.cache import UpstreamSignatureMixin
from agfsync.run.failures import FailureKind, RecordsFailures
from agfsync.run.preflight import ModelNeed
from agfsync.safe_paths import inside
from agfsync.scoring import ImageScorer, JudgeImages, ScorerSpec, weighted_scores

if TYPE_CHECKING:
    from distilabel.typing import StepOutput


class ImageJudging(Step, UpstreamSignatureMixin, RecordsFailures):
    """Scores every candidate image with each configured judge (0–100) and
    combines the scores with the judges' weights.

    Judges are loaded once per replica in `load()`. All images of a batch of
    prompts are scored together, so each judge sees full batches; each image is
    decoded once, and resized once per input size for all the judges that read that
    size (see `ScorerSpec.preprocessing`).

    Attributes:
        scorers: the judges, each a `ScorerSpec` (registry name, model, weight).
        device, dtype: where and in which precision the judges run.

    Runtime parameters:
        - `device`: torch device; None picks CUDA when available.
        - `dtype`: auto, float32, float16 or bfloat16.

    Input columns:
        - prompt (`str`): the text each image is judged against.
        - image_paths (`list[str]`): relative to the run's artifacts folder.

    Output columns:
        - `<name>_scores` (`list[float]`): one per judge, aligned with `image_paths`.
        - weighted_scores (`list[float]`): `sum(weight * score)` per image.

    Categories:
        - scorer

    Examples:
        Score images on disk with CLIP:

        ```python
        from pathlib import Path

        from PIL import Image

        from agfsync.scoring import ScorerSpec
        from agfsync.steps import ImageJudging

        root = Path("artifacts")
        (root / "images").mkdir(parents=True, exist_ok=True)
        for index, colour in enumerate(["red", "blue"]):
            Image.new("RGB", (64, 64), colour).save(root / "images" / f"{index}.png")

        judge = ImageJudging(
            name="judge_images",
            # e.g. model="openai/clip-vit-base-patch16", as the paper
            scorers=[ScorerSpec(name="clip", model="tiny:clip", weight=1.0)],
        )
        judge.set_pipeline_artifacts_path(root)
        judge.load()
        (row,) = next(
            judge.process(
                [{"prompt": "a red square", "image_paths": ["images/0.png", "images/1.png"]}]
            )
        )
        judge.unload()
        # row["clip_scores"]: [s0, s1]; row["weighted_scores"]: 1.0 * clip, per image
        ```
    """

    failure_column: ClassVar[str] = "judging_errors"
    shared_imports: ClassVar[tuple[str, ...]] = ("transformers.models.clip.modeling_clip",)
    """Imported once before distilabel forks the step processes (`import_before_fork`)."""

    scorers: list[ScorerSpec] = Field(
        default_factory=lambda: [
            ScorerSpec(name="clip", model="openai/clip-vit-base-patch16", weight=1.0)
        ],
        description="Judges and their weights (paper: CLIP ViT-B/16, VQA, aesthetics).",
    )
    device: RuntimeParameter[str] | None = Field(
        default=None, description="torch device; None picks CUDA when available."
    )
    dtype: RuntimeParameter[str] = Field(
        default="auto", description="auto (fp16 on CUDA, fp32 on CPU), float32, float16, bfloat16."
    )

    _judges: dict[str, ImageScorer] = PrivateAttr(default_factory=dict)

    @property
    def inputs(self) -> list[str]:
        return ["prompt", "image_paths", *self._context_columns()]

    @property
    def outputs(self) -> list[str]:
        details = [column for column in self._details_columns() if column is not None]
        return (
            [spec.column for spec in self.scorers]
            + details
            + [
                "weighted_scores",
                "judging_errors",
            ]
        )

    def _context_columns(self) -> list[str]:
        columns = {
            column for spec in self.scorers for column in spec.scorer_class().required_context
        }
        return sorted(columns)

    def _details_columns(self) -> list[str | None]:
        return [spec.scorer_class().details_column for spec in self.scorers]

    def models_to_load(self) -> list[ModelNeed]:
        """The judges' models, for the run's preflight check."""
        return [
            ModelNeed(reference, f"{self.name}: judge {spec.name}")
            for spec in self.scorers
            for reference in spec.model_references()
        ]

    def load(self) -> None:
        super().load()
        quiet_library_progress_bars()
        for spec in self.scorers:
            judge = spec.create(device=self.device, dtype=self.dtype)
            judge.load()
            self._judges[spec.name] = judge

    def unload(self) -> None:
        """Drops the judges and gives their device memory back."""
        self._judges.clear()
        free_models(self.device)
        super().unload()

    def process(self, inputs: StepInput) -> "StepOutput":
        # The batch is the unit of work: judged again as a whole, every forward pass is
        # the one of an uninterrupted run (same judge batch sizes), so resumed scores are
        # bit-identical.
        (outputs,) = recorded_or_computed(self, [inputs], lambda units: [self._judge(units[0])])
        for row, judged in zip(inputs, outputs, strict=True):
            row.update(judged)
        count = sum(len(row.get("image_paths") or []) for row in inputs)
        report_done(self._logger, "judged", count, f"{self.name}: {count} images judged")
        yield inputs

    def _judge(self, inputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        root = run_artifacts_root(self)
        images, positions = [], []
        # A row whose image step failed has no paths; it is judged as having no images.
        paths = [row["image_paths"] or [] for row in inputs]
        errors: list[list[str | None]] = [[None] * len(row_paths) for row_paths in paths]
        for row_index, row_paths in enumerate(paths):
            for image_index, path in enumerate(row_paths):
                try:
                    with Image.open(inside(root, path)) as image:
                        images.append(image.convert("RGB"))
                except (OSError, SyntaxError, ValueError) as error:
                    # Scored NaN below, so pair selection leaves it out; the reason stays.
                    errors[row_index][image_index] = FailureKind.UNREADABLE_IMAGE.message(
                        f"{path}: {error}"
                    )
                    continue
                positions.append((row_index, image_index))
        # Decoded once above; resized once per judge input size for all judges.
        shared = JudgeImages(images)
        prompts = [inputs[row_index]["prompt"] for row_index, _ in positions]
        context = {
            column: [inputs[row_index][column] for row_index, _ in positions]
            for column in self._context_columns()
        }
        results: dict[str, tuple[list[float], list[Any] | None]] = {}
        for spec in self.scorers:
            try:
                judged, details = self._judges[spec.name].score(shared, prompts, **context)
            except ConfigurationError:
                raise  # a setting that cannot work fails the same way on every run
            except Exception as error:
                # Recorded on every image of the batch: those prompts get no pair, the run
                # says so, and running the same command again judges this batch again.
                self._logger.warning(
                    f"Judge {spec.name!r} failed on a batch:\n{traceback.format_exc()}"
                )
                failure = f"judge {spec.name} failed: {type(error).__name__}: {error}"
                for row_index, image_index in positions:
                    earlier = errors[row_index][image_index]
                    errors[row_index][image_index] = (
                        failure if earlier is None else f"{earlier}; {failure}"
                    )
                results[spec.name] = ([math.nan] * len(positions), None)
                continue
            results[spec.name] = (judged.tolist(), details)
        weights = {spec.name: spec.weight for spec in self.scorers}
        judged_images: list[list[tuple[int, int]]] = [[] for _ in inputs]
        for position, (row_index, image_index) in enumerate(positions):
            judged_images[row_index].append((position, image_index))
        details_columns = self._details_columns()
        for row_index, row in enumerate(inputs):
            count = len(paths[row_index])
            row_scores = {}
            for spec, details_column in zip(self.scorers, details_columns, strict=True):
                scores, details = results[spec.name]
                row_scores[spec.name] = [math.nan] * count
                row_details: list[Any] = [None] * count
                for position, image_index in judged_images[row_index]:
                    row_scores[spec.name][image_index] = scores[position]
                    if details is not None:
                        row_details[image_index] = details[position]
                row[spec.column] = row_scores[spec.name]
                if details_column is not None:
                    row[details_column] = row_details
            row["weighted_scores"] = weighted_scores(row_scores, weights)
            row["judging_errors"] = errors[row_index]
        return inputs
