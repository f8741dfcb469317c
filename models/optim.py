"""Optimizers, losses and learning-rate schedules by name, for the catalogue and the Trainer.

    optimizer = make_optimizer("sgd", model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = make_loss("cross_entropy", "classification")
    scheduler = make_scheduler("cosine", optimizer, epochs=20)  # None for "none"

An unknown name, or a loss that does not fit the task, raises CatalogueError naming the
accepted values. The names come from models/choices.py, as the request schema's do.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from models.choices import LOSSES, LOSSES_BY_TASK, OPTIMIZERS, SCHEDULES, TASKS
from models.errors import CatalogueError

_WITH_MOMENTUM = ("sgd", "rmsprop")


def _check_name(kind: str, name: str, accepted: Iterable[str]) -> None:
    accepted = tuple(accepted)
    if name not in accepted:
        raise CatalogueError(f"unknown {kind} {name!r}; accepted: {', '.join(accepted)}")


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise CatalogueError(f"unknown task {task!r}; accepted: {', '.join(TASKS)}")


def make_optimizer(
    name: str,
    params: Iterable[torch.Tensor] | Iterable[dict],
    *,
    lr: float,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
) -> torch.optim.Optimizer:
    """One of OPTIMIZERS. `momentum` applies to sgd and rmsprop, `betas` to adam and adamw.

    adamw uses decoupled weight decay; the others add `weight_decay` to the gradient (L2).
    """
    _check_name("optimizer", name, OPTIMIZERS)
    if momentum and name not in _WITH_MOMENTUM:
        raise CatalogueError(
            f"optimizer {name!r} has no momentum parameter (it has betas); "
            f"momentum applies to: {', '.join(_WITH_MOMENTUM)}"
        )
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay)
    return torch.optim.AdamW(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay)


class OneHotBCEWithLogitsLoss(nn.Module):
    """Binary cross-entropy of (B, n_classes) logits against int64 class indices (B,)."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        one_hot = F.one_hot(target, logits.shape[-1]).to(logits.dtype)  # (B, n_classes)
        return F.binary_cross_entropy_with_logits(logits, one_hot)


_LOSS_CLASSES = {
    "mse": nn.MSELoss,
    "l1": nn.L1Loss,
    "smooth_l1": nn.SmoothL1Loss,
    "cross_entropy": nn.CrossEntropyLoss,
    "bce_with_logits": OneHotBCEWithLogitsLoss,
}


def default_loss(task: str) -> str:
    """The loss used when a request names none: mse for regression, cross_entropy otherwise."""
    _check_task(task)
    return "mse" if task == "regression" else "cross_entropy"


def make_loss(name: str, task: str) -> nn.Module:
    """One of LOSSES_BY_TASK[task], as a module taking (model output, targets)."""
    _check_task(task)
    _check_name("loss", name, LOSSES)
    if name not in LOSSES_BY_TASK[task]:
        raise CatalogueError(
            f"loss {name!r} does not fit a {task} task; accepted for {task}: "
            f"{', '.join(LOSSES_BY_TASK[task])}"
        )
    return _LOSS_CLASSES[name]()


def make_scheduler(
    name: str | None,
    optimizer: torch.optim.Optimizer,
    *,
    epochs: int,
    step_size: int | None = None,
    gamma: float = 0.1,
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """One of SCHEDULES (None means "none"), stepped once per epoch by the Trainer.

    step: multiply the learning rate by `gamma` every `step_size` epochs (default: a third of
    `epochs`). cosine: anneal from the initial rate to 0 over `epochs`.
    """
    name = name or "none"
    _check_name("learning-rate schedule", name, SCHEDULES)
    if name == "none":
        return None
    if name == "step":
        step_size = step_size or max(1, epochs // 3)
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=gamma)
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs))
