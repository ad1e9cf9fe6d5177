"""From a finished run to a preference dataset on disk, in the Hub's layout.

The pipeline's rows carry image *paths*; here the chosen and rejected images
become embedded `datasets.Image` columns in the Diffusion-DPO / Pick-a-Pic
convention (`caption`, `jpg_0`, `jpg_1`, `label_0`) plus `chosen`/`rejected`, and
the dataset is written as parquet shards with a card, so that
`datasets.load_dataset(<folder>)` and the Hub read it as is.
"""

from __future__ import annotations

import hashlib
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import datasets

from agfsync.errors import ConfigurationError

IMAGE_COLUMNS = ("jpg_0", "jpg_1", "chosen", "rejected")
ROWS_PER_SHARD = 500
"""Keeps each parquet shard of embedded images at a size the Hub serves well."""


class MissingImageError(ConfigurationError):
    """A row's image file is gone from the run's artifacts (deleted, a lost disk)."""


def _image_bytes(artifacts_dir: Path, relative_path: str, prompt_id: str) -> dict[str, Any]:
    path = artifacts_dir / relative_path
    if not path.is_file():
        raise MissingImageError(
            f"Image {path} of prompt {prompt_id!r} is missing; run the same command again to "
            "render it (finished work is reused from the cache)."
        )
    return {"bytes": path.read_bytes(), "path": relative_path}


def preference_columns(row: dict[str, Any], artifacts_dir: Path) -> dict[str, Any]:
    """The Diffusion-DPO columns of a row with a pair: `caption`, `label_0` and the
    chosen and rejected images read from the artifacts folder, in `datasets.Image`'s
    storage layout (`{"bytes", "path"}`). `jpg_0` is the chosen image and
    `label_0 = 1.0` (trainers read the label, not the position). Raises
    ConfigurationError when an image file is missing.
    """
    chosen = _image_bytes(artifacts_dir, row["image_paths"][row["chosen_index"]], row["prompt_id"])
    rejected = _image_bytes(
        artifacts_dir, row["image_paths"][row["rejected_index"]], row["prompt_id"]
    )
    return {
        "caption": row["prompt"],
        "label_0": 1.0,
        "jpg_0": chosen,
        "jpg_1": rejected,
        "chosen": chosen,
        "rejected": rejected,
    }


def build_preference_dataset(
    rows: datasets.Dataset, artifacts_dir: Path
) -> tuple[datasets.Dataset, list[dict[str, Any]]]:
    """Add the pair columns, with the images read from `artifacts_dir`, to every row
    that has a pair.

    Returns the dataset and the rows left out (those whose `pair_error` says why no
    pair could be formed), so callers can report them. A row without a pair and without
    a reason (the pair step itself failed on it) is left out with that as its reason.
    """
    paired, unpaired = [], []
    for row in rows:
        if row.get("pair_error"):
            unpaired.append(row)
            continue
        if row.get("chosen_index") is None:
            unpaired.append({**row, "pair_error": "the pair step failed on this row (see the log)"})
            continue
        paired.append({**row, **preference_columns(row, artifacts_dir)})
    features = rows.features.copy()
    features["caption"] = datasets.Value("string")
    features["label_0"] = datasets.Value("float64")
    for column in IMAGE_COLUMNS:
        features[column] = datasets.Image()
    return datasets.Dataset.from_list(paired, features=features), unpaired


def write_dataset_folder(
    dataset: datasets.Dataset,
    output_dir: Path,
    *,
    card: Callable[[list[str], Path], str],
    extra_files: dict[str, Path] | None = None,
    artifacts_dir: Path | None = None,
    split: str = "train",
) -> None:
    """Write `data/<split>-*.parquet`, `README.md`, extra files and `artifacts/`.

    `card(shard paths, folder)` returns the card's text; it may write files the card
    refers to (figures) into `folder`.

    Shard names end in a digest of their bytes and the card lists them by name:
    `datasets` keys its local cache by the card's config, not by file contents, so a
    dataset regenerated in the same folder under the same names would load stale.
    Everything is written to a sibling `.partial` folder first and renamed at the
    end, so an interrupted write never leaves a folder that looks complete.
    """
    output_dir = output_dir.resolve()
    if (
        output_dir.exists()
        and any(output_dir.iterdir())
        and not (output_dir / "README.md").exists()
    ):
        raise ConfigurationError(
            f"{output_dir} exists and does not hold an agfsync dataset; choose an empty or "
            "new --output folder."
        )
    staging = output_dir.with_name(output_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        _write_staging(dataset, staging, card, extra_files, artifacts_dir, split)
    except BaseException as error:
        # A full disk, a quota, a missing image, Ctrl-C: the staging copy goes, the
        # folder (an earlier dataset, if any) stays as it was.
        shutil.rmtree(staging, ignore_errors=True)
        if not isinstance(error, OSError):
            raise
        raise ConfigurationError(
            f"Could not write the dataset to {output_dir} ({error.strerror or error}); "
            "nothing was changed there. Free disk space (or fix the cause) and run the "
            "same command again: finished work is reused."
        ) from error
    if output_dir.exists():
        shutil.rmtree(output_dir)
    staging.rename(output_dir)


def _write_staging(
    dataset: datasets.Dataset,
    staging: Path,
    card: Callable[[list[str], Path], str],
    extra_files: dict[str, Path] | None,
    artifacts_dir: Path | None,
    split: str,
) -> None:
    (staging / "data").mkdir(parents=True)
    num_shards = max(1, math.ceil(len(dataset) / ROWS_PER_SHARD))
    shard_paths = []
    for index in range(num_shards):
        shard = dataset.shard(num_shards=num_shards, index=index, contiguous=True)
        written = staging / "data" / "shard.parquet"
        shard.to_parquet(written)
        digest = hashlib.sha256(written.read_bytes()).hexdigest()[:12]
        name = f"data/{split}-{index:05d}-of-{num_shards:05d}-{digest}.parquet"
        written.rename(staging / name)
        shard_paths.append(name)
    (staging / "README.md").write_text(card(shard_paths, staging), encoding="utf-8")
    for name, source in (extra_files or {}).items():
        if source.is_file():
            shutil.copyfile(source, staging / name)
    if artifacts_dir is not None and artifacts_dir.is_dir():
        shutil.copytree(artifacts_dir, staging / "artifacts")
