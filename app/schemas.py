"""Request and response schemas (pydantic v2), kept separate; examples work verbatim."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from app.names import SLUG_PATTERN, check_slug

Status = Literal["queued", "running", "succeeded", "failed", "cancelled"]
Task = Literal["regression", "classification"]
Loss = Literal["mse", "l1", "smooth_l1", "cross_entropy", "bce_with_logits"]
OptimizerName = Literal["sgd", "adam", "adamw", "rmsprop"]
SEED_MAX = 2**31 - 1


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


def _finite(value: Any, where: str = "") -> Any:
    """`value` (parsed JSON) when every number in it is finite: NaN and infinity would turn into
    null on the way to the job store, and no parameter takes them."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where or 'value'}: NaN and infinity are not allowed")
    if isinstance(value, dict):
        for key, item in value.items():
            _finite(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _finite(item, f"{where}[{index}]")
    return value


Params = Annotated[
    dict[str, Any],
    AfterValidator(_finite),
    Field(description="{name: value}; see `params` and `bounds` in the catalogue"),
]


class RequestModel(BaseModel):
    """Requests refuse unknown fields, NaN or infinite numbers, and values of another JSON type
    (strict: `true` or `"10"` or `10.0` is not an integer, `1` is not a string)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


class OptimizerIn(RequestModel):
    name: OptimizerName = "adam"
    lr: float = Field(0.001, gt=0, le=10)
    momentum: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0, le=1)


JOB_EXAMPLE = {
    "model_name": "house-prices",
    "architecture": "house_prices_mlp",
    "architecture_params": {"hidden_size": 13},
    "dataset": "boston_housing",
    "dataset_params": {},
    "test_fraction": 0.2,
    "loss": "mse",
    "optimizer": {"name": "sgd", "lr": 0.001, "momentum": 0.0, "weight_decay": 0.0},
    "epochs": 100,
    "batch_size": 32,
    "eval_every": 10,
    "seed": 0,
    "device": "auto",
}


class JobRequest(RequestModel):
    """A training job; only model_name, architecture and dataset are required."""

    model_config = ConfigDict(json_schema_extra={"examples": [JOB_EXAMPLE]})

    model_name: ModelName
    architecture: str = Field(max_length=64, description="see GET /v1/architectures")
    architecture_params: Params = Field(default_factory=dict)
    dataset: str = Field(max_length=64, description="see GET /v1/datasets")
    dataset_params: Params = Field(default_factory=dict)
    test_fraction: float = Field(0.2, gt=0, lt=1)
    loss: Loss | None = Field(None, description="default: mse (regression), cross_entropy")
    optimizer: OptimizerIn = Field(default_factory=OptimizerIn)
    epochs: int = Field(10, ge=1, description="at most TRAINSERVE_MAX_EPOCHS")
    batch_size: int = Field(32, ge=1, description="at most TRAINSERVE_MAX_BATCH_SIZE")
    eval_every: int = Field(1, ge=1)
    seed: int = Field(0, ge=0, le=SEED_MAX)
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda|cuda:[0-9]{1,3})$")
    lr_schedule: Literal["none", "step", "cosine"] | None = None
    grad_clip_norm: float | None = Field(None, gt=0)
    early_stopping_patience: int | None = Field(None, ge=1, le=100_000)


class Progress(BaseModel):
    epoch: int
    epochs: int


class JobOut(BaseModel):
    id: str
    status: Status
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

    @classmethod
    def from_row(cls, job: Any) -> JobOut:
        return cls(
            progress=Progress(epoch=job.epoch, epochs=job.epochs),
            **{name: getattr(job, name) for name in cls.model_fields if name != "progress"},
        )


class JobList(BaseModel):
    items: list[JobOut]
    total: int


class History(BaseModel):
    history: list[dict[str, Any]] = Field(
        examples=[[{"epoch": 10, "train_loss": 12.3, "val_loss": 14.1, "val_rmse": 3.75}]]
    )


class ArchitectureOut(BaseModel):
    name: str
    task: Literal["regression", "classification", "both"]
    tasks: list[Task]
    description: str
    input_kind: str
    params: dict[str, Any]
    bounds: dict[str, dict[str, Any]]


class DatasetOut(BaseModel):
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


class ModelOut(BaseModel):
    name: str
    latest_version: int
    task: Task
    architecture: str
    created_at: UtcTime


class VersionOut(BaseModel):
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
    versions: list[VersionOut]


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

    inputs: list[Any] = Field(description="samples; at most TRAINSERVE_MAX_PREDICT_SAMPLES")


class PredictResponse(BaseModel):
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
    503: "a dependency (job store, broker, stored weights) is unavailable",
}


def error_responses(*codes: int, **descriptions: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for error codes, each `{"detail": ...}` as JSON; `descriptions`
    (keyed `e404=...`) replace the generic description of a code."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        description = descriptions.get(f"e{code}", ERROR_DESCRIPTIONS[code])
        out[code] = {"model": ErrorOut, "description": description}
    return out


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    store: str
    broker: str
