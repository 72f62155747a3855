"""The one exception family a user can cause; the CLI prints it on one line and exits 2."""

from __future__ import annotations


class SegkitError(Exception):
    """A problem with the user's input, file, config or environment, with what to do about it."""


class InputError(SegkitError):
    """An input file or folder is missing, unreadable or not a usable image."""


class ConfigError(SegkitError):
    """A config file or override is invalid."""


class OutputError(SegkitError):
    """An output path cannot be written (not writable, or would overwrite an input)."""


class CheckpointError(SegkitError):
    """A checkpoint is missing, corrupt or unsafe to load."""
