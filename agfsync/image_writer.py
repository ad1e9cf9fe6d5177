"""Candidate images encoded and written beside the rendering.

Encoding a PNG takes tens of milliseconds per 512-pixel image on the CPU (59 ms per image
measured inside the image step on an H100 machine, a third of its busy time), during
which the accelerator would wait. `ImageWriter` hands each image to background threads
(Pillow's encoders and file writes release the GIL) while the next batch is denoised.
At most `max_pending` images wait to be written: a slow disk slows the rendering down
instead of filling memory. Every file appears at once under its final name
(`write_atomically`), so a crash leaves whole images or none, as with inline writes.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any

from PIL import Image

from agfsync.atomic import write_atomically


class ImageWriter:
    """Writes images on `threads` background threads (0: in the caller, at once).

    Use as a context manager: leaving it waits for every write, and the first write
    that failed raises there (the others are still written).

    Examples:
        ```python
        from pathlib import Path
        from PIL import Image

        from agfsync.image_writer import ImageWriter

        with ImageWriter(threads=2) as writer:
            for index in range(4):
                image = Image.new("RGB", (64, 64), (index * 60, 0, 0))
                writer.submit(Path(f"images/{index}.png"), image, format="png")
        ```
    """

    def __init__(self, threads: int = 2, max_pending: int = 16) -> None:
        self._pool = ThreadPoolExecutor(threads, "image-writer") if threads > 0 else None
        self._slots = threading.BoundedSemaphore(max(1, max_pending))
        self._futures: list[Future[None]] = []

    def submit(self, target: Path, image: Image.Image, **save_options: Any) -> None:
        """Write `image` to `target` (`Image.save` options, e.g. `format`, `quality`);
        waits while `max_pending` images are queued."""

        def write(partial: Path) -> None:
            image.save(partial, **save_options)

        if self._pool is None:
            write_atomically(target, write)
            return
        self._slots.acquire()
        future = self._pool.submit(write_atomically, target, write)
        future.add_done_callback(lambda _: self._slots.release())
        self._futures.append(future)

    def __enter__(self) -> ImageWriter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._pool is None:
            return
        self._pool.shutdown(wait=True)
        failures = [future.exception() for future in self._futures]
        first = next((failure for failure in failures if failure is not None), None)
        if first is not None and error is None:
            raise first
