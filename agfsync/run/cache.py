"""Cache keys that change when anything upstream changes.

distilabel 1.5.3 keys a step's cached output by the step's own attributes only.
Re-running a pipeline with, say, another image seed re-renders the images but
then reuses the judging and pair results of the previous run, because those
steps' own attributes did not change (observed: "results cached, won't be loaded
and executed"). Folding the predecessors' signatures into each step's signature
makes a change anywhere upstream invalidate everything downstream, while an
identical re-run still resumes from the cache.
"""

import hashlib
from pathlib import Path
from typing import Any

from distilabel.constants import STEP_ATTR_NAME
from distilabel.mixins.signature import SignatureMixin
from pydantic import PrivateAttr


class UpstreamSignatureMixin(SignatureMixin):
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
        parts = [super().signature, *self._upstream_signatures]
        return hashlib.sha1("-".join(parts).encode()).hexdigest()


class FileContentsSignatureMixin(SignatureMixin):
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
        digest = hashlib.sha1(super().signature.encode())
        for path in self.signature_files:
            digest.update(path.read_bytes() if path.is_file() else b"<missing>")
        return digest.hexdigest()


def keep_out_of_the_cache_key(step: Any, *fields: str) -> None:
    """`fields` of `step` do not change its output (a time limit, writer threads): a
    rerun with other values reuses the work already done."""
    # Set directly: distilabel validates assignments, which would run validators again.
    step.__dict__["exclude_from_signature"] = {*step.exclude_from_signature, *fields}
