"""Training jobs: the request, and what the API answers about a job."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from app.api.schemas.common import ModelName, UtcTime
from app.core.db import JobStatus
from app.core.names import ALIAS_PATTERN, is_alias
from models.request import TRAINING_EXAMPLE, RequestModel, TrainingRequest

# Its own model name, so that trying the example never replaces a model someone serves.
JOB_EXAMPLE = {
    "model_name": "house-prices-example",
    **TRAINING_EXAMPLE,
    "promote": {"alias": "production", "if_better": "val_rmse"},
}


def _alias(value: str) -> str:
    if not is_alias(value):
        raise ValueError(
            "an alias is 1-64 characters of a-z, 0-9, '.', '_' and '-', starting with a letter "
            "or digit, no '..', and not only digits"
        )
    return value


class PromoteRule(RequestModel):
    """On success, point `alias` at the new version: when the model has no such alias yet,
    else only when `if_better` (a metric) is better on the new version than on the alias's
    (lower is better for rmse, mae and losses, higher for accuracy and r2); without
    `if_better`, always."""

    alias: Annotated[
        str, Field(json_schema_extra={"pattern": ALIAS_PATTERN}), AfterValidator(_alias)
    ] = Field(description="the alias to set or move, such as production")
    if_better: str | None = Field(
        None,
        max_length=64,
        description="regression: val_rmse, val_mae, val_r2, val_loss, train_loss; "
        "classification: val_accuracy, val_loss, train_loss",
    )


# Response examples: real answers of the service (a house_prices_mlp job on boston_housing),
# so /docs shows what a client gets, never "string" placeholders.
JOB_OUT_EXAMPLE = {
    "id": "42cb06801dfc4fd4971c485e752ca37e",
    "status": "running",
    "model_name": "house-prices",
    "architecture": "house_prices_mlp",
    "dataset": "boston_housing",
    "request": {
        **TRAINING_EXAMPLE,
        "lr_schedule": None,
        "grad_clip_norm": None,
        "early_stopping_patience": None,
        "bf16": False,
        "model_name": "house-prices",
    },
    "created_at": "2026-12-01T10:00:00.457017Z",
    "started_at": "2026-12-01T10:00:00.512440Z",
    "finished_at": None,
    "progress": {"epoch": 40, "epochs": 100},
    "metrics": {
        "train_loss": 0.1342,
        "val_loss": 0.1875,
        "val_rmse": 3.912,
        "val_mae": 2.671,
        "val_r2": 0.8114,
    },
    "error": None,
    "model_version": None,
}
HISTORY_EXAMPLE = [
    {
        "epoch": 10,
        "train_loss": 0.3581,
        "val_loss": 0.3922,
        "val_rmse": 5.658,
        "val_mae": 3.871,
        "val_r2": 0.6064,
    },
    {
        "epoch": 20,
        "train_loss": 0.1902,
        "val_loss": 0.2413,
        "val_rmse": 4.438,
        "val_mae": 3.012,
        "val_r2": 0.7578,
    },
]


class JobRequest(TrainingRequest):
    """A training job: a TrainingRequest (models/request.py), the model name to publish under
    and an optional promotion rule; only model_name, architecture and dataset are required."""

    model_config = ConfigDict(json_schema_extra={"examples": [JOB_EXAMPLE]})

    model_name: ModelName
    promote: PromoteRule | None = None


class Promotion(BaseModel):
    """What the job's promotion rule decided, and why."""

    alias: str
    version: int = Field(description="the version this job published")
    previous: int | None = Field(description="the version the alias named before (None: unset)")
    metric: str | None
    moved: bool = Field(description="whether the alias now names this job's version")
    reason: str


class Progress(BaseModel):
    epoch: int
    epochs: int


class JobOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [JOB_OUT_EXAMPLE]})

    id: str
    status: JobStatus
    model_name: str
    architecture: str
    dataset: str
    request: dict[str, Any]
    created_at: UtcTime
    started_at: UtcTime | None
    finished_at: UtcTime | None
    progress: Progress
    metrics: dict[str, Any] | None
    error: str | None
    model_version: int | None
    promotion: Promotion | None = None

    @classmethod
    def from_row(cls, job: Any) -> JobOut:
        return cls(
            progress=Progress(epoch=job.epoch, epochs=job.epochs),
            **{name: getattr(job, name) for name in cls.model_fields if name != "progress"},
        )


class JobList(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"items": [JOB_OUT_EXAMPLE], "total": 1}]}
    )

    items: list[JobOut]
    total: int


class History(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"history": HISTORY_EXAMPLE}]})

    history: list[dict[str, Any]] = Field(examples=[HISTORY_EXAMPLE])
