"""agfsync: text-to-image preference datasets with AI feedback, built on distilabel."""

from agfsync.errors import ConfigurationError

__version__ = "0.1.0"

__all__ = ["ConfigurationError", "__version__"]
