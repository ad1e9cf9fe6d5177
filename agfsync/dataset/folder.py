"""From a finished run to a preference dataset on disk, in the Hub's layout.

The pipeline's rows carry image *paths*; here the chosen and rejected images become
the Pick-a-Pic v2 columns that Diffusion-DPO trainers read: `caption`, `jpg_0` and
`jpg_1` as raw image bytes (`binary`, each image stored once per row), `label_0`
(1 when `jpg_0` is preferred; `jpg_0` is the chosen image). The card declares two
configs over the same parquet shards (see `dataset_configs`): `default`, with the
bytes as they are, which diffusers' `train_diffusion_dpo.py` and
`train_diffusion_dpo_sdxl.py` read unchanged (`Image.open(io.BytesIO(...))`), and
`images`, the same rows with `jpg_0`/`jpg_1` typed `datasets.Image`, which the Hub
viewer shows as pictures and `datasets` decodes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.compute
import pyarrow.parquet as pq
import yaml
from datasets.exceptions import DatasetGenerationError
from datasets.info import DatasetInfo, DatasetInfosDict

from agfsync.errors import ConfigurationError
from agfsync.ownership import KINDS, FolderKind, check_output_folder, write_folder
from agfsync.safe_paths import inside

IMAGE_COLUMNS = ("jpg_0", "jpg_1")
SHARD_BYTES = 400 * 2**20
"""Image bytes per parquet shard: below the ~500 MB the Hub recommends per file, at any
image size (a fixed row count gave 3 GB shards at 1024 px)."""
TIE_LABEL = 0.5
"""`label_0` of a pair whose two images scored the same (Pick-a-Pic's convention); ties
are not exported unless asked for (`--keep-ties`), since diffusers' DPO scripts read
0.5 as a win of `jpg_0`."""


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


def preference_columns(row: dict[str, Any], artifacts_dir: Path) -> dict[str, Any]:
    """The Diffusion-DPO columns of a row with a pair: `caption`, `label_0`, and the
    chosen (`jpg_0`) and rejected (`jpg_1`) images' bytes from the artifacts folder.
    `label_0` is 1, or 0.5 for a tie (a zero margin). Raises MissingImageError when an
    image file is missing."""
    chosen, rejected = (
        _image_file(artifacts_dir, row["image_paths"][index], row["prompt_id"]).read_bytes()
        for index in (row["chosen_index"], row["rejected_index"])
    )
    tie = row.get("score_margin") == 0
    return {
        "caption": row["prompt"],
        "label_0": TIE_LABEL if tie else 1.0,
        "jpg_0": chosen,
        "jpg_1": rejected,
    }


def _with_pair_features(features: datasets.Features) -> datasets.Features:
    features = _typed(features)
    features["caption"] = datasets.Value("string")
    features["label_0"] = datasets.Value("float64")
    for column in IMAGE_COLUMNS:
        features[column] = datasets.Value("binary")
    return features


KNOWN_TYPES: dict[str, Any] = {
    "safety_flags": datasets.List(datasets.Value("bool")),
    "negative_prompt": datasets.Value("string"),
    "height": datasets.Value("int64"),
    "width": datasets.Value("int64"),
}
"""Types of columns (and struct fields) that a run may leave empty everywhere, which
`datasets` would otherwise type `null`. Any other empty column becomes text (the error
columns: `generation_error`, `pair_error`, ...)."""


def _typed(feature: Any, name: str = "") -> Any:
    """`feature` with every `null` type replaced by the column's known type."""
    if isinstance(feature, datasets.Features | dict):
        return type(feature)({key: _typed(value, key) for key, value in feature.items()})
    if isinstance(feature, datasets.List):
        return datasets.List(_typed(feature.feature, name))
    if isinstance(feature, datasets.Value) and feature.dtype == "null":
        return KNOWN_TYPES.get(name, datasets.Value("string"))
    return feature


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

    The images are bytes, as in the dataset folder (see the module).
    """
    features = PAIR_ROW_FEATURES.copy()
    for column in score_columns:
        features[column] = datasets.List(datasets.Value("float64"))
    return _with_pair_features(features)


def listed_shards(folder: Path, split: str = "train") -> list[Path]:
    """The parquet shards of `split` that the folder's card lists (its default config), each
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
        if isinstance(config, dict) and config.get("config_name") == DEFAULT_CONFIG
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


@contextmanager
def pairs_scratch(parent: Path | None = None, prefix: str = "pairs-") -> Iterator[Path]:
    """A new, empty folder for Arrow files (the pairs stream into one), made under
    `parent` (the system's temporary folder when None) and removed on exit: the one
    folder made here is the only thing ever deleted."""
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def datasets_cache_in(folder: Path) -> Iterator[None]:
    """`datasets` keeps its Arrow copies in `folder` meanwhile (`load_dataset` without a
    `cache_dir`). distilabel's `Distiset` loads every step's parquet rows that way at
    the end of a run: without this, each run leaves a copy of all its rows in the user's
    `~/.cache/huggingface/datasets` (about 30 kB per prompt, never removed)."""
    previous = datasets.config.HF_DATASETS_CACHE
    datasets.config.HF_DATASETS_CACHE = folder
    try:
        yield
    finally:
        datasets.config.HF_DATASETS_CACHE = previous


@contextmanager
def rows_scratch(parent: Path | None = None) -> Iterator[Path]:
    """A new folder (`pairs_scratch`) that `datasets` copies the rows it loads into
    meanwhile (`datasets_cache_in`), removed on exit: commands that read a dataset folder
    or a run's rows leave no copy of them behind."""
    with pairs_scratch(parent, prefix="rows-") as folder, datasets_cache_in(folder):
        yield folder


def build_preference_dataset(
    rows: datasets.Dataset, artifacts_dir: Path, scratch: Path
) -> tuple[datasets.Dataset, list[dict[str, Any]]]:
    """Add the pair columns, with the images read from `artifacts_dir`, to every row
    that has a pair.

    Returns the dataset and the rows left out (those whose `pair_error` says why no
    pair could be formed), so callers can report them. A row without a pair and without
    a reason (the pair step itself failed on it) is left out with that as its reason.

    Rows stream into an Arrow file in `scratch`, an empty folder that must outlive the
    dataset (`pairs_scratch()` makes one), so memory stays flat however many pairs a run
    has: the dataset is read from that file, not held with every image's bytes in
    memory. A folder with anything in it is refused: `datasets` could take an earlier
    build found there for this one.
    """
    if not scratch.is_dir() or any(scratch.iterdir()):
        raise ValueError(f"{scratch} is not an empty folder; use pairs_scratch().")
    unpaired: list[dict[str, Any]] = []
    paired_indices = []
    status = [column for column in ("pair_error", "chosen_index") if column in rows.column_names]
    for index, row in enumerate(rows.select_columns(status)):
        if row.get("pair_error"):
            unpaired.append(rows[index])
        elif row.get("chosen_index") is None:
            reason = "the pair step failed on this row (see the log)"
            unpaired.append({**rows[index], "pair_error": reason})
        else:
            paired_indices.append(index)
    features = _with_pair_features(rows.features)
    if not paired_indices:  # a generator of nothing gives no typed dataset
        return datasets.Dataset.from_dict({name: [] for name in features}, features), unpaired

    def paired_rows() -> Iterator[dict[str, Any]]:
        for row in rows.select(paired_indices):
            yield {**row, **preference_columns(row, artifacts_dir)}

    try:
        dataset = datasets.Dataset.from_generator(
            paired_rows, features=features, cache_dir=os.fspath(scratch)
        )
    except DatasetGenerationError as error:
        if isinstance(error.__cause__, MissingImageError):
            raise error.__cause__ from None
        raise
    return dataset, unpaired


DATASET_ENTRIES = KINDS[FolderKind.DATASET].entries
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


def shard_ranges(dataset: datasets.Dataset, limit: int = SHARD_BYTES) -> list[tuple[int, int]]:
    """Contiguous row ranges holding at most `limit` image bytes each (one row at least)."""
    columns = [column for column in IMAGE_COLUMNS if column in dataset.column_names]
    table = dataset.select_columns(columns).with_format("arrow")[:]
    sizes = [0] * len(dataset)
    for column in columns:
        lengths = pa.compute.binary_length(table.column(column)).to_pylist()
        sizes = [size + (length or 0) for size, length in zip(sizes, lengths, strict=True)]
    ranges, start, total = [], 0, 0
    for index, size in enumerate(sizes):
        if index > start and total + size > limit:
            ranges.append((start, index))
            start, total = index, 0
        total += size
    ranges.append((start, len(sizes)))
    return ranges


def _write_staging(
    dataset: datasets.Dataset,
    staging: Path,
    card: Callable[[list[str], Path], str],
    extra_files: dict[str, Path] | None,
    artifacts_dir: Path | None,
    split: str,
) -> None:
    (staging / "data").mkdir()
    ranges = shard_ranges(dataset)
    num_shards = len(ranges)
    shard_paths = []
    for index, (start, end) in enumerate(ranges):
        shard = dataset.select(range(start, end))
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
        shutil.copytree(artifacts_dir, staging / "artifacts", copy_function=_link_or_copy)


LINKED_SUFFIXES = frozenset({".png", ".webp", ".jpg", ".jpeg"})
"""Candidate images: written once, atomically (a new file replaces an old one, never
rewritten in place), so the dataset folder can share them with the run's cache."""


def _link_or_copy(source: str, target: str) -> str:
    """A candidate image is hard-linked (no second copy on disk); other files, and an
    image on another filesystem or one without hard links, are copied."""
    if Path(source).suffix.lower() in LINKED_SUFFIXES:
        try:
            os.link(source, target)
            return target
        except OSError:
            pass
    return str(shutil.copy2(source, target))


DEFAULT_CONFIG = "default"
IMAGES_CONFIG = "images"
"""The config with `jpg_0`/`jpg_1` typed `datasets.Image`: what the Hub viewer shows as
pictures and `load_dataset(repo, "images")` decodes."""


def card_configs(
    features: datasets.Features, data_files: dict[str, list[str]]
) -> tuple[list[dict[str, Any]], DatasetInfosDict]:
    """The card's `configs` and per-config features (`dataset_info`) of a dataset folder:
    `default` as stored (the images as bytes, for diffusers' DPO scripts and agfsync
    train) and, for a preference dataset, `images` over the same shards with the image
    columns typed `datasets.Image`."""

    def files() -> list[dict[str, Any]]:  # a fresh copy per config: no YAML anchors
        return [{"split": split, "path": list(paths)} for split, paths in data_files.items()]

    configs = [{"config_name": DEFAULT_CONFIG, "data_files": files()}]
    infos = {DEFAULT_CONFIG: DatasetInfo(features=features)}
    if all(column in features for column in IMAGE_COLUMNS):
        decoded = features.copy()
        for column in IMAGE_COLUMNS:
            decoded[column] = datasets.Image()
        configs.append({"config_name": IMAGES_CONFIG, "data_files": files()})
        infos[IMAGES_CONFIG] = DatasetInfo(features=decoded)
    return configs, DatasetInfosDict(infos)
