"""Request and response schemas (pydantic v2), kept separate; examples work verbatim."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from app.core.db import JobStatus
from app.core.names import ALIAS_PATTERN, SLUG_PATTERN, check_slug, is_alias
from models.choices import Task
from models.request import (
    MAX_NESTING,
    TRAINING_EXAMPLE,
    RequestModel,
    TrainingRequest,
    check_nesting,
)


def _utc(moment: datetime) -> datetime:
    """SQLite returns naive datetimes: they are UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


UtcTime = Annotated[datetime, AfterValidator(_utc)]
ModelName = Annotated[
    str,
    Field(
        description="a slug: 1-64 of a-z 0-9 . _ -, starting with a letter or digit, no '..'",
        json_schema_extra={"pattern": SLUG_PATTERN},
    ),
    AfterValidator(lambda v: check_slug(v, "model_name")),
]

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


class ValidationItem(BaseModel):
    """One failed check of a request: where (`loc`), what (`msg`, naming the field), its kind."""

    loc: list[str]
    msg: str
    type: str | None = None


class ErrorOut(BaseModel):
    """Every error: a message that says what was wrong and how to fix it (a list of the failed
    checks when the request does not match its schema)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"detail": "architecture 'resnet99' is unknown; known: house_prices_mlp, mlp"},
                {
                    "detail": [
                        {
                            "loc": ["body", "epochs"],
                            "msg": "epochs: Input should be greater than or equal to 1",
                            "type": "greater_than_equal",
                        }
                    ]
                },
            ]
        }
    )

    detail: str | list[ValidationItem]


ERROR_DESCRIPTIONS = {
    400: "the content cannot be read (malformed JSON, a file that is not a dataset)",
    401: "no or wrong API key: send 'Authorization: Bearer <key>'",
    404: "no such resource",
    409: "the request conflicts with the resource's state",
    413: "the body is over TRAINSERVE_MAX_BODY_BYTES (uploads: TRAINSERVE_MAX_UPLOAD_BYTES)",
    422: "the request fails validation; the message names the field and the limit",
    429: "too many at once: try again after the seconds in Retry-After",
    503: "a dependency (job store, broker, stored weights) is unavailable",
    507: "no space is left on the artifact store",
}


def error_responses(*codes: int, **descriptions: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for error codes, each `{"detail": ...}` as JSON; `descriptions`
    (keyed `e404=...`) replace the generic description of a code."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        description = descriptions.get(f"e{code}", ERROR_DESCRIPTIONS[code])
        out[code] = {"model": ErrorOut, "description": description}
    return out


class WorkerOut(BaseModel):
    """A live worker and what it trains on."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "celery@gpu-host-1",
                    "device": "cuda",
                    "device_count": 2,
                    "device_names": ["NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3"],
                    "started_at": "2026-12-01T10:00:00Z",
                    "heartbeat_at": "2026-12-01T10:05:00Z",
                }
            ]
        }
    )

    name: str
    device: Literal["cpu", "cuda"]
    device_count: int
    device_names: list[str]
    started_at: UtcTime
    heartbeat_at: UtcTime


class Health(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "ok"}]})

    status: str


class Readiness(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"status": "ready", "store": "ok", "broker": "ok"}]}
    )

    status: str
    store: str
    broker: str
    artifacts: str = Field("ok", description="the artifact store (weights, datasets, checkpoints)")
