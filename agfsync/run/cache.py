"""Cache keys that change when anything upstream changes.

distilabel 1.5.3 keys a step's cached output by the step's own attributes only.
Re-running a pipeline with, say, another image seed re-renders the images but
then reuses the judging and pair results of the previous run, because those
steps' own attributes did not change (observed: "results cached, won't be loaded
and executed"). Folding the predecessors' signatures into each step's signature
makes a change anywhere upstream invalidate everything downstream, while an
identical re-run still resumes from the cache.

distilabel asks for every step's signature each time it saves its state, after every
batch. Computed afresh, that is a dump of each step's attributes, once more for each
step downstream of it, and the bytes of every prompt file hashed again: a cost per batch
that grows with the prompt file, so a run's total grew faster than its length. Both are
remembered: a step's own signature until its attributes change, a file's digest until
its size or modification time does.
"""

import hashlib
import stat
from pathlib import Path
from typing import Any

from distilabel.constants import STEP_ATTR_NAME
from distilabel.mixins.signature import SignatureMixin
from pydantic import PrivateAttr


def attribute_state(step: Any) -> str:
    """What a step's signature and dump depend on, cheaply: the `repr` of its attributes
    (without the pipeline it belongs to)."""
    return repr([(name, value) for name, value in step.__dict__.items() if name != "pipeline"])


class RememberedSignatureMixin(SignatureMixin):
    """distilabel's signature of the step's own attributes, computed again only when
    they change (their `repr`, without the pipeline, is the check: cheap next to the
    dump and hash it saves)."""

    _remembered_signature: tuple[str, str] | None = PrivateAttr(default=None)

    def _own_signature(self) -> str:
        state = attribute_state(self)
        remembered = self._remembered_signature
        if remembered is not None and remembered[0] == state:
            return remembered[1]
        signature = super().signature
        self._remembered_signature = (state, signature)
        return signature


class UpstreamSignatureMixin(RememberedSignatureMixin):
    """A step signature that also covers every step feeding into it."""

    _upstream_signatures: list[str] = PrivateAttr(default_factory=list)

    @property
    def signature(self) -> str:
        pipeline = getattr(self, "pipeline", None)
        # distilabel detaches `step.pipeline` before starting the step processes but
        # asks for the signature again afterwards (to locate the outputs), so the
        # last upstream signatures seen while attached are kept for that moment.
        if pipeline is not None:
            self._upstream_signatures = sorted(
                pipeline.dag.get_step(name)[STEP_ATTR_NAME].signature
                for name in pipeline.dag.get_step_predecessors(self.name)
            )
        parts = [self._own_signature(), *self._upstream_signatures]
        return hashlib.sha1("-".join(parts).encode()).hexdigest()


class FileContentsSignatureMixin(RememberedSignatureMixin):
    """A signature that also covers the contents of the files a step reads.

    A step's attributes hold a file's path, not its contents: editing a prompt file and
    running the same command again would reuse what the old contents produced. The
    step lists the files it reads (`signature_files`); their bytes are hashed into its
    signature (and so, through `UpstreamSignatureMixin`, into every later step's).
    """

    @property
    def signature_files(self) -> list[Path]:
        raise NotImplementedError

    @property
    def signature(self) -> str:
        digest = hashlib.sha1(self._own_signature().encode())
        for path in self.signature_files:
            digest.update(file_digest(path))
        return digest.hexdigest()


_FILE_DIGESTS: dict[tuple[str, int, int, int], bytes] = {}


def file_digest(path: Path) -> bytes:
    """SHA-1 of a file's bytes, hashed again only when its size, modification time or
    inode changes; `b"<missing>"` for a path that is not a file."""
    try:
        status = path.stat()
    except OSError:
        return b"<missing>"
    if not stat.S_ISREG(status.st_mode):
        return b"<missing>"
    key = (str(path.resolve()), status.st_size, status.st_mtime_ns, status.st_ino)
    if key not in _FILE_DIGESTS:
        _FILE_DIGESTS[key] = hashlib.sha1(path.read_bytes()).digest()
    return _FILE_DIGESTS[key]


def keep_out_of_the_cache_key(step: Any, *fields: str) -> None:
    """`fields` of `step` do not change its output (a time limit, writer threads): a
    rerun with other values reuses the work already done."""
    # Set directly: distilabel validates assignments, which would run validators again.
    step.__dict__["exclude_from_signature"] = {*step.exclude_from_signature, *fields}


def remember_pipeline_dumps(pipeline: Any) -> None:
    """distilabel dumps the whole pipeline twice after every batch, to hash its step
    names into the cache folder's name and to write `pipeline.yaml` again: the same
    dict every time while no step changes. Here the dump is remembered per state of
    the steps, and `pipeline.yaml` rewritten only when its dump or the file changed."""
    dump, save = pipeline.dump, pipeline.save
    remembered: dict[str, Any] = {"key": None, "version": 0}
    written: dict[tuple[str, str], tuple[int, tuple[int, int] | None]] = {}

    def remembered_dump(**kwargs: Any) -> Any:
        steps = [pipeline.dag.get_step(name)[STEP_ATTR_NAME] for name in pipeline.dag]
        key = repr((sorted(kwargs.items()), [attribute_state(step) for step in steps]))
        if remembered["key"] != key:
            remembered.update(key=key, value=dump(**kwargs), version=remembered["version"] + 1)
        return remembered["value"]

    def save_when_changed(
        path: Any = None, format: str = "json", dump: Any = None, **kwargs: Any
    ) -> None:
        if dump is not None:
            save(path=path, format=format, dump=dump)
            return
        value = remembered_dump(**kwargs)
        target = (str(path), format)
        if written.get(target) == (remembered["version"], _file_state(path)):
            return
        save(path=path, format=format, dump=value)
        written[target] = (remembered["version"], _file_state(path))

    pipeline.dump = remembered_dump
    pipeline.save = save_when_changed


def _file_state(path: Any) -> tuple[int, int] | None:
    try:
        status = Path(path).stat()
    except (OSError, TypeError):
        return None
    return status.st_mtime_ns, status.st_size
