"""Images written on background threads: the same files as inline writes, a bounded
queue, whole files or none, and failures raised where the writer is left."""

import threading
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from agfsync.image_writer import ImageWriter


def images(count: int) -> list[Image.Image]:
    return [Image.new("RGB", (48, 40), (index * 30 % 256, 90, 200)) for index in range(count)]


@pytest.mark.parametrize("image_format", ["png", "webp", "jpeg"])
def test_threads_write_the_bytes_an_inline_write_does(tmp_path: Path, image_format: str) -> None:
    for threads in (0, 3):
        with ImageWriter(threads=threads, max_pending=2) as writer:
            for index, image in enumerate(images(9)):
                target = tmp_path / str(threads) / f"{index}.{image_format}"
                writer.submit(target, image, format=image_format, quality=90)
    inline = sorted((tmp_path / "0").iterdir())
    threaded = sorted((tmp_path / "3").iterdir())
    assert [path.name for path in inline] == [path.name for path in threaded]
    assert len(inline) == 9
    for one, other in zip(inline, threaded, strict=True):
        assert one.read_bytes() == other.read_bytes()


class SlowImage:
    """Saves only once `release` is set, counting how many saves run or wait at once."""

    release = threading.Event()
    active = 0
    most_active = 0
    lock = threading.Lock()

    def save(self, path: Path, **options: Any) -> None:
        with SlowImage.lock:
            SlowImage.active += 1
            SlowImage.most_active = max(SlowImage.most_active, SlowImage.active)
        SlowImage.release.wait(timeout=30)
        Path(path).write_bytes(b"image")
        with SlowImage.lock:
            SlowImage.active -= 1


def test_submitting_waits_while_the_queue_is_full(tmp_path: Path) -> None:
    submitted: list[int] = []

    def submit_all() -> None:
        with ImageWriter(threads=2, max_pending=3) as writer:
            for index in range(8):
                writer.submit(tmp_path / f"{index}.png", SlowImage())  # type: ignore[arg-type]
                submitted.append(index)

    producer = threading.Thread(target=submit_all)
    producer.start()
    producer.join(timeout=1.0)
    # Three images queued or being written; the fourth waits for a free slot.
    assert producer.is_alive() and submitted == [0, 1, 2]
    SlowImage.release.set()
    producer.join(timeout=30)
    assert not producer.is_alive() and submitted == list(range(8))
    assert SlowImage.most_active <= 2
    assert sorted(path.name for path in tmp_path.iterdir()) == [f"{i}.png" for i in range(8)]


class BrokenImage:
    def save(self, path: Path, **options: Any) -> None:
        Path(path).write_bytes(b"half an ima")
        raise OSError(28, "No space left on device")


def test_a_failed_write_raises_on_leaving_and_leaves_no_partial_file(tmp_path: Path) -> None:
    good = images(4)
    with pytest.raises(OSError, match="No space left"), ImageWriter(threads=2) as writer:
        writer.submit(tmp_path / "0.png", good[0], format="png")
        writer.submit(tmp_path / "1.png", BrokenImage())  # type: ignore[arg-type]
        for index in (2, 3):
            writer.submit(tmp_path / f"{index}.png", good[index], format="png")
    # The other images are written whole; the failed one left nothing behind.
    assert sorted(path.name for path in tmp_path.iterdir()) == ["0.png", "2.png", "3.png"]
    for name in ("0.png", "2.png", "3.png"):
        with Image.open(tmp_path / name) as image:
            image.verify()
