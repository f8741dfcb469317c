"""Errors raised by models/. The service maps each one to an HTTP status in one place."""

import math


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


class DivergedError(ArithmeticError):
    """Training whose loss or a metric stopped being finite (NaN or infinity): the weights are
    useless, so the run ends without a model; the message says at which epoch and what to do."""

    def __init__(self, epoch: int, what: str, value: float) -> None:
        became = "NaN" if math.isnan(value) else "infinite"
        super().__init__(
            f"diverged at epoch {epoch}: {what} became {became}; lower lr or enable grad_clip_norm"
        )
        self.epoch, self.what, self.value = epoch, what, value
