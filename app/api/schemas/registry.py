"""The model registry: models, versions, aliases, and predictions."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from app.api.schemas.common import UtcTime
from models.choices import Task
from models.request import MAX_NESTING, RequestModel, check_nesting

# A real answer of the service, as the job examples (schemas/jobs.py).
VERSION_EXAMPLE = {
    "version": 1,
    "job_id": "42cb06801dfc4fd4971c485e752ca37e",
    "metrics": {
        "train_loss": 0.0917,
        "val_loss": 0.1428,
        "val_rmse": 3.414,
        "val_mae": 2.398,
        "val_r2": 0.8567,
    },
    "created_at": "2026-12-01T10:00:21.093114Z",
    "input_shape": [13],
    "task": "regression",
    "architecture": "house_prices_mlp",
    "classes": None,
    "sha256": "5d0c6b4a1f8e2f7c9b3a6e1d4c7f0a2b8e5d3c1f9a7b6e4d2c0f8a1b3e5d7c9f",
    "size_bytes": 3412,
    "corrupt": False,
}

MODEL_EXAMPLE = {
    "name": "house-prices",
    "latest_version": 2,
    "task": "regression",
    "architecture": "house_prices_mlp",
    "created_at": "2026-12-01T10:00:21.093114Z",
}


class ModelOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [MODEL_EXAMPLE]})

    name: str
    latest_version: int
    task: Task
    architecture: str
    created_at: UtcTime


class VersionOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [VERSION_EXAMPLE]})

    version: int
    job_id: str
    metrics: dict[str, Any]
    created_at: UtcTime
    input_shape: list[int]
    task: Task
    architecture: str
    classes: list[str] | None = None
    sha256: str
    size_bytes: int
    corrupt: bool = False


class ModelDetail(ModelOut):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    **MODEL_EXAMPLE,
                    "aliases": {"production": 1, "staging": 2},
                    "versions": [VERSION_EXAMPLE, {**VERSION_EXAMPLE, "version": 2}],
                }
            ]
        }
    )

    aliases: dict[str, int] = Field(
        default_factory=dict,
        description="each alias of the model and the version it names; `production`, when "
        "set, is what a prediction without `version` gets",
    )
    versions: list[VersionOut]


VERSION_MAX = 2**31 - 1  # version numbers are 32-bit integers in the store


class AliasIn(RequestModel):
    """The version an alias is to name (it must exist)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"version": 2}]})

    version: int = Field(ge=1, le=VERSION_MAX, description="an existing version of the model")


class AliasOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"model_name": "house-prices", "alias": "production", "version": 2}]
        }
    )

    model_name: str
    alias: str
    version: int


class PredictRequest(RequestModel):
    """Raw samples, each a (nested) list of numbers of the model's input shape."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "inputs": [
                        [0.00632, 18, 2.31, 0, 0.538, 6.575, 65.2, 4.09, 1, 296, 15.3, 396.9, 4.98]
                    ]
                }
            ]
        }
    )

    inputs: Annotated[list[Any], AfterValidator(check_nesting)] = Field(
        min_length=1,
        description=f"samples; at most TRAINSERVE_MAX_PREDICT_SAMPLES, nested at most "
        f"{MAX_NESTING} levels deep",
    )


class PredictResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"model_name": "house-prices", "version": 1, "predictions": [24.91]},
                {
                    "model_name": "digits",
                    "version": 3,
                    "predictions": [7],
                    "probabilities": [
                        [0.0, 0.001, 0.002, 0.004, 0.0, 0.001, 0.0, 0.987, 0.001, 0.004]
                    ],
                    "classes": ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"],
                },
            ]
        }
    )

    model_name: str
    version: int
    predictions: list[Any] = Field(description="values (regression) or class indices")
    probabilities: list[list[float | None]] | None = Field(None, description="classification only")
    classes: list[str] | None = Field(None, description="names of classes 0..K-1")
