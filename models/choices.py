"""The named choices of a training request, defined once: what models/ accepts and what the
request schema, the catalogue and the command line offer."""

from __future__ import annotations

from typing import Literal, get_args

Task = Literal["regression", "classification"]
OptimizerName = Literal["sgd", "adam", "adamw", "rmsprop"]
Loss = Literal["mse", "l1", "smooth_l1", "cross_entropy", "bce_with_logits"]
Schedule = Literal["none", "step", "cosine"]

TASKS: tuple[str, ...] = get_args(Task)
OPTIMIZERS: tuple[str, ...] = get_args(OptimizerName)
LOSSES: tuple[str, ...] = get_args(Loss)
SCHEDULES: tuple[str, ...] = get_args(Schedule)
LOSSES_BY_TASK = {
    "regression": ("mse", "l1", "smooth_l1"),
    "classification": ("cross_entropy", "bce_with_logits"),
}
DEVICE_PATTERN = r"^(auto|cpu|cuda|cuda:[0-9]{1,3})$"
DEVICES = ("auto", "cpu", "cuda", "cuda:N")
SEED_MAX = 2**31 - 1
