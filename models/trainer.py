"""The training loop: the tutorial's Trainer, grown up.

    trainer = Trainer(model, make_optimizer("sgd", model.parameters(), lr=0.01),
                      make_loss("mse", "regression"), callbacks=[EarlyStopping()])
    history = trainer.fit(X_train, y_train, X_test, y_test, epochs=50, eval_every=5)

Progress, early stopping and checkpoints are callbacks (models/callbacks.py); the training
checkpoint format is models/checkpoints.py. The data order
comes from the trainer's own generator, seeded with `seed`; initialisation and dropout use
torch's global RNG, which the caller seeds (`torch.manual_seed`) before building the model.
Checkpoints hold both, so on CPU a resumed run ends with exactly the weights of an
uninterrupted one. The data moves to the device once; the inner loop never syncs with it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import nn

from models.callbacks import Callback
from models.checkpoints import CHECKPOINT_FORMAT, load_resume_state
from models.choices import DEVICES, TASKS
from models.errors import CatalogueError, CheckpointError

log = logging.getLogger(__name__)


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """`auto` (CUDA when available, else CPU), `cpu`, `cuda` or `cuda:N` as a torch.device.

    An unknown name raises CatalogueError; CUDA requested where there is none, RuntimeError.
    """
    text = str(name).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    if not re.fullmatch(r"cuda(:\d+)?", text):
        raise CatalogueError(f"unknown device {name!r}; accepted: {', '.join(DEVICES)}")
    if not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} was asked for, but CUDA is not available here")
    count = torch.cuda.device_count()
    if ":" in text and int(text.split(":")[1]) >= count:
        raise CatalogueError(f"no device {name!r}: this machine has {count} CUDA device(s)")
    return torch.device(text)


class Trainer:
    """Trains `model` on in-memory tensors; `fit` returns one history row per evaluation.

    bf16 autocast applies on CUDA only; on the CPU the flag is ignored (and logged), so a job
    with `device="auto"` runs anywhere. `self.bf16` is the setting in effect.
    """

    eval_batch_size = 1024

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_fn: nn.Module,
        *,
        task: str = "regression",
        callbacks: Iterable[Callback] = (),
        device: str | torch.device = "cpu",
        seed: int = 0,
        grad_clip_norm: float | None = None,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
        bf16: bool = False,
        target_scaler: Any = None,
    ) -> None:
        if task not in TASKS:
            raise CatalogueError(f"unknown task {task!r}; accepted: {', '.join(TASKS)}")
        self.device = resolve_device(device)
        self.model = model.to(self.device)
        self.loss_fn = loss_fn.to(self.device) if isinstance(loss_fn, nn.Module) else loss_fn
        self.optimizer, self.scheduler, self.task = optimizer, scheduler, task
        self.callbacks = list(callbacks)
        self.seed, self.grad_clip_norm, self.target_scaler = seed, grad_clip_norm, target_scaler
        self.bf16 = bf16 and self.device.type == "cuda"
        if bf16 and not self.bf16:
            log.info("bf16 autocast is for CUDA only; training in float32 on %s", self.device)
        self.generator = torch.Generator().manual_seed(seed)
        self.epoch, self.epochs, self.train_loss = 0, 0, math.nan
        self.history: list[dict[str, float]] = []
        self.should_stop = False
        self._check_optim_net_aligned()

    def _check_optim_net_aligned(self) -> None:
        """Raise ValueError unless the optimizer updates exactly the model's trainable params."""
        in_optimizer = {id(p) for group in self.optimizer.param_groups for p in group["params"]}
        named = {id(p): (name, p) for name, p in self.model.named_parameters()}
        problems = []
        extra = len(in_optimizer - named.keys())
        if extra:
            problems.append(
                f"optimizer holds {extra} parameter tensors that are not in the model "
                "(was it made for another model instance?)"
            )
        missing = [n for i, (n, p) in named.items() if p.requires_grad and i not in in_optimizer]
        if missing:
            shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
            problems.append(
                f"the model has {len(missing)} trainable parameter tensors that the optimizer "
                f"does not update ({shown})"
            )
        if problems:
            raise ValueError("optimizer and model do not match: " + "; ".join(problems))

    def _generate_batches(
        self, X: torch.Tensor, y: torch.Tensor, size: int = 32
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Consecutive `size` slices of X and y; the last one may be shorter."""
        for i in range(0, len(X), size):
            yield X[i : i + size], y[i : i + size]

    def fit(
        self,
        X_train: torch.Tensor,
        y_train: torch.Tensor,
        X_test: torch.Tensor,
        y_test: torch.Tensor,
        epochs: int = 100,
        eval_every: int = 10,
        batch_size: int = 32,
        resume_from: str | os.PathLike | Mapping[str, Any] | None = None,
    ) -> list[dict[str, float]]:
        """Train up to `epochs`, evaluating every `eval_every` epochs and after the last one.

        `resume_from` (a checkpoint file, a checkpoint directory, or a loaded state) continues
        where that run stopped; a directory without a usable checkpoint starts afresh.
        """
        if min(epochs, eval_every, batch_size) < 1:
            raise ValueError(
                f"epochs, eval_every, batch_size must be >= 1: {epochs}, {eval_every}, {batch_size}"
            )
        self._check_data(X_train, y_train, "training")
        self._check_data(X_test, y_test, "test")
        X_train, y_train, X_test, y_test = (
            t.to(self.device) for t in (X_train, y_train, X_test, y_test)
        )
        self._start(resume_from)
        self.epochs = epochs
        try:
            self._call("on_fit_start")
            for epoch in range(self.epoch + 1, epochs + 1):
                self._call("on_epoch_start", epoch)
                self.train_loss = self._train_epoch(X_train, y_train, batch_size)
                self.epoch = epoch
                if self.scheduler is not None:
                    self.scheduler.step()
                if epoch % eval_every == 0 or epoch == epochs:
                    self._evaluate(X_test, y_test)
                self._call("on_epoch_end", epoch, self.train_loss)
                if self.should_stop:
                    break
            if self.epoch and (not self.history or self.history[-1]["epoch"] != self.epoch):
                self._evaluate(X_test, y_test)  # stopped early between evaluations
        except BaseException as exc:
            self._call("on_exception", exc)
            raise
        self._call("on_fit_end")
        return self.history

    def _call(self, hook: str, *args: Any) -> None:
        """Dispatch one hook to every callback, in order: the only place callbacks are called."""
        for callback in self.callbacks:
            getattr(callback, hook)(self, *args)

    def _check_data(self, X: torch.Tensor, y: torch.Tensor, split: str) -> None:
        if self.task == "classification":
            want, ok = "int64 of shape (N,)", y.dtype == torch.int64 and y.ndim == 1
        else:
            want, ok = "float of shape (N, n_targets)", y.is_floating_point() and y.ndim == 2
        if not ok or len(X) == 0 or len(X) != len(y):
            raise ValueError(
                f"{split} data: X has {len(X)} rows, y is {y.dtype} {tuple(y.shape)}; "
                f"{self.task} targets must be {want}, one per row of X (at least one)"
            )

    def _start(self, resume_from: str | os.PathLike | Mapping[str, Any] | None) -> None:
        self.should_stop = False
        state = load_resume_state(resume_from)
        if state is None:
            self.epoch, self.train_loss, self.history = 0, math.nan, []
            self.generator.manual_seed(self.seed)
        else:
            self.load_state_dict(state)

    def _train_epoch(self, X: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
        """One pass in a fresh random order; returns the mean loss over the epoch's samples."""
        model, optimizer, loss_fn, amp = self.model, self.optimizer, self.loss_fn, self._autocast()
        model.train()
        order = torch.randperm(len(X), generator=self.generator).to(self.device)
        losses = []  # detached device tensors: no host sync in the loop
        for xb, yb in self._generate_batches(X[order], y[order], batch_size):
            optimizer.zero_grad(set_to_none=True)
            with amp:
                loss = loss_fn(model(xb), yb)
            loss.backward()
            if self.grad_clip_norm is not None:
                nn.utils.clip_grad_norm_(model.parameters(), self.grad_clip_norm)
            optimizer.step()
            losses.append(loss.detach())
        sizes = torch.full((len(losses),), float(batch_size), device=self.device)
        sizes[-1] = len(X) - batch_size * (len(losses) - 1)
        return (torch.stack(losses).float() * sizes).sum().item() / len(X)  # one sync per epoch

    def _autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast on CUDA when asked for; reusable, so made once per epoch."""
        if self.bf16:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _evaluate(self, X: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """Evaluate in eval mode, in batches, under inference_mode; append and return the row."""
        self.model.eval()
        try:
            with torch.inference_mode():
                with self._autocast():
                    batches = self._generate_batches(X, y, self.eval_batch_size)
                    preds = torch.cat([self.model(xb) for xb, _ in batches]).float()
                values = {"val_loss": self.loss_fn(preds, y), **self._metrics(preds, y)}
                values = {name: float(value) for name, value in values.items()}
        finally:
            self.model.train()
        row = {"epoch": self.epoch, "train_loss": self.train_loss, **values}
        self.history.append(row)
        self._call("on_evaluate", row)
        return row

    def _metrics(self, preds: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Accuracy, or RMSE / MAE / R^2 in the targets' original units."""
        if self.task == "classification":
            return {"val_accuracy": (preds.argmax(dim=1) == y).float().mean()}
        if self.target_scaler is not None:
            preds, y = (self.target_scaler.inverse_transform(t.cpu()) for t in (preds, y))
        err = preds - y
        ss_res = err.square().sum(dim=0)
        ss_tot = (y - y.mean(dim=0)).square().sum(dim=0)
        # per target, averaged; a constant target scores 1 if predicted exactly, else 0 (sklearn)
        r2 = torch.where(ss_tot > 0, 1 - ss_res / ss_tot, (ss_res == 0).float())
        return {
            "val_rmse": err.square().mean().sqrt(),
            "val_mae": err.abs().mean(),
            "val_r2": r2.mean(),
        }

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue this run (tensors are the live ones, as in torch)."""
        cuda = self.device.type == "cuda"
        return {
            "format": CHECKPOINT_FORMAT,
            "epoch": self.epoch,
            "train_loss": self.train_loss,
            "history": [dict(row) for row in self.history],
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "rng": {
                "generator": self.generator.get_state(),
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state(self.device) if cuda else None,
            },
            "callbacks": {
                key: cb.state_dict() for key, cb in self._callback_keys() if cb.state_dict()
            },
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a `state_dict()`; CheckpointError if it is not one or does not fit."""
        if state.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError("not a trainserve trainer checkpoint")
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            if self.scheduler is not None and state["scheduler"] is not None:
                self.scheduler.load_state_dict(state["scheduler"])
            rng = state["rng"]
            self.generator.set_state(rng["generator"])
            torch.set_rng_state(rng["torch"])
            if rng["cuda"] is not None and self.device.type == "cuda":
                torch.cuda.set_rng_state(rng["cuda"], self.device)
            self.epoch, self.train_loss = state["epoch"], state["train_loss"]
        except (KeyError, RuntimeError, ValueError) as exc:
            raise CheckpointError(f"checkpoint does not fit this trainer: {exc}") from exc
        self.history = [dict(row) for row in state["history"]]
        for key, callback in self._callback_keys():
            if key in state["callbacks"]:
                callback.load_state_dict(state["callbacks"][key])

    def _callback_keys(self) -> list[tuple[str, Callback]]:
        """Stable names for callbacks' state: class name, numbered when repeated."""
        keys, seen = [], {}
        for callback in self.callbacks:
            name = type(callback).__name__
            seen[name] = seen.get(name, 0) + 1
            keys.append((name if seen[name] == 1 else f"{name}#{seen[name]}", callback))
        return keys
