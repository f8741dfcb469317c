"""Datasets: the in-memory `Dataset` and a registry of named loaders.

    @register_dataset("boston_housing", task="regression", description=..., source=...,
                      config_cls=NoParams, shape=lambda cfg: DatasetShape(506, (13,), None))
    def _boston(config, data_dir, allow_download) -> Dataset: ...

`DatasetSpec.load(params, data_dir=..., allow_download=...)` validates `params` against the
loader's config dataclass (see models/params.py) and returns a `Dataset`; `info()` answers the
catalogue without loading the data. The built-in datasets are registered in
models/builtin_datasets.py; models/catalogue.py imports them and looks them up by name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch

from models.choices import TASKS
from models.errors import DatasetUnavailableError
from models.params import build_config, describe_params, param_bounds
from models.registry import Registry


@dataclass
class Dataset:
    """Tensors of one dataset. X: float32 (N, *input_shape).

    y: float32 (N, n_targets) for regression (a 1-D y becomes (N, 1)); int64 (N,) of class
    indices for classification, with `classes` naming classes 0..K-1 ("0".."K-1" if omitted).
    """

    X: torch.Tensor
    y: torch.Tensor
    task: str
    classes: list[str] | None = None
    feature_names: list[str] | None = None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if self.X.dim() < 2 or len(self.X) != len(self.y):
            raise ValueError(
                f"X must be (N, *input_shape) with one row per y; got X {tuple(self.X.shape)}"
                f" and y {tuple(self.y.shape)}"
            )
        self.X = self.X.float()
        if self.task == "regression":
            self.y = (self.y.unsqueeze(1) if self.y.dim() == 1 else self.y).float()
            if self.y.dim() != 2:
                raise ValueError(f"regression y must be (N, n_targets), got {tuple(self.y.shape)}")
            return
        if self.y.dim() != 1 or self.y.is_floating_point() or self.y.is_complex():
            raise ValueError(f"classification y must be integer (N,), got {self.y.dtype}")
        self.y = self.y.long()
        if self.classes is None:
            self.classes = [str(i) for i in range(int(self.y.max()) + 1 if len(self.y) else 0)]
        if len(self.y) and (int(self.y.min()) < 0 or int(self.y.max()) >= len(self.classes)):
            raise ValueError(f"class indices must lie in 0..{len(self.classes) - 1}")

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.X.shape[1:])

    @property
    def n_classes(self) -> int | None:
        return len(self.classes) if self.task == "classification" else None

    @property
    def output_size(self) -> int:
        """Number of regression targets, or of classes."""
        return len(self.classes) if self.task == "classification" else self.y.shape[1]

    def __len__(self) -> int:
        return len(self.X)

    def subset(self, indices: torch.Tensor | Sequence[int]) -> Dataset:
        """The samples at `indices`, with the same task, classes and feature names."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        return Dataset(self.X[idx], self.y[idx], self.task, self.classes, self.feature_names)


class DatasetShape(NamedTuple):
    """Static metadata of a dataset for a given config, known without loading it."""

    n_samples: int
    input_shape: tuple[int, ...]
    n_classes: int | None


@dataclass(frozen=True)
class DatasetInfo:
    """A catalogue entry; `reason` says why a dataset is unavailable (None when available)."""

    name: str
    task: str
    n_samples: int
    input_shape: tuple[int, ...]
    n_classes: int | None
    source: str
    available: bool
    reason: str | None = None
    description: str = ""
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["input_shape"] = list(self.input_shape)
        return out


Loader = Callable[[Any, Path | None, bool], Dataset]
Availability = Callable[[Path | None, bool], str | None]


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset: its loader, parameters and static metadata."""

    name: str
    task: str
    description: str
    source: str
    config_cls: type
    loader: Loader
    shape: Callable[[Any], DatasetShape]
    availability: Availability | None = None

    def default_params(self) -> dict[str, Any]:
        return describe_params(self.config_cls)

    def param_bounds(self) -> dict[str, dict[str, Any]]:
        return param_bounds(self.config_cls)

    def config(self, params: Mapping[str, Any] | None = None) -> Any:
        """Validated config; CatalogueError names a wrong parameter."""
        return build_config(self.config_cls, params, owner=f"dataset '{self.name}'")

    def unavailable_reason(self, data_dir: Path | None, allow_download: bool) -> str | None:
        """None when the data can be loaded, else why not."""
        if self.availability is None:
            return None
        return self.availability(_as_path(data_dir), allow_download)

    def info(
        self,
        data_dir: Path | str | None = None,
        allow_download: bool = False,
        *,
        params: Mapping[str, Any] | None = None,
    ) -> DatasetInfo:
        """Catalogue entry for `params` (defaults if None), without loading the data."""
        config = self.config(params)
        n_samples, input_shape, n_classes = self.shape(config)
        reason = self.unavailable_reason(_as_path(data_dir), allow_download)
        return DatasetInfo(
            name=self.name,
            task=self.task,
            n_samples=n_samples,
            input_shape=tuple(input_shape),
            n_classes=n_classes,
            source=self.source,
            available=reason is None,
            reason=reason,
            description=self.description,
            params=self.default_params() if params is None else dataclasses.asdict(config),
        )

    def load(
        self,
        params: Mapping[str, Any] | None = None,
        *,
        data_dir: Path | str | None = None,
        allow_download: bool = False,
    ) -> Dataset:
        """Validate `params` and load; DatasetUnavailableError if the files are absent."""
        config = self.config(params)
        data_dir = _as_path(data_dir)
        reason = self.unavailable_reason(data_dir, allow_download)
        if reason is not None:
            raise DatasetUnavailableError(reason)
        return self.loader(config, data_dir, allow_download)


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def register_dataset(
    name: str,
    *,
    task: str,
    description: str,
    source: str,
    config_cls: type,
    shape: Callable[[Any], DatasetShape],
    availability: Availability | None = None,
) -> Callable[[Loader], Loader]:
    """Register `loader(config, data_dir, allow_download) -> Dataset` under `name`.

    `shape(config)` gives the static metadata for the catalogue; `availability(data_dir,
    allow_download)` returns None when the data can be loaded (or downloaded), else why not.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")

    def decorator(loader: Loader) -> Loader:
        spec = DatasetSpec(name, task, description, source, config_cls, loader, shape, availability)
        DATASETS.add(name, spec)
        return loader

    return decorator


def _as_path(data_dir: Path | str | None) -> Path | None:
    return None if data_dir is None else Path(data_dir)
