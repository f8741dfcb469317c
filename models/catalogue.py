"""The catalogue: every architecture and dataset, looked up by name.

Importing this module registers the entries (torchvision's models/__init__ style: one module
imports the entry modules, so no entry module imports another at its bottom).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from models import builtin_architectures, builtin_datasets, torchvision_archs  # noqa: F401
from models.architectures import ARCHITECTURES, Architecture
from models.datasets import DATASETS, Dataset, DatasetSpec


def get_architecture(name: str) -> Architecture:
    """The architecture `name`; CatalogueError listing the known names otherwise."""
    return ARCHITECTURES.get(name)


def list_architectures() -> list[Architecture]:
    return ARCHITECTURES.entries()


def get_dataset(name: str) -> DatasetSpec:
    """The registered dataset `name`; CatalogueError listing the known names otherwise."""
    return DATASETS.get(name)


def list_datasets() -> list[DatasetSpec]:
    return DATASETS.entries()


def is_registered_dataset(name: str) -> bool:
    return name in DATASETS


def load_dataset(
    name: str,
    params: Mapping[str, Any] | None = None,
    *,
    data_dir: Path | str | None = None,
    allow_download: bool = False,
) -> Dataset:
    """Load the registered dataset `name` with `params` (see DatasetSpec.load)."""
    return get_dataset(name).load(params, data_dir=data_dir, allow_download=allow_download)
