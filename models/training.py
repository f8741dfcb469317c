"""One training run from a TrainingRequest: what the command line and the worker both call.

dataset -> split -> standardise (train split only) -> build architecture (seeded) ->
Trainer.fit -> a model card and the safetensors bytes of the trained weights.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from models.callbacks import Callback, DivergenceGuard, EarlyStopping, described, first_non_finite
from models.catalogue import get_architecture, load_dataset
from models.datasets import Dataset
from models.errors import DivergedError
from models.optim import default_loss, make_loss, make_optimizer, make_scheduler
from models.params import build_config
from models.preprocessing import Standardizer, train_test_split
from models.request import TrainingRequest
from models.trainer import Trainer
from models.weights_file import ModelCard, serialize_model

log = logging.getLogger(__name__)


@dataclass
class TrainingResult:
    model: torch.nn.Module
    card: ModelCard
    history: list[dict[str, float]]
    stopped_early: bool

    def weights(self) -> bytes:
        return serialize_model(self.model, self.card)

    @property
    def final_metrics(self) -> dict[str, float]:
        return {k: v for k, v in self.history[-1].items() if k != "epoch"} if self.history else {}


def _check_finite(history: list[dict[str, float]]) -> None:
    """The final evaluation's values must all be finite (DivergenceGuard stops fit at the first
    that is not; this is the last word on what would be published)."""
    if history and (found := first_non_finite(history[-1])):
        raise DivergedError(int(history[-1]["epoch"]), described(found[0]), found[1])


def check_compatible(config: TrainingRequest, task: str, input_shape: tuple[int, ...]) -> str:
    """Check architecture, parameters, loss and optimizer against a dataset before any data is
    loaded; return the loss name."""
    arch = get_architecture(config.architecture)
    arch.check_task(task)
    arch.check_input(input_shape)
    build_config(arch.config_cls, config.architecture_params, owner=f"architecture '{arch.name}'")
    loss = config.loss or default_loss(task)
    make_loss(loss, task)
    probe = [torch.zeros(1, requires_grad=True)]  # the optimizer's own checks, on no model
    make_optimizer(config.optimizer.name, probe, **config.optimizer.options())
    return loss


def run_training(
    config: TrainingRequest,
    *,
    data_dir: Path | None = None,
    allow_download: bool = False,
    dataset: Dataset | None = None,
    callbacks: Sequence[Callback] = (),
    resume_from: Any = None,
) -> TrainingResult:
    """Train `config` end to end. `dataset` overrides the registry (uploaded datasets).

    A run whose loss or a final metric is not finite raises DivergedError: no weights."""
    if dataset is None:
        dataset = load_dataset(
            config.dataset, config.dataset_params, data_dir=data_dir, allow_download=allow_download
        )
    loss_name = check_compatible(config, dataset.task, dataset.input_shape)
    train, test = train_test_split(dataset, config.test_fraction, config.seed)

    input_scaler = Standardizer().fit(train.X)
    target_scaler = Standardizer().fit(train.y) if dataset.task == "regression" else None
    y_train, y_test = train.y, test.y
    if target_scaler is not None:
        y_train, y_test = target_scaler.transform(y_train), target_scaler.transform(y_test)

    torch.manual_seed(config.seed)
    arch = get_architecture(config.architecture)
    model = arch.build(dataset.input_shape, dataset.output_size, config.architecture_params)
    optimizer = make_optimizer(
        config.optimizer.name, model.parameters(), **config.optimizer.options()
    )
    scheduler = make_scheduler(config.lr_schedule, optimizer, epochs=config.epochs)
    all_callbacks = [DivergenceGuard(), *callbacks]  # first: stops before others record
    if config.early_stopping_patience:
        all_callbacks.append(EarlyStopping(patience=config.early_stopping_patience))

    trainer = Trainer(
        model,
        optimizer,
        make_loss(loss_name, dataset.task),
        task=dataset.task,
        callbacks=all_callbacks,
        device=config.device,
        seed=config.seed,
        grad_clip_norm=config.grad_clip_norm,
        scheduler=scheduler,
        bf16=config.bf16,
        target_scaler=target_scaler,
    )
    history = trainer.fit(
        input_scaler.transform(train.X),
        y_train,
        input_scaler.transform(test.X),
        y_test,
        epochs=config.epochs,
        eval_every=config.eval_every,
        batch_size=config.batch_size,
        resume_from=resume_from,
    )
    _check_finite(history)
    card = ModelCard(
        architecture=arch.name,
        architecture_params=dataclasses.asdict(
            build_config(arch.config_cls, config.architecture_params, owner=arch.name)
        ),
        input_shape=list(dataset.input_shape),
        output_size=dataset.output_size,
        task=dataset.task,
        loss=loss_name,
        dataset=config.dataset,
        input_stats=input_scaler.to_dict(),
        target_stats=target_scaler.to_dict() if target_scaler else None,
        classes=dataset.classes,
        feature_names=dataset.feature_names,
    )
    model.to("cpu").eval()
    return TrainingResult(model, card, history, stopped_early=trainer.should_stop)
