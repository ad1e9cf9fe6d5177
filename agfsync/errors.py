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
"""


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
