"""Exceptions with messages meant for the person running the command.

Every error a user is expected to read derives from `AgfsyncError`; the CLI prints
its message on one line (no traceback) and exits with its `exit_code`:

- `ConfigurationError` (exit 2): an input or option that cannot work, raised before
  any paid or long work starts (bad prompt file, folder we may not write, missing key
  or model).
- `RunFailedError` (exit 1): a run that started and could not produce anything usable
  (a step that failed, every LLM call refused); finished work stays in the cache.
- `PublishError` (exit 1): the Hub or Argilla refused or failed; nothing was changed
  there.

Whatever a command prints of an error goes through `one_line` (credentials in URLs
replaced by `***`); an exception agfsync did not expect ends the command with
`unexpected_line` (its type, message and where it was raised), its plain traceback
printed before it only when `AGFSYNC_DEBUG=1`: never rich's boxes, whose local
variables can hold secrets.
"""

from __future__ import annotations

import sys
import traceback


class AgfsyncError(Exception):
    """An error whose message names the problem, the offending value and what to do."""

    exit_code = 1


class ConfigurationError(AgfsyncError, ValueError):
    """Raised before any work starts when an input or option cannot work."""

    exit_code = 2


class RunFailedError(AgfsyncError):
    """A run started and produced nothing usable; running it again resumes it."""


class PublishError(AgfsyncError):
    """A publication (Hub, Argilla) failed; the remote side is unchanged."""


def describe_validation_error(error: Exception, flags: dict[str, str] | None = None) -> str:
    """A pydantic ValidationError as one readable line, `where: problem (got value)` for
    each problem, without pydantic's documentation links. With `flags` (command-line
    options), `where` is the field's flag (`flags[field]`, else `--field-name`);
    without, the key path in the file (`profiles.offline.images_per_second`)."""
    problems = []
    for item in getattr(error, "errors", lambda: [])()[:3]:
        location = [str(part) for part in item.get("loc", ())]
        if flags is None:
            where = ".".join(location) or "the file"
        else:
            # The longest dotted path with a flag (`sampling.seed`), else the field's.
            known = next(
                (n for n in range(len(location), 0, -1) if ".".join(location[:n]) in flags), 1
            )
            field = ".".join(location[:known])
            where = flags.get(field) or "--" + field.replace("_", "-")
            where += "".join(f"[{part}]" for part in location[known:])
        got = item.get("input")
        shown = f" (got {got!r})" if isinstance(got, str | int | float) else ""
        problems.append(f"{where}: {item.get('msg', 'invalid')}{shown}")
    return "; ".join(problems) or str(error)


def one_line(error: BaseException | str) -> str:
    """An error's message as a user reads it: one line, credentials in URLs as `***`."""
    from agfsync.logs import redact

    return redact(" ".join(str(error).split()))


def _raised_at(error: BaseException) -> str:
    """Where `error` was raised: the innermost frame in agfsync's modules, else the last
    frame (`agfsync.run.processes:88 in __enter__`)."""
    frames = [
        (frame.f_globals.get("__name__", "?"), line, frame.f_code.co_name)
        for frame, line in traceback.walk_tb(error.__traceback__)
    ]
    ours = [frame for frame in frames if frame[0].split(".")[0] == "agfsync"]
    if not (ours or frames):
        return "an unknown place"
    module, line, function = (ours or frames)[-1]
    return f"{module}:{line} in {function}"


def unexpected_line(error: BaseException) -> str:
    """The last line of a command that met an exception agfsync did not expect. With
    `AGFSYNC_DEBUG=1`, the exception's plain traceback (no local variables, credentials
    redacted) is written to standard error first."""
    from agfsync.environment import AGFSYNC_DEBUG
    from agfsync.logs import redact

    if (AGFSYNC_DEBUG.get("") or "").strip().lower() not in ("", "0", "false", "no", "off"):
        sys.stderr.write(redact("".join(traceback.format_exception(error))))
        where = "its traceback is above"
    else:
        where = f"set {AGFSYNC_DEBUG.name}=1 to print its traceback"
    message = f": {one_line(error)}" if str(error).strip() else ""
    return (
        f"unexpected {type(error).__name__}{message} (at {_raised_at(error)}); {where}, "
        "and please report it."
    )
