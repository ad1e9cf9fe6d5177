"""Logging of every agfsync command, configured once, and secrets kept out of it.

- Credentials in URLs (`http://user:password@host/v1`, as in `OPENAI_BASE_URL`) are
  replaced by `***` in every log record of this process and of the processes it forks
  (distilabel's step processes), and in the `pipeline.yaml` a run writes
  (`keep_credentials_out_of_files`).
- When standard error is not a terminal (CI, `nohup`, a log file), distilabel's log
  lines are written plainly instead of through rich, whose 80-column layout wraps
  tracebacks beyond reading.
"""

from __future__ import annotations

import logging
import multiprocessing
import re
import sys
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_URL_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/\s@'\"]+@")


def redact(text: str) -> str:
    """`text` with the user name and password of every URL replaced by `***`."""
    return _URL_CREDENTIALS.sub(r"\g<scheme>***@", text)


def _redact_values(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: _redact_values(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_redact_values(item) for item in value]
    return value


_installed = False


def configure_logging(level: int = logging.INFO) -> None:
    """Once per process: INFO lines of agfsync on standard error, credentials in URLs
    redacted from every record, plain distilabel lines when not on a terminal."""
    global _installed, _notes_shared
    if _installed:
        return
    _installed = True
    _notes_shared = multiprocessing.RawArray("L", 64)
    make_record = logging.getLogRecordFactory()

    def redacting_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        message = record.getMessage()
        if exc_info := record.exc_info:
            # Exception texts carry URLs too; formatted here so they can be redacted.
            message += "\n" + logging.Formatter().formatException(exc_info)
            record.exc_info = None
        if "://" in message:
            record.msg, record.args = redact(message), None
        elif exc_info:
            record.msg, record.args = message, None
        return record

    logging.setLogRecordFactory(redacting_record)
    # On the root logger: while a pipeline runs, distilabel replaces the root's handlers
    # with its queue (into pipeline.log and the terminal), and agfsync's records, from
    # any process, follow them there. Other libraries stay at WARNING.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("agfsync").setLevel(level)


class _PlainHandler(logging.StreamHandler):
    """Stands in for rich's handler in distilabel's logging setup: one line per record,
    tracebacks as Python prints them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(sys.stderr)


def plain_distilabel_lines_off_a_terminal() -> None:
    """Before a pipeline runs: distilabel's log lines as plain lines when standard error
    is not a terminal (a CI log, a file), instead of rich's boxes. Called there rather
    than in `configure_logging`, so that commands without a pipeline do not import
    distilabel."""
    if sys.stderr.isatty():
        return
    import distilabel.utils.logging as distilabel_logging

    distilabel_logging.RichHandler = _PlainHandler


def keep_credentials_out_of_files(pipeline: Any) -> None:
    """The `pipeline.yaml` distilabel writes (and `agfsync publish` uploads) gets
    redacted URLs; the run itself keeps using the real ones, also when distilabel
    reloads the pipeline from that file to resume."""
    originals = {}
    for name in pipeline.dag:
        llm = getattr(pipeline.dag.get_step(name)["step"], "llm", None)
        url = getattr(llm, "base_url", None)
        if isinstance(url, str) and redact(url) != url:
            originals[name] = url
    if not originals:
        return
    dump = pipeline.dump
    refresh = pipeline._refresh_pipeline_from_cache

    def redacted_dump(**kwargs: Any) -> Any:
        return _redact_values(dump(**kwargs))

    def refresh_keeping_urls() -> None:
        refresh()
        for step_name, url in originals.items():
            pipeline.dag.get_step(step_name)["step"].llm.base_url = url

    pipeline.dump = redacted_dump
    pipeline._refresh_pipeline_from_cache = refresh_keeping_urls


_notes_given: set[str] = set()
_notes_shared: Any = None
"""Checksums of the notes given, in memory that the processes forked after
`configure_logging` (distilabel's steps) share: a note comes once per command, not once
per step process."""

PROMPT_TRUNCATION_NOTE = (
    "Some prompts are longer than CLIP's text encoder reads (77 tokens): the images follow, "
    "and the CLIP judge reads, their beginning only; the `clip_truncated` column says which."
)
"""The one note about long prompts, whichever library reported the truncation."""


def _first_time(note: str) -> bool:
    """Whether `note` is given for the first time in this command (all its processes)."""
    if note in _notes_given:
        return False
    _notes_given.add(note)
    if _notes_shared is None:
        return True
    key = zlib.crc32(note.encode()) or 1
    for index, given in enumerate(_notes_shared):
        if given == key:
            return False
        if given == 0:  # two processes may both get here first: a rare second line
            _notes_shared[index] = key
            return True
    return True


class _NoteOnce(logging.Filter):
    """Drops a library's warnings containing `fragment`; logs `note`, if any, once per
    process instead."""

    def __init__(self, fragment: str, note: str | None) -> None:
        super().__init__()
        self.fragment = fragment
        self.note = note

    def filter(self, record: logging.LogRecord) -> bool:
        if self.fragment not in str(record.msg):
            return True
        if self.note is not None and _first_time(self.note):
            logging.getLogger("agfsync").info(self.note)
        return False


def note_once_instead(logger_name: str, fragment: str, note: str | None) -> None:
    """In this process, replace the records of `logger_name` that contain `fragment` (say,
    a library's per-call message that runs to kilobytes) by one agfsync INFO line, or
    by nothing when `note` is None."""
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, _NoteOnce) and f.fragment == fragment for f in logger.filters):
        logger.addFilter(_NoteOnce(fragment, note))


KNOWN_NOISE = {
    # diffusers' pipeline modules import `CLIPImageProcessor`/`SiglipImageProcessor`;
    # without torchvision (CPU machines) transformers falls back to the PIL class the
    # judges use anyway (`agfsync.scoring.base.PROCESSOR_BACKEND`) and warns about it.
    "transformers.utils.import_utils": "requires torchvision (not installed); falling back",
    # An agfsync LoRA adapts the UNet only; loading it says so for the text encoder.
    "diffusers.loaders.lora_base": "No LoRA keys associated to",
}
"""Library warnings no agfsync user can act on: (logger, fragment of the message)."""


def quiet_known_noise() -> None:
    """Silence `KNOWN_NOISE` and distilabel's pydantic warning in this process (called
    when agfsync is imported, so distilabel's step processes get it too)."""
    import warnings

    from pydantic.warnings import UnsupportedFieldAttributeWarning

    # distilabel's step base class puts `Field(default=None)` on a union member; pydantic
    # warns about it, twice, whenever distilabel is imported.
    warnings.filterwarnings(
        "ignore",
        message=r"The 'default' attribute with value None was provided to the `Field\(\)`",
        category=UnsupportedFieldAttributeWarning,
    )
    for logger_name, fragment in KNOWN_NOISE.items():
        note_once_instead(logger_name, fragment, None)


@contextmanager
def diffusers_bars_off() -> Iterator[None]:
    """No diffusers progress bar ("Loading pipeline components...") in the block, for a
    pipeline loaded while agfsync's own bar is live (train's validation); the setting
    is given back after (`quiet_library_progress_bars` turns them off for good)."""
    from diffusers.utils import logging as diffusers_logging

    enabled = diffusers_logging.is_progress_bar_enabled()
    diffusers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            diffusers_logging.enable_progress_bar()


def quiet_library_progress_bars() -> None:
    """Before agfsync loads pipelines or models, or writes datasets: the bars diffusers
    ("Loading pipeline components"), transformers ("Loading weights") and `datasets`
    ("Generating train split", "Creating parquet") draw for work of a second would
    interleave with agfsync's own progress. The Hub's download bars stay: a download
    can take minutes."""
    import datasets
    import diffusers.utils.logging
    import huggingface_hub.utils
    import transformers.utils.logging

    datasets.disable_progress_bars()
    diffusers.utils.logging.disable_progress_bar()
    downloads_shown = not huggingface_hub.utils.are_progress_bars_disabled()
    transformers.utils.logging.disable_progress_bar()  # the Hub's bars too, so back on:
    if downloads_shown:
        huggingface_hub.utils.enable_progress_bars()
