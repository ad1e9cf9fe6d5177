"""The export stage: the pairs as the pipeline's own training-ready dataset config."""

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import datasets
from distilabel import distiset
from distilabel.constants import STEPS_OUTPUTS_PATH
from distilabel.steps import Step, StepInput

from agfsync.atomic import write_atomically
from agfsync.dataset.folder import (
    PAIR_ROW_FEATURES,
    MissingImageError,
    pair_config_features,
    preference_columns,
)
from agfsync.logs import quiet_library_progress_bars
from agfsync.progress import report_done
from agfsync.run.artifacts import JOURNALS_DIR, run_artifacts_root
from agfsync.run.cache import UpstreamSignatureMixin
from agfsync.run.failures import RecordsFailures

if TYPE_CHECKING:
    from distilabel.typing import StepOutput


def _printable(value: Any) -> Any:
    """A sample value the card's JSON can hold: image bytes become a short note."""
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if isinstance(value, dict):
        return {key: _printable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_printable(item) for item in value]
    return value


class _CardWithoutBinarySamples(distiset.DistilabelDatasetCard):
    """distilabel 1.5.3 writes one sample row of every config into the card it pushes
    as JSON, and fails on bytes (it meant to blank images out, but never writes the
    blank back). The pair config holds image bytes, so its sample shows their sizes."""

    @classmethod
    def from_template(cls, *args: Any, **kwargs: Any) -> Any:
        if "sample_records" in kwargs:
            kwargs["sample_records"] = _printable(kwargs["sample_records"])
        return super().from_template(*args, **kwargs)


distiset.DistilabelDatasetCard = _CardWithoutBinarySamples

PAIR_CONFIG = "default"
"""The Distiset config the shards are written to: `distilabel pipeline run --repo-id`
pushes it as the repository's default config, beside the leaf step's raw rows."""


OPTIONAL_INPUTS = {"category", "qa_pairs", "image_seeds", "noise_sigmas"}
"""Columns a composed pipeline may lack (no categories, no QA step, remote images):
they are empty in the shards then."""


class PreferenceDatasetExport(Step, UpstreamSignatureMixin, RecordsFailures):
    """Writes each batch's prompts that have a pair, in the Diffusion-DPO layout, as a
    parquet shard of the Distiset's `default` config.

    distilabel 1.5.3 stores step outputs without `datasets` features and moves rows
    between processes as JSON, so its own rows can carry image paths but never image
    bytes. `create_distiset` however loads every folder under `steps_outputs/` as a
    config, with the features recorded in its parquet files. The shards written here
    hold `jpg_0`/`jpg_1` as image bytes (`agfsync.dataset.folder`'s layout), so
    `distilabel pipeline run --repo-id` publishes a dataset that diffusers' DPO scripts
    and agfsync's trainer read directly, with every score, the QA pairs, seeds and sigmas.

    Rows pass through unchanged (they stay the leaf step's config). A batch whose shard
    cannot be written (a missing image, a full disk) keeps its rows with the reason in
    `export_error`; the next run of the same command writes it.

    Input columns:
        - prompt_id, prompt, category, qa_pairs, image_paths, image_seeds,
          noise_sigmas, weighted_scores, the judges' `*_scores`, chosen_index,
          rejected_index, chosen_score, rejected_score, score_margin.

    Output columns:
        - export_error (`str`): why the row's shard could not be written; None when it was.

    Categories:
        - save

    Examples:
        The last step of a pipeline from prompts to a Diffusion-DPO dataset:

        ```python
        from distilabel.pipeline import Pipeline
        from distilabel.steps import LoadDataFromDicts

        from agfsync.scoring import ScorerSpec
        from agfsync.steps import (
            CandidateImageGeneration,
            ImageJudging,
            PreferenceDatasetExport,
            PreferencePairSelection,
        )

        with Pipeline(name="my-preferences") as pipeline:
            prompts = LoadDataFromDicts(
                data=[{"prompt": "a red cube on a blue sphere"}, {"prompt": "a fox at dawn"}]
            )
            images = CandidateImageGeneration(
                model="tiny:stable-diffusion", num_images=3, num_inference_steps=2,
                height=64, width=64,
            )
            judge = ImageJudging(scorers=[ScorerSpec(name="clip", model="tiny:clip")])
            pairs = PreferencePairSelection()
            export = PreferenceDatasetExport()
            prompts >> images >> judge >> pairs >> export

        if __name__ == "__main__":
            distiset = pipeline.run(use_cache=False)
            rows = distiset["default"]["train"]  # caption, jpg_0, jpg_1 (bytes), label_0
        ```
    """

    failure_column: ClassVar[str] = "export_error"

    def load(self) -> None:
        super().load()
        quiet_library_progress_bars()  # each shard's "Creating parquet" bar

    @property
    def inputs(self) -> dict[str, bool]:
        return {
            **{column: column not in OPTIONAL_INPUTS for column in PAIR_ROW_FEATURES},
            "weighted_scores": True,
        }

    @property
    def outputs(self) -> list[str]:
        return ["export_error"]

    def process(self, inputs: StepInput) -> "StepOutput":
        paired = [row for row in inputs if row.get("chosen_index") is not None]
        for row in inputs:
            row["export_error"] = None
        if paired:
            try:
                self._write_shard(paired)
                report_done(
                    self._logger, "pairs", len(paired), f"{self.name}: {len(paired)} pairs written"
                )
            except (MissingImageError, OSError) as failure:
                error = f"the pair shard was not written: {failure}"
                self._logger.warning(f"{self.name}: {error}")
                for row in paired:
                    row["export_error"] = error
        yield inputs

    def _write_shard(self, rows: list[dict]) -> None:
        artifacts = run_artifacts_root(self)
        score_columns = sorted(column for column in rows[0] if column.endswith("_scores"))
        features = pair_config_features(score_columns)
        records = [
            {
                **{column: row.get(column) for column in features},
                **preference_columns(row, artifacts),
            }
            for row in rows
        ]
        shard = datasets.Dataset.from_list(records, features=features)
        write_atomically(
            self._shard_path(artifacts.parent, rows),
            lambda path: shard.to_parquet(path),
            partial_dir=artifacts.parent / JOURNALS_DIR,
        )

    @staticmethod
    def _shard_path(data_dir: Path, rows: list[dict]) -> Path:
        # distilabel reads the files of a config sorted by `int(stem)`; a digest of the
        # batch's prompts names the same batch the same way when it is sent again.
        digest = hashlib.sha256("\n".join(row["prompt_id"] for row in rows).encode())
        number = int(digest.hexdigest()[:15], 16)
        return data_dir / STEPS_OUTPUTS_PATH / PAIR_CONFIG / f"{number:018d}.parquet"
