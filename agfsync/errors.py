"""Exceptions with messages meant for the person running the command."""


class ConfigurationError(ValueError):
    """Raised before any work starts when an input or option cannot work.

    The message names the problem, the offending value and what to do instead;
    the CLI prints it on one line and exits with a non-zero code.
    """
