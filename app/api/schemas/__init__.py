"""Request and response schemas (pydantic v2), one module per resource; examples work verbatim.
Routes import them from here."""

from app.api.schemas.catalogue import ArchitectureOut, DatasetOut
from app.api.schemas.errors import ERROR_DESCRIPTIONS, ErrorOut, ValidationItem, error_responses
from app.api.schemas.health import Health, Readiness, WorkerOut
from app.api.schemas.jobs import History, JobList, JobOut, JobRequest, Progress, Promotion
from app.api.schemas.registry import (
    VERSION_MAX,
    AliasIn,
    AliasOut,
    ModelDetail,
    ModelOut,
    PredictRequest,
    PredictResponse,
    VersionOut,
)

__all__ = [
    "ERROR_DESCRIPTIONS",
    "VERSION_MAX",
    "AliasIn",
    "AliasOut",
    "ArchitectureOut",
    "DatasetOut",
    "ErrorOut",
    "Health",
    "History",
    "JobList",
    "JobOut",
    "JobRequest",
    "ModelDetail",
    "ModelOut",
    "PredictRequest",
    "PredictResponse",
    "Progress",
    "Promotion",
    "Readiness",
    "ValidationItem",
    "VersionOut",
    "WorkerOut",
    "error_responses",
]
