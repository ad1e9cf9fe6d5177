"""The judging stage: every candidate image scored by several judges."""

from typing import TYPE_CHECKING

from distilabel.mixins.runtime_parameters import RuntimeParameter
from distilabel.steps import Step, StepInput
from PIL import Image
from pydantic import Field, PrivateAttr

from agfsync.scoring import ImageScorer, ScorerSpec, weighted_scores
from agfsync.steps.artifacts import run_artifacts_root
from agfsync.steps.cache import UpstreamSignatureMixin

if TYPE_CHECKING:
    from distilabel.typing import StepOutput


class ImageJudging(Step, UpstreamSignatureMixin):
    """Scores every candidate image with each configured judge (0–100) and
    combines the scores with the judges' weights.

    Judges are loaded once per replica in `load()`. All images of a batch of
    prompts are scored together, so each judge sees full batches.

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
    """

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
        return ["prompt", "image_paths"]

    @property
    def outputs(self) -> list[str]:
        return [spec.column for spec in self.scorers] + ["weighted_scores"]

    def load(self) -> None:
        super().load()
        for spec in self.scorers:
            judge = spec.create(device=self.device, dtype=self.dtype)
            judge.load()
            self._judges[spec.name] = judge

    def process(self, inputs: StepInput) -> "StepOutput":
        root = run_artifacts_root(self)
        images, prompts, owners = [], [], []
        for row_index, row in enumerate(inputs):
            for path in row["image_paths"]:
                with Image.open(root / path) as image:
                    images.append(image.convert("RGB"))
                prompts.append(row["prompt"])
                owners.append(row_index)
        weights = {spec.name: spec.weight for spec in self.scorers}
        per_judge = {
            spec.name: self._judges[spec.name].score(images, prompts).tolist()
            for spec in self.scorers
        }
        for row_index, row in enumerate(inputs):
            mine = [i for i, owner in enumerate(owners) if owner == row_index]
            row_scores = {name: [scores[i] for i in mine] for name, scores in per_judge.items()}
            for spec in self.scorers:
                row[spec.column] = row_scores[spec.name]
            row["weighted_scores"] = weighted_scores(row_scores, weights)
        yield inputs
