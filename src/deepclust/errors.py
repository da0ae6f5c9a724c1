"""Errors that carry a message meant for the user.

The CLI prints the message of any `DeepclustError` (no traceback) and exits with code 2,
so raise these for bad input, missing files or models, and collapsed runs.
"""


class DeepclustError(Exception):
    """Base class: a problem the user can fix, with a message that says how."""


class DataError(DeepclustError):
    """The source is missing, empty, all-bad or in a format we do not read."""


class BadImageError(DeepclustError):
    """One image cannot be used; `reason` is written to skipped.csv."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class ModelNotAvailableError(DeepclustError):
    """A pretrained model or run directory cannot be found or loaded."""


class CollapseError(DeepclustError):
    """Training collapsed (e.g. every image in one cluster); the run is stopped."""
