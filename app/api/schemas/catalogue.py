"""What can be trained: architectures and datasets."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.api.schemas.common import UtcTime
from models.choices import Task


class ArchitectureOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "house_prices_mlp",
                    "task": "regression",
                    "tasks": ["regression"],
                    "description": "The tutorial's house-price model: Linear -> sigmoid -> Linear.",
                    "input_kind": "features",
                    "params": {"hidden_size": 13},
                    "bounds": {"hidden_size": {"min": 1, "max": 1024}},
                }
            ]
        }
    )

    name: str
    task: Literal["regression", "classification", "both"]
    tasks: list[Task]
    description: str
    input_kind: str
    params: dict[str, Any]
    bounds: dict[str, dict[str, Any]]


class DatasetOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "boston_housing",
                    "task": "regression",
                    "n_samples": 506,
                    "input_shape": [13],
                    "n_classes": None,
                    "classes": None,
                    "source": "StatLib / UCI (Harrison & Rubinfeld, 1978); packaged with "
                    "trainserve",
                    "available": True,
                    "reason": None,
                    "description": "Boston house prices: 13 features, target MEDV (median value in "
                    "$1000s)",
                    "params": {},
                    "created_at": None,
                }
            ]
        }
    )

    name: str
    task: Task
    n_samples: int
    input_shape: list[int]
    n_classes: int | None = None
    classes: list[str] | None = None
    source: str
    available: bool = True
    reason: str | None = None
    description: str = ""
    params: dict[str, Any] = Field(default_factory=dict)
    created_at: UtcTime | None = None
