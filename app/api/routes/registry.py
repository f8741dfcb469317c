"""Trained models: list, versions, predictions and weight downloads."""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator
from typing import Annotated, BinaryIO

import anyio.to_thread
from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from app.api import inference
from app.api.deps import CacheDep, ServicesDep, StoreDep
from app.api.schemas import (
    ModelDetail,
    ModelOut,
    PredictRequest,
    PredictResponse,
    VersionOut,
    error_responses,
)
from app.core.errors import NotFound
from app.core.names import SLUG_PATTERN, is_slug, shown
from models.predictor import Abandoned

log = logging.getLogger(__name__)
CLIENT_CLOSED = 499  # nginx's code for a request whose client went away

router = APIRouter(prefix="/models", tags=["models"])

VERSION_MAX = 2**31 - 1
DOWNLOAD_CHUNK_BYTES = 256 * 1024
Version = Annotated[int, Path(ge=1, le=VERSION_MAX, description="a version number")]
Name = Annotated[
    str,
    Path(description="a model name (a slug)", json_schema_extra={"pattern": SLUG_PATTERN}),
]
NOT_FOUND = error_responses(404, 503, e404="no such model or version")
UNAVAILABLE = (
    "the stored weights are missing, corrupt or not safetensors (or the job store is down)"
)


def check_name(name: str) -> str:
    """A path name that is not a slug names no model (and never reaches the file system)."""
    if not is_slug(name):
        raise NotFound(f"model {shown(name)} does not exist (model names are slugs)")
    return name


@router.get("", response_model=list[ModelOut], responses=error_responses(503))
def list_models(store: StoreDep) -> list[ModelOut]:
    """Models with at least one version, by name."""
    return [ModelOut.model_validate(m, from_attributes=True) for m in store.list_models()]


@router.get("/{name}", response_model=ModelDetail, responses=NOT_FOUND)
def get_model(name: Name, store: StoreDep) -> ModelDetail:
    """A model and its versions (metrics, input shape, task, classes)."""
    model, versions = store.get_model(check_name(name))
    return ModelDetail(
        name=model.name,
        latest_version=model.latest_version,
        task=model.task,
        architecture=model.architecture,
        created_at=model.created_at,
        versions=[VersionOut.model_validate(v, from_attributes=True) for v in versions],
    )


@router.post(
    "/{name}/predict",
    response_model=PredictResponse,
    response_model_exclude_none=True,
    responses=error_responses(
        400,
        404,
        413,
        422,
        503,
        e404="no such model or version",
        e422="a sample has the wrong shape, NaN or infinity, or there are too many "
        "(TRAINSERVE_MAX_PREDICT_SAMPLES)",
        e503=UNAVAILABLE,
    ),
)
async def predict(
    name: Name,
    body: PredictRequest,
    request: Request,
    services: ServicesDep,
    cache: CacheDep,
    version: Annotated[int | None, Query(ge=1, le=VERSION_MAX)] = None,
) -> PredictResponse:
    """Predict raw samples; training's normalisation is applied. Default: the latest version.

    For classification each prediction is a class index, with `probabilities` and `classes`.
    Beyond what the schema states, each sample must have the model's input shape (422).
    """
    row = await run_in_threadpool(services.store.get_version, check_name(name), version)
    limiter = request.app.state.inference_limiter
    try:
        out = await inference.predict(
            services, cache, limiter, row, body.inputs, client_gone=request.is_disconnected
        )
    except Abandoned:
        log.info("prediction for %s v%d abandoned: the client left", row.model_name, row.version)
        return Response(status_code=CLIENT_CLOSED)  # no one reads it
    return PredictResponse(**out)


@router.get(
    "/{name}/versions/{version}/weights",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "the weights as safetensors, with the architecture, its parameters "
            "and the preprocessing statistics in the metadata (key 'trainserve')",
            "content": {"application/octet-stream": {"schema": {"type": "string"}}},
        },
        **error_responses(404, 422, 503, e404="no such model or version", e503=UNAVAILABLE),
    },
)
def download_weights(name: Name, version: Version, services: ServicesDep) -> StreamingResponse:
    """Download one version's `.safetensors` file."""
    row = services.store.get_version(check_name(name), version)
    handle = inference.open_verified_weights(services, row)
    size = handle.seek(0, io.SEEK_END)
    handle.seek(0)
    return StreamingResponse(
        _chunks(handle),
        media_type="application/octet-stream",
        headers={
            "Content-Disposition": f'attachment; filename="{name}-v{version}.safetensors"',
            "Content-Length": str(size),
            "ETag": f'"{row.sha256}"',
        },
    )


async def _chunks(handle: BinaryIO) -> AsyncIterator[bytes]:
    """The file from its start, a chunk at a time, read off the event loop; then closed (also
    when the client goes away). Memory per download: about one chunk, whatever the file size."""
    try:
        while chunk := await anyio.to_thread.run_sync(handle.read, DOWNLOAD_CHUNK_BYTES):
            yield chunk
    finally:
        handle.close()
