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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from agfsync.errors import ConfigurationError
from agfsync.ownership import FolderKind, check_output_folder, write_folder
from agfsync.safe_paths import inside

IMAGE_COLUMNS = ("jpg_0", "jpg_1", "chosen", "rejected")
ROWS_PER_SHARD = 500
"""Keeps each parquet shard of embedded images at a size the Hub serves well."""


class MissingImageError(ConfigurationError):
    """A row's image file is gone from the run's artifacts (deleted, a lost disk)."""


def _image_file(artifacts_dir: Path, relative_path: str, prompt_id: str) -> Path:
    path = inside(artifacts_dir, relative_path)
    if not path.is_file():
        raise MissingImageError(
            f"Image {path} of prompt {prompt_id!r} is missing; run the same command again to "
            "render it (finished work is reused from the cache)."
        )
    return path


def preference_columns(
    row: dict[str, Any], artifacts_dir: Path, *, embed: bool = True
) -> dict[str, Any]:
    """The Diffusion-DPO columns of a row with a pair: `caption`, `label_0` and the
    chosen and rejected images of the artifacts folder, in `datasets.Image`'s storage
    layout (`{"bytes", "path"}`). `jpg_0` is the chosen image and `label_0 = 1.0`
    (trainers read the label, not the position). Raises MissingImageError when an
    image file is missing.

    With `embed=False` the images are references to their absolute paths, which
    `datasets` embeds when the dataset is pushed (`embed_external_files`), so a
    cached copy costs no image bytes.
    """
    images = []
    for index in (row["chosen_index"], row["rejected_index"]):
        relative_path = row["image_paths"][index]
        path = _image_file(artifacts_dir, relative_path, row["prompt_id"])
        images.append(
            {"bytes": path.read_bytes(), "path": relative_path}
            if embed
            else {"bytes": None, "path": str(path.resolve())}
        )
    chosen, rejected = images
    return {
        "caption": row["prompt"],
        "label_0": 1.0,
        "jpg_0": chosen,
        "jpg_1": rejected,
        "chosen": chosen,
        "rejected": rejected,
    }


def _with_pair_features(features: datasets.Features, *, decode: bool = True) -> datasets.Features:
    features = features.copy()
    features["caption"] = datasets.Value("string")
    features["label_0"] = datasets.Value("float64")
    for column in IMAGE_COLUMNS:
        features[column] = datasets.Image(decode=decode)
    return features


_QA_PAIR_FEATURES = {
    "question": datasets.Value("string"),
    "answer": datasets.Value("string"),
    "element_type": datasets.Value("string"),
    "element": datasets.Value("string"),
    "valid": datasets.Value("bool"),
}


PAIR_ROW_FEATURES = datasets.Features(
    {
        "prompt_id": datasets.Value("string"),
        "category": datasets.Value("string"),
        "prompt": datasets.Value("string"),
        "qa_pairs": datasets.List(_QA_PAIR_FEATURES),
        "image_paths": datasets.List(datasets.Value("string")),
        "image_seeds": datasets.List(datasets.Value("int64")),
        "noise_sigmas": datasets.List(datasets.Value("float64")),
        "chosen_index": datasets.Value("int64"),
        "rejected_index": datasets.Value("int64"),
        "chosen_score": datasets.Value("float64"),
        "rejected_score": datasets.Value("float64"),
        "score_margin": datasets.Value("float64"),
    }
)
"""The columns of a row with a pair that the pipeline's pair config keeps, besides the
judges' scores and the Diffusion-DPO columns."""


def pair_config_features(score_columns: list[str]) -> datasets.Features:
    """The declared features of the rows with a pair that the pipeline itself writes
    (`agfsync.steps.PreferenceDatasetExport`): its batches are written one by one, so
    their types cannot be inferred from each batch (a batch of remote-rendered images
    has only None seeds) and must be the same for all of them.

    The images are declared `decode=False` (rows give `{"bytes", "path"}`): distilabel
    1.5.3 writes a sample row of every config into its card as JSON and fails on
    decoded images ("PngImageFile is not JSON serializable"). Our trainer reads them as
    they are; `.cast_column("jpg_0", datasets.Image())` decodes them.
    """
    features = PAIR_ROW_FEATURES.copy()
    for column in score_columns:
        features[column] = datasets.List(datasets.Value("float64"))
    return _with_pair_features(features, decode=False)


def listed_shards(folder: Path, split: str = "train") -> list[Path]:
    """The parquet shards of `split` that the folder's card lists (its `configs`), each
    checked to lie inside the folder and to be a readable parquet file. A parquet file
    in `data/` that the card does not list is refused rather than published (a stray
    copy would duplicate rows)."""
    card = folder / "README.md"
    try:
        text = card.read_text(encoding="utf-8")
        metadata = yaml.safe_load(text.split("---", 2)[1]) if text.startswith("---") else None
    except (OSError, IndexError, yaml.YAMLError) as error:
        raise ConfigurationError(
            f"{card} is missing or its metadata cannot be read ({error}); regenerate the "
            "dataset (`agfsync generate` with the same arguments reuses finished work)."
        ) from None
    listed = [
        entry["path"]
        for config in (metadata or {}).get("configs") or []
        if isinstance(config, dict)
        for entry in config.get("data_files") or []
        if isinstance(entry, dict) and entry.get("split") == split
    ]
    paths = [
        inside(folder, path)
        for entry in listed
        for path in ([entry] if isinstance(entry, str) else entry)
    ]
    if not paths:
        raise ConfigurationError(
            f"The card of {folder} lists no {split!r} shards; point at the output folder of "
            "`agfsync generate`."
        )
    strays = sorted(
        path.relative_to(folder).as_posix()
        for path in (folder / "data").glob("*.parquet")
        if path.resolve() not in paths
    )
    if strays:
        raise ConfigurationError(
            f"{folder} holds parquet files its card does not list ({', '.join(strays)}); move "
            "them out of data/ (agfsync publishes exactly the rows its card describes)."
        )
    for path in paths:
        try:
            pq.read_metadata(path)
        except (OSError, pa.ArrowException) as error:
            raise ConfigurationError(
                f"{path} is not a readable parquet file ({error}); regenerate the dataset "
                "(`agfsync generate` with the same arguments reuses finished work)."
            ) from None
    return paths


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
    features = _with_pair_features(rows.features)
    if not paired:  # `from_list` cannot type an empty list
        return datasets.Dataset.from_dict({name: [] for name in features}, features), unpaired
    return datasets.Dataset.from_list(paired, features=features), unpaired


DATASET_ENTRIES = (
    "README.md",
    "data/",
    "assets/",
    "artifacts/",
    "run.json",
    "pipeline.yaml",
    "pipeline.log",
)
"""The top-level names a dataset folder of agfsync may hold (besides its marker)."""


def check_dataset_folder(
    output_dir: Path,
    *,
    flag: str = "--output",
    overwrite: bool = False,
    kind: str = FolderKind.DATASET,
    protected: Sequence[Path] = (),
) -> None:
    """Before any work: `output_dir` may receive a dataset folder (see
    `agfsync.ownership`); raises ConfigurationError naming the problem otherwise."""
    check_output_folder(
        output_dir,
        kind,
        flag=flag,
        overwrite=overwrite,
        reserved=DATASET_ENTRIES,
        protected=protected,
    )


def write_dataset_folder(
    dataset: datasets.Dataset,
    output_dir: Path,
    *,
    card: Callable[[list[str], Path], str],
    extra_files: dict[str, Path] | None = None,
    artifacts_dir: Path | None = None,
    split: str = "train",
    flag: str = "--output",
    overwrite: bool = False,
    kind: str = FolderKind.DATASET,
    protected: Sequence[Path] = (),
) -> None:
    """Write `data/<split>-*.parquet`, `README.md`, extra files and `artifacts/`.

    `card(shard paths, folder)` returns the card's text; it may write files the card
    refers to (figures) into `folder`.

    Shard names end in a digest of their bytes and the card lists them by name:
    `datasets` keys its local cache by the card's config, not by file contents, so a
    dataset regenerated in the same folder under the same names would load stale.
    The folder is written aside and moved into place once complete, and only a folder
    agfsync wrote is ever replaced (`agfsync.ownership.write_folder`): an interrupted
    write never leaves a folder that looks complete, and a user's files are never lost.
    """
    check_dataset_folder(output_dir, flag=flag, overwrite=overwrite, kind=kind, protected=protected)
    write_folder(
        output_dir,
        kind,
        lambda staging: _write_staging(dataset, staging, card, extra_files, artifacts_dir, split),
        flag=flag,
        overwrite=overwrite,
        protected=protected,
        what="the dataset",
    )


def _write_staging(
    dataset: datasets.Dataset,
    staging: Path,
    card: Callable[[list[str], Path], str],
    extra_files: dict[str, Path] | None,
    artifacts_dir: Path | None,
    split: str,
) -> None:
    (staging / "data").mkdir()
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
