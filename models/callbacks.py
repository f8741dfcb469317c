"""Callbacks: everything around the training loop that is not the loop.

A callback overrides the hooks it needs (see `Callback`); the Trainer calls them in list order,
all from one place (`Trainer._call`), once per fit, epoch or evaluation, never per batch.
Setting `trainer.should_stop = True` from a hook ends fit after the current epoch.

`Checkpointing` writes training checkpoints in the format of models/checkpoints.py.
`DivergenceGuard` ends fit with DivergedError at the first loss or metric that is not finite.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import torch
from tqdm.auto import tqdm

from models.checkpoints import checkpoint_paths, save_checkpoint
from models.errors import DivergedError

if TYPE_CHECKING:
    from models.trainer import Trainer

log = logging.getLogger(__name__)


class Callback:
    """Base class: every hook is a no-op. Hooks receive the trainer first."""

    def on_fit_start(self, trainer: Trainer) -> None:
        """Before the first epoch (a resumed run's state is already loaded)."""

    def on_fit_end(self, trainer: Trainer) -> None:
        """After the last epoch and its evaluation; not called when fit raises."""

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        """Before training epoch `epoch` (counted from 1)."""

    def on_epoch_end(self, trainer: Trainer, epoch: int, train_loss: float) -> None:
        """After epoch `epoch` was trained (and evaluated, when due); `train_loss` is its mean."""

    def on_evaluate(self, trainer: Trainer, row: dict[str, float]) -> None:
        """After an evaluation; `row` is the history row just appended."""

    def on_exception(self, trainer: Trainer, exc: BaseException) -> None:
        """When fit is left by an exception (KeyboardInterrupt included); fit then re-raises it."""

    def state_dict(self) -> dict[str, Any]:
        """State to keep in checkpoints (empty: nothing to keep)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""


def first_non_finite(values: dict[str, float]) -> tuple[str, float] | None:
    """The first (name, value) of `values` that is NaN or infinite (`epoch` aside), else None."""
    for name, value in values.items():
        if name != "epoch" and isinstance(value, float) and not math.isfinite(value):
            return name, value
    return None


def described(name: str) -> str:
    return "the loss" if name == "train_loss" else name


class DivergenceGuard(Callback):
    """Raise DivergedError at the first non-finite training loss or evaluation value.

    Put it first in the callback list: it then stops fit before later callbacks record the
    evaluation or checkpoint the epoch. `run_training` does so for every run.
    """

    def on_evaluate(self, trainer: Trainer, row: dict[str, float]) -> None:
        found = first_non_finite(row)  # train_loss comes first in a row
        if found is not None:
            raise DivergedError(int(row["epoch"]), described(found[0]), found[1])

    def on_epoch_end(self, trainer: Trainer, epoch: int, train_loss: float) -> None:
        if not math.isfinite(train_loss):
            raise DivergedError(epoch, described("train_loss"), train_loss)


class EarlyStopping(Callback):
    """Stop when `monitor` has not improved by `min_delta` for `patience` evaluations.

    With `restore_best_weights`, the model ends fit with the weights of its best evaluation
    (the history still ends with the last epoch trained).
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        patience: int = 5,
        min_delta: float = 0.0,
        mode: str = "min",
        restore_best_weights: bool = True,
    ) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        if patience < 1:
            raise ValueError(f"patience must be at least 1, got {patience}")
        self.monitor, self.patience, self.min_delta = monitor, patience, abs(min_delta)
        self.mode, self.restore_best_weights = mode, restore_best_weights
        self._reset()

    def _reset(self) -> None:
        self.best: float | None = None
        self.best_epoch = 0
        self.wait = 0
        self.stopped_epoch = 0
        self._best_weights: dict[str, torch.Tensor] | None = None

    def _improved(self, value: float) -> bool:
        if self.best is None:
            return not math.isnan(value)
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_fit_start(self, trainer: Trainer) -> None:
        if trainer.epoch == 0:  # a fresh run; a resumed one keeps the restored state
            self._reset()

    def on_evaluate(self, trainer: Trainer, row: dict[str, float]) -> None:
        if self.monitor not in row:
            raise ValueError(f"EarlyStopping monitors {self.monitor!r}; rows have {sorted(row)}")
        value = row[self.monitor]
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, row["epoch"], 0
            if self.restore_best_weights:
                state = trainer.model.state_dict()
                self._best_weights = {k: v.detach().clone() for k, v in state.items()}
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = row["epoch"]
            trainer.should_stop = True

    def on_fit_end(self, trainer: Trainer) -> None:
        if self._best_weights is not None and self.best_epoch != trainer.epoch:
            trainer.model.load_state_dict(self._best_weights)

    def state_dict(self) -> dict[str, Any]:
        return {
            "best": self.best,
            "best_epoch": self.best_epoch,
            "wait": self.wait,
            "best_weights": self._best_weights,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch = state["best"], state["best_epoch"]
        self.wait, self._best_weights = state["wait"], state["best_weights"]


class Checkpointing(Callback):
    """Save the trainer's state every `every` epochs and at the end, keeping the newest `keep`.

    Files are `directory/epoch-NNNNNN.ckpt`; resume with `trainer.fit(..., resume_from=directory)`.
    """

    def __init__(self, directory: str | os.PathLike, every: int = 1, keep: int = 2) -> None:
        if every < 1 or keep < 1:
            raise ValueError(f"every and keep must be at least 1, got every={every}, keep={keep}")
        self.directory, self.every, self.keep = Path(directory), every, keep
        self._saved: tuple[int, int] | None = None

    def on_epoch_end(self, trainer: Trainer, epoch: int, train_loss: float) -> None:
        if epoch % self.every == 0:
            self.save(trainer)

    def on_fit_end(self, trainer: Trainer) -> None:
        if trainer.epoch and self._saved != (trainer.epoch, len(trainer.history)):
            self.save(trainer)

    def save(self, trainer: Trainer) -> Path:
        """Write a checkpoint of `trainer` now and prune old ones; returns its path."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = save_checkpoint(
            trainer.state_dict(), self.directory / f"epoch-{trainer.epoch:06d}.ckpt"
        )
        self._saved = (trainer.epoch, len(trainer.history))
        for old in checkpoint_paths(self.directory)[: -self.keep]:
            old.unlink(missing_ok=True)
        return path


class ProgressBar(Callback):
    """A tqdm bar over epochs showing the training and validation loss (stderr by default)."""

    def __init__(self, disable: bool | None = False, file: TextIO | None = None) -> None:
        self.disable, self.file = disable, file
        self.bar: tqdm | None = None

    def on_fit_start(self, trainer: Trainer) -> None:
        self.bar = tqdm(
            total=trainer.epochs,
            initial=trainer.epoch,
            desc="training",
            unit="epoch",
            file=self.file or sys.stderr,
            disable=self.disable,
            dynamic_ncols=True,
        )

    def on_epoch_end(self, trainer: Trainer, epoch: int, train_loss: float) -> None:
        self.bar.set_postfix(self._postfix(trainer, train_loss), refresh=False)
        self.bar.update(1)

    def on_evaluate(self, trainer: Trainer, row: dict[str, float]) -> None:
        self.bar.set_postfix(self._postfix(trainer, row["train_loss"]))

    @staticmethod
    def _postfix(trainer: Trainer, train_loss: float) -> dict[str, str]:
        postfix = {"loss": f"{train_loss:.4g}"}
        if trainer.history:
            postfix["val_loss"] = f"{trainer.history[-1]['val_loss']:.4g}"
        return postfix

    def on_fit_end(self, trainer: Trainer) -> None:
        self.bar.close()

    def on_exception(self, trainer: Trainer, exc: BaseException) -> None:
        if self.bar is not None:
            self.bar.close()
