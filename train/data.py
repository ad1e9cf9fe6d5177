"""Preference pairs from a Hub dataset or a local folder, as training batches.

Two layouts are accepted: agfsync's and Pick-a-Pic's (`caption`, `jpg_0`, `jpg_1`,
`label_0`; `label_0 = 1` when `jpg_0` is preferred, 0.5 a tie) and the common
`chosen`/`rejected` one (with `caption` or `prompt`). The columns are checked as
soon as the dataset is opened, before any model loads.

Ties carry no preference and are skipped and counted; so are pairs with an image
that cannot be decoded, until they exceed `max_bad_image_fraction`.

Both images of a pair get the same augmentation (diffusers' SD 1.5 DPO example
draws it separately per image, so the pair no longer shows the same scene): the
same horizontal flip, drawn first, then the same crop, whose top-left corner is
kept because SDXL is conditioned on it. The random draws are a pure function of
(seed, epoch, pair content), so they do not depend on worker processes or on a
resume.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import huggingface_hub.constants
import numpy as np
import torch
from datasets.exceptions import DatasetGenerationError
from PIL import Image

from agfsync.errors import ConfigurationError
from agfsync.safe_paths import UnsafePathError, inside

CAPTION_COLUMNS = ("caption", "prompt")
LABELLED_IMAGE_COLUMNS = ("jpg_0", "jpg_1")
LABEL_COLUMN = "label_0"
CHOSEN_REJECTED_COLUMNS = ("chosen", "rejected")
TIE_LABEL = 0.5
MIN_IMAGES_FOR_BAD_SHARE = 1000
"""Streaming datasets of unknown size: the bad-image share is judged on the images read
so far, once there are this many (fewer would abort on the first broken file)."""

_EXPECTED_COLUMNS = (
    "a caption column (caption or prompt, text) and either jpg_0, jpg_1 (images) with "
    "label_0 (number: 1 when jpg_0 is preferred, 0 when jpg_1 is, 0.5 a tie), or "
    "chosen, rejected (images); images as datasets.Image or binary"
)


class DatasetColumnsError(ConfigurationError):
    """The dataset lacks the columns Diffusion-DPO needs, or they have the wrong types."""


class TooManyBadImagesError(ConfigurationError):
    """More images failed to decode than `max_bad_image_fraction` allows."""


@dataclass(frozen=True)
class PairColumns:
    """Which columns hold a pair, as found in a dataset."""

    caption: str
    first_image: str
    second_image: str
    label: str | None
    """`label_0`; None for chosen/rejected datasets, whose first image always wins."""


def _describe(feature: Any) -> str:
    if isinstance(feature, datasets.Image):
        return "image"
    if isinstance(feature, datasets.Value):
        return feature.dtype
    return type(feature).__name__


def _is_image(feature: Any) -> bool:
    return isinstance(feature, datasets.Image) or (
        isinstance(feature, datasets.Value) and feature.dtype in ("binary", "large_binary")
    )


def _is_text(feature: Any) -> bool:
    return isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")


def _is_number(feature: Any) -> bool:
    return isinstance(feature, datasets.Value) and (
        feature.dtype.startswith(("float", "int", "uint")) or feature.dtype == "bool"
    )


def find_pair_columns(features: Mapping[str, Any], caption_column: str | None) -> PairColumns:
    """The pair columns of a dataset with these features, or an error listing expected vs
    found columns."""
    found = ", ".join(f"{name} ({_describe(feature)})" for name, feature in features.items())
    problems = []
    captions = [caption_column] if caption_column else list(CAPTION_COLUMNS)
    caption = next((name for name in captions if name in features), None)
    if caption is None:
        problems.append(f"no caption column ({' or '.join(captions)})")
    elif not _is_text(features[caption]):
        problems.append(f"{caption} is {_describe(features[caption])}, not text")

    label: str | None = LABEL_COLUMN
    images: tuple[str, ...] = LABELLED_IMAGE_COLUMNS
    if not all(name in features for name in (*LABELLED_IMAGE_COLUMNS, LABEL_COLUMN)):
        label, images = None, CHOSEN_REJECTED_COLUMNS
    missing = [name for name in images if name not in features]
    if missing:
        problems.append(
            "no image pair (jpg_0, jpg_1 with label_0, or chosen, rejected)"
            if len(missing) == len(images)
            else f"missing {', '.join(missing)}"
        )
    problems += [
        f"{name} is {_describe(features[name])}, not an image"
        for name in images
        if name in features and not _is_image(features[name])
    ]
    if label is not None and not _is_number(features[label]):
        problems.append(f"{label} is {_describe(features[label])}, not a number")
    if problems:
        raise DatasetColumnsError(
            f"The dataset cannot be used for preference training: {'; '.join(problems)}.\n"
            f"  expected: {_EXPECTED_COLUMNS}\n"
            f"  found: {found or 'no columns'}"
        )
    assert caption is not None
    return PairColumns(caption, images[0], images[1], label)


@dataclass
class PreferencePairs:
    """An opened preference dataset: pair columns only, images left undecoded."""

    dataset: datasets.Dataset | datasets.IterableDataset
    columns: PairColumns
    ties_removed: int
    """Map-style datasets: ties dropped on opening (streaming ones skip them as read)."""
    num_pairs: int | None
    """Pairs left to train on; None when streaming a dataset of unknown size."""
    image_roots: tuple[Path, ...] = ()
    """Where its images stored as a path (no bytes) may be read (`image_roots`)."""


def image_roots(name: str) -> tuple[Path, ...]:
    """The folders an image stored as a path in dataset `name` may be read from: the
    dataset's own folder (a local one) and the caches `datasets` and the Hub client
    download to. A path is data: one that leads elsewhere is never opened."""
    roots = [Path(name)] if Path(name).is_dir() else []
    roots += [Path(datasets.config.HF_DATASETS_CACHE), Path(huggingface_hub.constants.HF_HUB_CACHE)]
    return tuple(root.resolve() for root in roots)


def open_preference_pairs(
    name: str,
    *,
    config: str | None = None,
    split: str = "train",
    caption_column: str | None = None,
    streaming: bool = False,
    shuffle_seed: int = 0,
    shuffle_buffer_size: int = 1000,
) -> PreferencePairs:
    """Open a Hub dataset or local folder and check its columns (no model involved)."""
    try:
        dataset = datasets.load_dataset(name, config, split=split, streaming=streaming)
    except (FileNotFoundError, ValueError, ConnectionError, DatasetGenerationError) as error:
        # A generation error says only that something failed; its cause says what.
        cause = error.__cause__ if isinstance(error, DatasetGenerationError) else None
        reason = " ".join(str(cause or error).split())
        raise ConfigurationError(
            f"Cannot load split {split!r} of dataset {name!r}"
            f"{f' (config {config!r})' if config else ''}: {reason}"
        ) from None
    features = dataset.features
    if features is None:
        raise DatasetColumnsError(
            f"Dataset {name!r} does not declare its column types when streamed (a JSON or "
            "CSV source); open it without streaming, or convert it to parquet."
        )
    columns = find_pair_columns(features, caption_column)
    kept = [columns.caption, columns.first_image, columns.second_image]
    if columns.label:
        kept.append(columns.label)
    dataset = dataset.select_columns(kept)
    for column in (columns.first_image, columns.second_image):
        if isinstance(features[column], datasets.Image):
            dataset = dataset.cast_column(column, datasets.Image(decode=False))

    if isinstance(dataset, datasets.IterableDataset):
        split_info = (dataset.info.splits or {}).get(split)
        return PreferencePairs(
            dataset=dataset.shuffle(seed=shuffle_seed, buffer_size=shuffle_buffer_size),
            columns=columns,
            ties_removed=0,
            num_pairs=split_info.num_examples if split_info else None,
            image_roots=image_roots(name),
        )
    ties_removed = 0
    if columns.label:
        labels = np.asarray(list(dataset[columns.label]), dtype=float)
        decided = np.flatnonzero(labels != TIE_LABEL)
        ties_removed = len(labels) - len(decided)
        if ties_removed:
            dataset = dataset.select(decided)
    return PreferencePairs(dataset, columns, ties_removed, len(dataset), image_roots(name))


@dataclass(frozen=True)
class AugmentedPair:
    preferred: torch.Tensor
    rejected: torch.Tensor
    """(3, resolution, resolution) in [-1, 1]."""
    original_size: tuple[int, int]
    """(height, width) of the preferred image before resizing (SDXL's `original_size`)."""
    crop_top_left: tuple[int, int]
    """(top, left) of the crop in the resized, possibly flipped image (SDXL's crop ids)."""
    flipped: bool


def _to_tensor(image: Image.Image) -> torch.Tensor:
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


@dataclass(frozen=True)
class PairedTransform:
    """Resize (shorter side to `resolution`), flip, crop: identically for both images.

    Both images are brought to the preferred image's resized size, so one crop fits both.
    """

    resolution: int
    random_flip: bool
    random_crop: bool

    def __call__(
        self, preferred: Image.Image, rejected: Image.Image, rng: random.Random
    ) -> AugmentedPair:
        width, height = preferred.size
        scale = self.resolution / min(width, height)
        size = (
            max(self.resolution, round(width * scale)),
            max(self.resolution, round(height * scale)),
        )
        images = [
            image if image.size == size else image.resize(size, Image.Resampling.BILINEAR)
            for image in (preferred, rejected)
        ]
        # The flip is drawn (and applied) first so that the crop coordinates refer to the
        # image the model actually sees.
        flipped = self.random_flip and rng.random() < 0.5
        if flipped:
            images = [image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for image in images]
        spare_width, spare_height = size[0] - self.resolution, size[1] - self.resolution
        if self.random_crop:
            top, left = rng.randint(0, spare_height), rng.randint(0, spare_width)
        else:
            top, left = round(spare_height / 2), round(spare_width / 2)
        box = (left, top, left + self.resolution, top + self.resolution)
        cropped = [_to_tensor(image.crop(box)) for image in images]
        return AugmentedPair(cropped[0], cropped[1], (height, width), (top, left), flipped)


@dataclass(frozen=True)
class PairExample:
    caption: str
    pair: AugmentedPair
    preferred_key: str
    rejected_key: str
    """Identify each image *as transformed* (content digest, resolution, flip, crop): the
    latent cache's keys."""


@dataclass(frozen=True)
class SkippedPair:
    tie: bool = False
    bad_images: int = 0


def _image_bytes(value: Any, roots: Sequence[Path] = ()) -> bytes:
    """Bytes of an undecoded `datasets.Image` value ({bytes, path}) or a binary value;
    a path is read only inside one of `roots` (`image_roots`)."""
    if isinstance(value, dict):
        if value.get("bytes") is not None:
            return value["bytes"]
        with open(_image_path(value["path"], roots), "rb") as file:
            return file.read()
    if isinstance(value, bytes):
        return value
    raise TypeError(f"not an encoded image: {type(value).__name__}")


def _image_path(path: object, roots: Sequence[Path]) -> Path:
    """`path` resolved, when it stays inside one of `roots` (`safe_paths.inside`)."""
    if isinstance(path, str):
        for root in roots:
            try:
                return inside(root, path)
            except UnsafePathError:
                continue
    raise UnsafePathError(
        f"Image path {path!r} in the dataset leads outside its folder and the Hugging Face "
        "caches; agfsync does not open it (was the dataset edited by hand?)."
    )


def _decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image.convert("RGB")


@dataclass(frozen=True)
class PairReader:
    """Turns a dataset row into an augmented pair, or says why it was skipped."""

    columns: PairColumns
    transform: PairedTransform
    seed: int
    image_roots: tuple[Path, ...] = ()
    """Where images stored as a path may be read (`PreferencePairs.image_roots`)."""

    def __call__(self, row: Mapping[str, Any], epoch: int) -> PairExample | SkippedPair:
        first, second = row[self.columns.first_image], row[self.columns.second_image]
        if self.columns.label is not None:
            label = float(row[self.columns.label])
            if label == TIE_LABEL:
                return SkippedPair(tie=True)
            if label < TIE_LABEL:
                first, second = second, first
        encoded, decoded = [], []
        for value in (first, second):
            try:
                data = _image_bytes(value, self.image_roots)
                decoded.append(_decode(data))
                encoded.append(data)
            except UnsafePathError:
                raise  # a dataset pointing elsewhere is refused, not skipped
            except (OSError, ValueError, TypeError, KeyError, Image.DecompressionBombError):
                continue
        if len(decoded) < 2:
            return SkippedPair(bad_images=2 - len(decoded))
        digests = [hashlib.sha256(data).hexdigest()[:32] for data in encoded]
        rng = random.Random(f"{self.seed}:{epoch}:{digests[0]}:{digests[1]}")
        pair = self.transform(decoded[0], decoded[1], rng)
        suffix = (
            f"{self.transform.resolution}-{'flip' if pair.flipped else 'noflip'}"
            f"-{pair.crop_top_left[0]}-{pair.crop_top_left[1]}"
        )
        return PairExample(
            caption=row[self.columns.caption] or "",
            pair=pair,
            preferred_key=f"{digests[0]}-{suffix}",
            rejected_key=f"{digests[1]}-{suffix}",
        )


@dataclass
class PairBatch:
    captions: list[str]
    pixel_values: torch.Tensor
    """(2B, 3, H, W): the B preferred images, then the B rejected ones."""
    image_keys: list[str]
    """2B latent-cache keys in the order of `pixel_values`."""
    original_sizes: torch.Tensor
    crop_top_lefts: torch.Tensor
    """(B, 2) each, per pair."""
    ties: int
    bad_images: int
    images_read: int

    @property
    def num_pairs(self) -> int:
        return len(self.captions)


def collate_pairs(items: Sequence[PairExample | SkippedPair]) -> PairBatch:
    """Stack the examples of a batch; skipped ones only add to the counts."""
    examples = [item for item in items if isinstance(item, PairExample)]
    skipped = [item for item in items if isinstance(item, SkippedPair)]
    images = [e.pair.preferred for e in examples] + [e.pair.rejected for e in examples]
    return PairBatch(
        captions=[e.caption for e in examples],
        pixel_values=torch.stack(images) if images else torch.empty(0),
        image_keys=[e.preferred_key for e in examples] + [e.rejected_key for e in examples],
        original_sizes=torch.tensor([e.pair.original_size for e in examples]).reshape(-1, 2),
        crop_top_lefts=torch.tensor([e.pair.crop_top_left for e in examples]).reshape(-1, 2),
        ties=sum(item.tie for item in skipped),
        bad_images=sum(item.bad_images for item in skipped),
        images_read=2 * (len(examples) + sum(not item.tie for item in skipped)),
    )


class _RowsOfEpoch(torch.utils.data.Dataset):
    def __init__(self, rows: datasets.Dataset, reader: PairReader, epoch: int) -> None:
        self.rows, self.reader, self.epoch = rows, reader, epoch

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> PairExample | SkippedPair:
        return self.reader(self.rows[index], self.epoch)


class _StreamOfEpoch(torch.utils.data.IterableDataset):
    def __init__(self, rows: datasets.IterableDataset, reader: PairReader, epoch: int) -> None:
        self.rows, self.reader, self.epoch = rows, reader, epoch

    def __iter__(self) -> Iterator[PairExample | SkippedPair]:
        self.rows.set_epoch(self.epoch)
        return (self.reader(row, self.epoch) for row in self.rows)


@dataclass(frozen=True)
class BatchPlan:
    """How one training process walks through the data."""

    batch_size: int
    seed: int
    process_index: int = 0
    num_processes: int = 1
    num_workers: int = 0


def epoch_batches(
    pairs: PreferencePairs,
    reader: PairReader,
    plan: BatchPlan,
    *,
    epoch: int,
    skip_batches: int = 0,
) -> Iterator[PairBatch]:
    """This process's batches of one pass over the data, after the first `skip_batches`.

    Map-style: a seeded permutation per epoch, dealt round-robin to the processes (each
    gets the same number of rows); skipped batches are never read. Streaming: datasets'
    buffered shuffle per epoch and split by node; skipped batches are read and dropped.
    """
    if isinstance(pairs.dataset, datasets.IterableDataset):
        from datasets.distributed import split_dataset_by_node

        stream = split_dataset_by_node(
            pairs.dataset, rank=plan.process_index, world_size=plan.num_processes
        )
        loader = torch.utils.data.DataLoader(
            _StreamOfEpoch(stream, reader, epoch),
            batch_size=plan.batch_size,
            collate_fn=collate_pairs,
            num_workers=plan.num_workers,
        )
        yield from itertools.islice(loader, skip_batches, None)
        return
    order = torch.randperm(
        len(pairs.dataset), generator=torch.Generator().manual_seed(plan.seed + epoch)
    ).tolist()
    usable = len(order) - len(order) % plan.num_processes
    mine = order[plan.process_index : usable : plan.num_processes]
    yield from torch.utils.data.DataLoader(
        _RowsOfEpoch(pairs.dataset, reader, epoch),
        batch_size=plan.batch_size,
        sampler=mine[skip_batches * plan.batch_size :],
        collate_fn=collate_pairs,
        num_workers=plan.num_workers,
    )


@dataclass
class DataCounts:
    """What the data pipeline skipped; checkpointed with the run so a resume keeps counting."""

    ties: int = 0
    bad_images: int = 0
    images_read: int = 0

    def record(self, batch: PairBatch) -> None:
        self.ties += batch.ties
        self.bad_images += batch.bad_images
        self.images_read += batch.images_read

    def check_bad_images(self, max_fraction: float, dataset_images: int | None) -> None:
        """Raise once undecodable images exceed `max_fraction` of the dataset's images (of
        the images read so far when the size is unknown)."""
        if dataset_images is None:
            if self.images_read < MIN_IMAGES_FOR_BAD_SHARE:
                return
            reference, what = self.images_read, "images read so far"
        else:
            reference, what = dataset_images, "images in the dataset"
        if self.bad_images > max_fraction * reference:
            raise TooManyBadImagesError(
                f"{self.bad_images} images could not be decoded, more than "
                f"max_bad_image_fraction={max_fraction} of the {reference} {what}; check the "
                "image columns or the download, or raise --max-bad-image-fraction."
            )

    def state_dict(self) -> dict[str, int]:
        return {"ties": self.ties, "bad_images": self.bad_images, "images_read": self.images_read}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        self.ties, self.bad_images, self.images_read = (
            state["ties"],
            state["bad_images"],
            state["images_read"],
        )
