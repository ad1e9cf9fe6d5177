"""agfsync: text-to-image preference datasets with AI feedback, built on distilabel."""

from agfsync.errors import ConfigurationError
from agfsync.logs import quiet_known_noise

quiet_known_noise()

__version__ = "0.1.0"

__all__ = ["ConfigurationError", "__version__"]
