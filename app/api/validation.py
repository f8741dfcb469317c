"""The catalogue as the API sees it: registry and uploaded datasets, and job validation.

`validate_job` checks a request against the catalogue before anything is committed, with the
same functions the worker uses (models.training.check_compatible and friends), so a job that
is accepted can be built.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import torch

from app.api.schemas import DatasetOut, JobRequest
from app.core import promotion
from app.core.db import UploadedDataset
from app.core.errors import Invalid
from app.core.names import is_slug, shown
from app.core.services import Services
from app.core.settings import Settings
from models.catalogue import (
    get_architecture,
    get_dataset,
    is_registered_dataset,
    list_architectures,
    list_datasets,
)
from models.errors import CatalogueError, DatasetUnavailableError
from models.memory import estimate_training_memory
from models.training import check_compatible


def uploaded_entry(row: UploadedDataset) -> DatasetOut:
    return DatasetOut(
        name=row.name,
        task=row.task,
        n_samples=row.n_samples,
        input_shape=list(row.input_shape),
        n_classes=row.n_classes,
        classes=row.classes,
        source="upload",
        description=f"uploaded dataset ({row.size_bytes} bytes as NPZ, sha256 {row.sha256[:12]})",
        created_at=row.created_at,
    )


def all_datasets(services: Services) -> list[DatasetOut]:
    """Registry datasets (unavailable ones with the reason), then uploaded ones."""
    settings = services.settings
    entries = [
        DatasetOut(**spec.info(settings.data_dir, settings.allow_downloads).to_dict())
        for spec in list_datasets()
    ]
    return entries + [uploaded_entry(row) for row in services.store.list_datasets()]


def _dataset_shape(
    services: Services, name: str, params: dict[str, Any]
) -> tuple[str, tuple[int, ...], int]:
    """(task, input_shape, output size) of a registry or uploaded dataset; 422s name the cause."""
    settings = services.settings
    if is_registered_dataset(name):
        info = get_dataset(name).info(settings.data_dir, settings.allow_downloads, params=params)
        if not info.available:
            raise DatasetUnavailableError(info.reason)
        return info.task, tuple(info.input_shape), info.n_classes or 1
    row = services.store.get_dataset(name) if is_slug(name) else None
    if row is None:
        known = [spec.name for spec in list_datasets()]
        known += [r.name for r in services.store.list_datasets()]
        raise CatalogueError(f"dataset {shown(name)} is unknown; known: {', '.join(known)}")
    if params:
        raise CatalogueError(f"uploaded dataset '{name}' takes no dataset_params")
    return row.task, tuple(row.input_shape), row.n_classes or 1


def check_limits(request: JobRequest, settings: Settings) -> None:
    limits = (
        ("epochs", request.epochs, settings.max_epochs, "TRAINSERVE_MAX_EPOCHS"),
        ("batch_size", request.batch_size, settings.max_batch_size, "TRAINSERVE_MAX_BATCH_SIZE"),
    )
    for field, value, limit, variable in limits:
        if value > limit:
            given = value if value < 10**12 else f"of {len(str(value))} digits"
            raise Invalid(f"{field} {given} is over the limit of {limit} ({variable})")


def validate_job(request: JobRequest, services: Services) -> dict[str, Any]:
    """The full request to store (defaults and the loss filled in), or a 422 naming the problem."""
    check_limits(request, services.settings)
    known = [arch.name for arch in list_architectures()]
    if request.architecture not in known:  # the name quoted with escapes (no RTL tricks)
        raise CatalogueError(
            f"architecture {shown(request.architecture)} is unknown; known: {', '.join(known)}"
        )
    task, input_shape, output_size = _dataset_shape(
        services, request.dataset, request.dataset_params
    )
    data = request.model_dump(mode="json")
    data["loss"] = check_compatible(request, task, input_shape)  # a JobRequest is one
    if request.promote is None:
        del data["promote"]  # stored requests keep their shape when there is no rule
    else:
        promotion.check_rule(data["promote"], task)
    check_device(request.device, services)
    with torch.device("meta"):  # the size guard of Architecture.build, without memory
        module = get_architecture(request.architecture).build(
            input_shape, output_size, request.architecture_params
        )
    check_memory(module, input_shape, request, services.settings)
    return data


def check_device(device: str, services: Services) -> None:
    """A job asking for `cuda` (or `cuda:N`) is refused unless a live worker has that many CUDA
    devices: it would fail on every worker this deployment has. `auto` and `cpu` run anywhere."""
    if not device.startswith("cuda"):
        return
    index = int(device.partition(":")[2] or 0)
    stale = timedelta(seconds=services.settings.worker_stale_seconds)
    workers = services.store.live_workers(stale)
    gpus = [w for w in workers if w.device == "cuda" and w.device_count > index]
    if gpus:
        return
    have = ", ".join(f"{w.name}: {w.device_count} {w.device}" for w in workers) or "none"
    raise Invalid(
        f"device '{device}' is not available: no live worker has "
        f"{'CUDA' if index == 0 else f'{index + 1} CUDA devices'} (live workers: {have}; see "
        "GET /v1/workers); use device 'auto' or 'cpu', or start a GPU worker"
    )


def check_memory(module, input_shape: tuple[int, ...], request: JobRequest, settings) -> None:
    """Refuse a job whose training step would not fit the workers' memory budget: weights are
    bounded by the catalogue, but activations grow with batch size and image size."""
    need = estimate_training_memory(module, input_shape, request.batch_size, request.optimizer.name)
    budget = settings.max_job_memory_bytes
    if need.total > budget:
        raise Invalid(
            f"this job needs about {_gib(need.total)} of memory per training step at batch_size "
            f"{request.batch_size} ({_gib(need.activations)} of activations, "
            f"{_gib(need.weights)} of weights, gradients and optimizer state), over the budget "
            f"of {_gib(budget)} (TRAINSERVE_MAX_JOB_MEMORY_BYTES); lower batch_size, or choose "
            "fewer channels or more pooling"
        )


def _gib(n_bytes: int) -> str:
    return f"{n_bytes / 1024**3:.1f} GiB" if n_bytes >= 1024**3 else f"{n_bytes / 1024**2:.0f} MiB"
