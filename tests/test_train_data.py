"""Training data: column checks, ties, undecodable images, the paired transform, batching."""

import io
import random
import re
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from agfsync.errors import ConfigurationError
from agfsync.train.config import DPOTrainingConfig
from agfsync.train.data import (
    BatchPlan,
    DataCounts,
    DatasetColumnsError,
    PairBatch,
    PairedTransform,
    PairExample,
    PairReader,
    PreferencePairs,
    TooManyBadImagesError,
    epoch_batches,
    open_preference_pairs,
)
from agfsync.train.dpo import parse_config
from tests.helpers import generate_offline_run

RED, BLUE = (255, 0, 0), (0, 0, 255)
LABELLED_FEATURES = datasets.Features(
    {
        "caption": datasets.Value("string"),
        "jpg_0": datasets.Image(),
        "jpg_1": datasets.Image(),
        "label_0": datasets.Value("float64"),
    }
)


def write_parquet_dataset(
    folder: Path, rows: dict[str, list[Any]], features: datasets.Features | None = None
) -> Path:
    """A Hub-layout dataset folder (`data/train-*.parquet`) that `load_dataset` reads."""
    dataset = datasets.Dataset.from_dict(rows, features=features)
    (folder / "data").mkdir(parents=True)
    dataset.to_parquet(folder / "data" / "train-00000-of-00001.parquet")
    return folder


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def solid(colour: tuple[int, int, int], size: int = 32) -> Image.Image:
    return Image.new("RGB", (size, size), colour)


def write_colour_preference_dataset(folder: Path, num_pairs: int = 8, size: int = 32) -> Path:
    """Red always preferred over blue; the red image alternates between jpg_0 (label 1)
    and jpg_1 (label 0), so the label decides, not the position."""
    red_first = [index % 2 == 0 for index in range(num_pairs)]
    return write_parquet_dataset(
        folder,
        {
            "caption": [f"a flat colour, take {index}" for index in range(num_pairs)],
            "jpg_0": [solid(RED if first else BLUE, size) for first in red_first],
            "jpg_1": [solid(BLUE if first else RED, size) for first in red_first],
            "label_0": [1.0 if first else 0.0 for first in red_first],
        },
        LABELLED_FEATURES,
    )


def _pixels(tensor: torch.Tensor) -> np.ndarray:
    """A transformed (3, H, W) tensor in [-1, 1] back to uint8 (H, W, 3)."""
    return ((tensor.permute(1, 2, 0).numpy() + 1.0) * 127.5).round().astype(np.uint8)


def _all_batches(pairs: PreferencePairs, batch_size: int = 2, **plan: Any) -> list[PairBatch]:
    reader = PairReader(pairs.columns, PairedTransform(32, False, False), seed=0)
    return list(
        epoch_batches(pairs, reader, BatchPlan(batch_size=batch_size, seed=0, **plan), epoch=0)
    )


# -- columns ---------------------------------------------------------------------------


def test_missing_columns_error_lists_expected_and_found(tmp_path: Path) -> None:
    folder = write_parquet_dataset(
        tmp_path / "ds",
        {"text": ["a cat"], "image_a": [solid(RED)], "image_b": [solid(BLUE)]},
        datasets.Features(
            {
                "text": datasets.Value("string"),
                "image_a": datasets.Image(),
                "image_b": datasets.Image(),
            }
        ),
    )
    with pytest.raises(DatasetColumnsError) as error:
        open_preference_pairs(str(folder))
    message = str(error.value)
    assert "no caption column (caption or prompt)" in message
    assert "no image pair" in message
    assert "expected: a caption column (caption or prompt, text) and either jpg_0, jpg_1" in message
    assert "found: text (string), image_a (image), image_b (image)" in message


def test_mistyped_columns_are_named(tmp_path: Path) -> None:
    folder = write_parquet_dataset(
        tmp_path / "ds",
        {"caption": ["a cat"], "jpg_0": ["not an image"], "jpg_1": [solid(BLUE)], "label_0": ["1"]},
        datasets.Features(
            {
                "caption": datasets.Value("string"),
                "jpg_0": datasets.Value("string"),
                "jpg_1": datasets.Image(),
                "label_0": datasets.Value("string"),
            }
        ),
    )
    expected = "jpg_0 is string, not an image; label_0 is string, not a number"
    with pytest.raises(DatasetColumnsError, match=expected):
        open_preference_pairs(str(folder))


def test_column_error_comes_before_any_model_loads(tmp_path: Path) -> None:
    from agfsync.train.loop import train

    folder = write_parquet_dataset(tmp_path / "ds", {"caption": ["a cat"], "score": [1.0]})
    config = DPOTrainingConfig(
        pretrained_model=str(tmp_path / "no-such-model"),
        dataset=str(folder),
        output_dir=tmp_path / "out",
    )
    with pytest.raises(
        DatasetColumnsError, match=re.escape("found: caption (string), score (float64)")
    ):
        train(config)
    assert not (tmp_path / "out").exists()


def test_chosen_rejected_dataset_with_prompt_and_binary_images(tmp_path: Path) -> None:
    folder = write_parquet_dataset(
        tmp_path / "ds",
        {
            "prompt": ["red wins", "red wins again"],
            "chosen": [png_bytes(solid(RED)), png_bytes(solid(RED))],
            "rejected": [png_bytes(solid(BLUE)), png_bytes(solid(BLUE))],
        },
    )
    pairs = open_preference_pairs(str(folder))
    assert (pairs.columns.caption, pairs.columns.first_image, pairs.columns.label) == (
        "prompt",
        "chosen",
        None,
    )
    [batch] = _all_batches(pairs)
    assert sorted(batch.captions) == ["red wins", "red wins again"]
    assert (_pixels(batch.pixel_values[0]) == RED).all()
    assert (_pixels(batch.pixel_values[2]) == BLUE).all()


def test_either_config_of_an_agfsync_dataset_trains_on_the_same_pairs(tmp_path: Path) -> None:
    """`--dataset-config`: the default config (image bytes) and the viewer's `images`
    config (`datasets.Image`) of a dataset `agfsync generate` wrote give the same batches."""
    folder = str(generate_offline_run(tmp_path / "run", 2))
    by_default = _all_batches(open_preference_pairs(folder))
    by_images = _all_batches(open_preference_pairs(folder, config="images"))
    assert [batch.captions for batch in by_images] == [batch.captions for batch in by_default]
    for ours, theirs in zip(by_images, by_default, strict=True):
        assert torch.equal(ours.pixel_values, theirs.pixel_values)
    with pytest.raises(ConfigurationError, match="config 'pairs'"):
        open_preference_pairs(folder, config="pairs")
    flags = ["--pretrained-model", "tiny:stable-diffusion", "--dataset", folder]
    assert parse_config([*flags, "--dataset-config", "images"])[0].dataset_config == "images"
    assert parse_config(flags)[0].dataset_config is None


# -- ties, labels and bad images -----------------------------------------------------------


def test_label_decides_which_image_is_preferred(tmp_path: Path) -> None:
    pairs = open_preference_pairs(str(write_colour_preference_dataset(tmp_path / "ds", 4)))
    for batch in _all_batches(pairs):
        for preferred, rejected in zip(batch.pixel_values[:2], batch.pixel_values[2:], strict=True):
            assert (_pixels(preferred) == RED).all()
            assert (_pixels(rejected) == BLUE).all()


def _rows_with_ties() -> dict[str, list[Any]]:
    return {
        "caption": [f"pair {index}" for index in range(5)],
        "jpg_0": [solid(RED)] * 5,
        "jpg_1": [solid(BLUE)] * 5,
        "label_0": [1.0, 0.5, 0.0, 0.5, 1.0],
    }


def test_ties_are_skipped_and_counted(tmp_path: Path) -> None:
    folder = write_parquet_dataset(tmp_path / "ds", _rows_with_ties(), LABELLED_FEATURES)
    pairs = open_preference_pairs(str(folder))
    assert (pairs.ties_removed, pairs.num_pairs) == (2, 3)
    captions = [caption for batch in _all_batches(pairs) for caption in batch.captions]
    assert sorted(captions) == ["pair 0", "pair 2", "pair 4"]


def test_streaming_reads_the_same_pairs_and_counts_ties_as_read(tmp_path: Path) -> None:
    folder = write_parquet_dataset(tmp_path / "ds", _rows_with_ties(), LABELLED_FEATURES)
    pairs = open_preference_pairs(str(folder), streaming=True)
    assert isinstance(pairs.dataset, datasets.IterableDataset)
    batches = _all_batches(pairs)
    counts = DataCounts()
    for batch in batches:
        counts.record(batch)
    assert sorted(c for batch in batches for c in batch.captions) == ["pair 0", "pair 2", "pair 4"]
    assert (counts.ties, counts.images_read) == (2, 6)


def _dataset_with_broken_images(tmp_path: Path) -> Path:
    broken = {"bytes": b"certainly not a PNG", "path": None}
    return write_parquet_dataset(
        tmp_path / "ds",
        {
            "caption": [f"pair {index}" for index in range(4)],
            "jpg_0": [solid(RED), broken, solid(RED), solid(RED)],
            "jpg_1": [solid(BLUE), solid(BLUE), broken, solid(BLUE)],
            "label_0": [1.0] * 4,
        },
        LABELLED_FEATURES,
    )


def test_undecodable_images_are_skipped_and_counted(tmp_path: Path) -> None:
    pairs = open_preference_pairs(str(_dataset_with_broken_images(tmp_path)))
    counts = DataCounts()
    captions = []
    for batch in _all_batches(pairs):
        counts.record(batch)
        captions += batch.captions
    assert sorted(captions) == ["pair 0", "pair 3"]
    assert (counts.bad_images, counts.images_read) == (2, 8)
    counts.check_bad_images(max_fraction=0.25, dataset_images=8)  # 2 of 8: allowed
    with pytest.raises(TooManyBadImagesError, match="2 images could not be decoded"):
        counts.check_bad_images(max_fraction=0.2, dataset_images=8)


def test_training_aborts_above_the_bad_image_share(tmp_path: Path, tiny_sd_path: str) -> None:
    from agfsync.train.loop import train

    config = DPOTrainingConfig(
        pretrained_model=tiny_sd_path,
        dataset=str(_dataset_with_broken_images(tmp_path)),
        output_dir=tmp_path / "out",
        max_bad_image_fraction=0.1,
        train_batch_size=4,
        effective_batch_size=4,
        report_to="none",
        validation_steps=0,
    )
    expected = re.escape("max_bad_image_fraction=0.1 of the 8 images")
    with pytest.raises(TooManyBadImagesError, match=expected):
        train(config)


# -- the paired transform ----------------------------------------------------------------


def _pattern(width: int, height: int, offset: int) -> np.ndarray:
    """Every pixel distinct enough that any shift or mirror shows."""
    y, x = np.mgrid[0:height, 0:width]
    channels = [(x * 5 + offset) % 256, (y * 7 + offset) % 256, (x * y + offset) % 256]
    return np.stack(channels, -1).astype(np.uint8)


def test_paired_transform_flips_then_crops_both_images_identically() -> None:
    resolution = 32
    # The shorter side already equals the resolution, so pixels pass through unresampled.
    first, second = _pattern(48, 32, 0), _pattern(48, 32, 99)
    transform = PairedTransform(resolution, random_flip=True, random_crop=True)
    seen_flips, seen_lefts = set(), set()
    for seed in range(12):
        pair = transform(Image.fromarray(first), Image.fromarray(second), random.Random(seed))
        top, left = pair.crop_top_left
        assert top == 0 and 0 <= left <= 16
        assert pair.original_size == (32, 48)
        for source, output in ((first, pair.preferred), (second, pair.rejected)):
            shown = source[:, ::-1] if pair.flipped else source
            np.testing.assert_array_equal(_pixels(output), shown[top : top + 32, left : left + 32])
        # The draws come from the pair's RNG in a fixed order: flip first, then the crop.
        rng = random.Random(seed)
        assert pair.flipped == (rng.random() < 0.5)
        assert (top, left) == (rng.randint(0, 0), rng.randint(0, 16))
        seen_flips.add(pair.flipped)
        seen_lefts.add(left)
    assert seen_flips == {True, False} and len(seen_lefts) > 3


def test_centre_crop_after_resize_records_sdxl_coordinates() -> None:
    transform = PairedTransform(32, random_flip=False, random_crop=False)
    image = Image.fromarray(_pattern(96, 64, 0))
    pair = transform(image, image, random.Random(0))
    assert pair.original_size == (64, 96)  # (height, width) before resizing
    assert pair.crop_top_left == (0, 8)  # resized to 48x32, centred
    assert pair.preferred.shape == pair.rejected.shape == (3, 32, 32)
    assert not pair.flipped


def test_augmentation_is_a_function_of_seed_epoch_and_pair(tmp_path: Path) -> None:
    pairs = open_preference_pairs(str(write_colour_preference_dataset(tmp_path / "ds", 4, size=48)))
    reader = PairReader(pairs.columns, PairedTransform(32, True, True), seed=3)
    row = pairs.dataset[0]

    def example(epoch: int) -> PairExample:
        item = reader(row, epoch)
        assert isinstance(item, PairExample)
        return item

    first, again = example(0), example(0)
    assert first.preferred_key == again.preferred_key
    assert torch.equal(first.pair.preferred, again.pair.preferred)
    assert len({example(epoch).preferred_key for epoch in range(8)}) > 1


# -- order, resume position and processes --------------------------------------------------


def test_skipping_batches_resumes_the_same_order(tmp_path: Path) -> None:
    pairs = open_preference_pairs(str(write_colour_preference_dataset(tmp_path / "ds", 8)))
    reader = PairReader(pairs.columns, PairedTransform(32, False, False), seed=0)
    plan = BatchPlan(batch_size=2, seed=5)
    full = [b.captions for b in epoch_batches(pairs, reader, plan, epoch=1)]
    resumed = [b.captions for b in epoch_batches(pairs, reader, plan, epoch=1, skip_batches=3)]
    other_epoch = [b.captions for b in epoch_batches(pairs, reader, plan, epoch=2)]
    assert len(full) == 4 and resumed == full[3:]
    assert other_epoch != full


def test_processes_get_disjoint_equal_shares(tmp_path: Path) -> None:
    pairs = open_preference_pairs(str(write_colour_preference_dataset(tmp_path / "ds", 7)))
    shares = [
        [c for b in _all_batches(pairs, process_index=rank, num_processes=2) for c in b.captions]
        for rank in range(2)
    ]
    assert len(shares[0]) == len(shares[1]) == 3
    assert not set(shares[0]) & set(shares[1])


def test_an_image_path_is_read_only_inside_the_dataset(tmp_path: Path) -> None:
    """A row's image may be a path (no bytes): one leading out of the dataset's folder
    (and the Hugging Face caches) is never opened, and stops the run."""
    from agfsync.safe_paths import UnsafePathError
    from agfsync.train.data import PairColumns

    folder = tmp_path / "ds"
    folder.mkdir()
    for name, colour in (("red.png", RED), ("blue.png", BLUE)):
        solid(colour).save(folder / name)
    solid(RED).save(tmp_path / "outside.png")
    reader = PairReader(
        PairColumns("caption", "jpg_0", "jpg_1", "label_0"),
        PairedTransform(32, False, False),
        seed=0,
        image_roots=(folder,),
    )

    def row(first: str, second: str) -> dict[str, Any]:
        return {
            "caption": "c",
            "jpg_0": {"bytes": None, "path": first},
            "jpg_1": {"bytes": None, "path": second},
            "label_0": 1.0,
        }

    assert isinstance(reader(row(str(folder / "red.png"), "blue.png"), 0), PairExample)
    for escaping in ("../outside.png", str(tmp_path / "outside.png"), "/etc/hostname"):
        with pytest.raises(UnsafePathError, match="leads outside its folder"):
            reader(row("red.png", escaping), 0)
