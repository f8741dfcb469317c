"""Dataset uploads: CSV (header row + target column) or NPZ (arrays X and y)."""

from __future__ import annotations

from typing import Annotated, Literal

import anyio.to_thread
from fastapi import APIRouter, File, Form, Path, Request, Response, UploadFile, status

from app.api.deps import ServicesDep
from app.api.schemas import DatasetOut, error_responses
from app.api.validation import uploaded_entry
from app.core import deletion
from app.core.datasets import save_upload
from app.core.errors import Conflict, Invalid, NotFound, TooLarge
from app.core.names import SLUG_PATTERN, check_slug, is_slug, shown
from app.core.services import Services
from models.catalogue import is_registered_dataset
from models.datasets import Dataset
from models.uploads import parse_csv, parse_npz

router = APIRouter(tags=["datasets"])


def _is_npz(filename: str, data: bytes) -> bool:
    lower = filename.lower()
    if lower.endswith(".npz"):
        return True
    if lower.endswith(".csv"):
        return False
    return data.startswith(b"PK")  # a zip archive


def _parse(
    filename: str, data: bytes, target: str | None, task: str | None, max_bytes: int
) -> Dataset:
    if _is_npz(filename, data):
        return parse_npz(data, task=task, max_bytes=max_bytes)
    if not target:
        raise Invalid("form field 'target' (the target column) is required for a CSV file")
    return parse_csv(data, target=target, task=task, max_bytes=max_bytes)


def _store(services: Services, name: str, file: UploadFile, target, task) -> DatasetOut:
    """Read, parse and keep one upload (in a worker thread, a bounded number at once)."""
    if is_registered_dataset(name):
        raise Conflict(f"dataset '{name}' is a built-in dataset; choose another name")
    if services.store.get_dataset(name) is not None:
        raise Conflict(f"dataset '{name}' already exists; choose another name")
    limit = services.settings.max_upload_bytes
    data = file.file.read(limit + 1)
    if len(data) > limit:
        raise TooLarge(f"the file is over the limit of {limit} bytes (TRAINSERVE_MAX_UPLOAD_BYTES)")
    dataset = _parse(file.filename or "", data, target, task, services.settings.max_dataset_bytes)
    del data
    return uploaded_entry(save_upload(services, name, dataset))


@router.post(
    "/datasets",
    status_code=status.HTTP_201_CREATED,
    response_model=DatasetOut,
    responses=error_responses(
        400,
        409,
        413,
        422,
        503,
        507,
        e400="the file cannot be read as a dataset (CSV: the line says where)",
        e409="a dataset of this name exists",
        e507="no space is left on the artifact store for the dataset",
        e413="the upload is over TRAINSERVE_MAX_UPLOAD_BYTES, or its values over "
        "TRAINSERVE_MAX_DATASET_BYTES once read",
    ),
)
async def upload_dataset(
    request: Request,
    services: ServicesDep,
    file: Annotated[UploadFile, File(description="CSV with a header row, or NPZ with X and y")],
    name: Annotated[
        str,
        Form(
            description="a slug naming the dataset",
            json_schema_extra={"pattern": SLUG_PATTERN},
        ),
    ],
    target: Annotated[
        str | None,
        Form(min_length=1, max_length=1000, description="the target column (required for CSV)"),
    ] = None,
    task: Annotated[Literal["regression", "classification"] | None, Form()] = None,
) -> DatasetOut:
    """Upload a dataset for training jobs; it is then listed by GET /v1/datasets.

    Beyond what the schema states: a CSV file needs `target` (an NPZ file does not), and the
    file must read as a dataset (400 naming the line and column, or 422 for a CSV target of
    numbers and words without `task`)."""
    try:
        check_slug(name, "dataset name")
    except ValueError as exc:
        raise Invalid(str(exc)) from None
    limiter = request.app.state.upload_limiter
    return await anyio.to_thread.run_sync(
        _store, services, name, file, target, task, limiter=limiter
    )


@router.delete(
    "/datasets/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(
        404,
        409,
        503,
        e404="no uploaded dataset of this name (built-in datasets cannot be deleted)",
        e409="a queued or running job uses the dataset",
    ),
)
def delete_dataset(
    name: Annotated[
        str,
        Path(description="an uploaded dataset's name", json_schema_extra={"pattern": SLUG_PATTERN}),
    ],
    services: ServicesDep,
) -> Response:
    """Delete an uploaded dataset and its file (kept while another upload has the same
    content). Refused (409) while a queued or running job uses it."""
    if is_registered_dataset(name):
        raise NotFound(f"dataset '{name}' is built in; only uploaded datasets can be deleted")
    if not is_slug(name):
        raise NotFound(f"uploaded dataset {shown(name)} does not exist (names are slugs)")
    deletion.delete_dataset(services, name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
