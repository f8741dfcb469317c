"""What can be trained: architectures and datasets (registry and uploaded)."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import ServicesDep
from app.api.schemas import ArchitectureOut, DatasetOut, error_responses
from app.api.validation import all_datasets
from models.catalogue import list_architectures

router = APIRouter(tags=["catalogue"])


@router.get("/architectures", response_model=list[ArchitectureOut])
def architectures() -> list[ArchitectureOut]:
    """Every architecture, its task and its parameters with their defaults and bounds."""
    return [ArchitectureOut(**arch.describe()) for arch in list_architectures()]


@router.get("/datasets", response_model=list[DatasetOut], responses=error_responses(503))
def datasets(services: ServicesDep) -> list[DatasetOut]:
    """Built-in datasets (unavailable ones with `available: false` and the reason) and uploads."""
    return all_datasets(services)
