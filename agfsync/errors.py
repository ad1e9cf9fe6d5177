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
