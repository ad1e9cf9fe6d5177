"""`python -m agfsync` runs the command line."""

from agfsync.cli import app

app()
