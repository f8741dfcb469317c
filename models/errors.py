"""Errors raised by models/. The service maps each one to an HTTP status in one place."""


class CatalogueError(ValueError):
    """An unknown architecture, dataset, loss, optimizer or parameter, or a value out of range.

    The message names what was wrong and what is accepted.
    """


class DatasetUnavailableError(RuntimeError):
    """A registered dataset whose files are absent and may not be downloaded."""


class DataFormatError(ValueError):
    """A user file (CSV, NPZ) that cannot be read as a dataset; the message says where and why."""


class AmbiguousDataError(DataFormatError):
    """A readable file that leaves a choice to the user (a target column of numbers and words:
    classes or a typo?); the message says which choice to make."""


class DatasetTooLargeError(DataFormatError):
    """A file that would hold more values once read (decompressed, parsed) than allowed."""


class CheckpointError(ValueError):
    """A weights or checkpoint file that is not in the expected format or fails its checks."""
