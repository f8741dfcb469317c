"""Trained models: list, versions, aliases, predictions and weight downloads.

A version reference (`version` of predict and of a model's detail, `{version}` of the weights
download) is a version number or an alias. Without one, predict uses the alias `production`
when the model has it, else the latest version.
"""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any, BinaryIO, Literal, get_args

import anyio.to_thread
from fastapi import APIRouter, Body, HTTPException, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import Field
from pydantic_core import to_json
from starlette.datastructures import State

from app.api import exports, inference
from app.api.batcher import QueueFull
from app.api.deps import CacheDep, ServicesDep, StoreDep
from app.api.schemas import (
    VERSION_MAX,
    AliasIn,
    AliasOut,
    ModelDetail,
    ModelOut,
    PredictRequest,
    PredictResponse,
    VersionOut,
    error_responses,
)
from app.api.stored_weights import open_verified_weights
from app.api.versions import VersionCache
from app.core import deletion
from app.core.errors import Invalid, NotFound
from app.core.names import ALIAS_PATTERN, SLUG_PATTERN, is_alias, is_slug, shown
from models.predictor import Abandoned

log = logging.getLogger(__name__)
CLIENT_CLOSED = 499  # nginx's code for a request whose client went away

router = APIRouter(prefix="/models", tags=["models"])

DOWNLOAD_CHUNK_BYTES = 256 * 1024
# A version reference: a number, or an alias (a slug that is not only digits). Validation
# accepts any string (the str branch); `version_ref` decides, with a message naming the value.
VersionRef = (
    Annotated[int, Field(ge=1, le=VERSION_MAX)]
    | Annotated[str, Field(json_schema_extra={"pattern": ALIAS_PATTERN})]
)
VERSION_REF = "a version number, or an alias of the model (a slug that is not only digits)"
Version = Annotated[VersionRef, Path(description=VERSION_REF)]
Alias = Annotated[
    str,
    Path(
        description="an alias: a slug that is not only digits (a number is a version)",
        json_schema_extra={"pattern": ALIAS_PATTERN},
    ),
]
Name = Annotated[
    str,
    Path(description="a model name (a slug)", json_schema_extra={"pattern": SLUG_PATTERN}),
]
NOT_FOUND = error_responses(
    404, 422, 503, e404="no such model, version or alias", e422="not a version number or alias"
)
UNAVAILABLE = (
    "the stored weights are missing, corrupt or not safetensors (or the job store is down)"
)


def check_name(name: str) -> str:
    """A path name that is not a slug names no model (and never reaches the file system)."""
    if not is_slug(name):
        raise NotFound(f"model {shown(name)} does not exist (model names are slugs)")
    return name


def version_ref(value: int | str | None) -> int | str | None:
    """A version number (1 to VERSION_MAX) or an alias, from a path or query value; else 422."""
    if value is None or isinstance(value, int) and 1 <= value <= VERSION_MAX:
        return value
    text = str(value)
    if text.isascii() and text.isdigit():
        if len(text) <= 10 and 1 <= int(text) <= VERSION_MAX:
            return int(text)
        raise Invalid(f"version {shown(text)} is out of range: versions are 1 to {VERSION_MAX}")
    if is_alias(text):
        return text
    raise Invalid(f"version {shown(text)} is not a version number (1 to {VERSION_MAX}) or an alias")


def check_alias(alias: str) -> str:
    if not is_alias(alias):
        raise Invalid(
            f"alias {shown(alias)} is not a valid alias: use 1-64 characters of a-z, 0-9, '.', "
            "'_' and '-', starting with a letter or digit, no '..', and not only digits (a "
            "number is a version)"
        )
    return alias


@router.get("", response_model=list[ModelOut], responses=error_responses(503))
def list_models(store: StoreDep) -> list[ModelOut]:
    """Models with at least one version, by name."""
    return [ModelOut.model_validate(m, from_attributes=True) for m in store.list_models()]


@router.get("/{name}", response_model=ModelDetail, responses=NOT_FOUND)
def get_model(
    name: Name,
    store: StoreDep,
    version: Annotated[VersionRef | None, Query(description=VERSION_REF)] = None,
) -> ModelDetail:
    """A model, its aliases (`{alias: version}`) and its versions (metrics, input shape, task,
    classes). With `version` (a number or an alias), `versions` holds only that version."""
    ref = version_ref(version)
    model, versions = store.get_model(check_name(name))
    if ref is not None:
        versions = [store.resolve_version(name, ref)]
    return ModelDetail(
        name=model.name,
        latest_version=model.latest_version,
        task=model.task,
        architecture=model.architecture,
        created_at=model.created_at,
        aliases=store.aliases(name),
        versions=[VersionOut.model_validate(v, from_attributes=True) for v in versions],
    )


@router.put(
    "/{name}/aliases/{alias}",
    response_model=AliasOut,
    responses=error_responses(
        400,
        404,
        422,
        503,
        e404="no such model, or no such version of it",
        e422='the alias is not a slug, or is only digits; or the body is not {"version": N}',
    ),
)
def set_alias(
    name: Name, alias: Alias, body: Annotated[AliasIn, Body()], store: StoreDep
) -> AliasOut:
    """Point an alias at an existing version: made, or moved from the version it named.

    Aliases are slugs that are not only digits; `production` is what a prediction without
    `version` gets. The version must exist (404 naming the model's versions)."""
    store.set_alias(check_name(name), check_alias(alias), body.version)
    return AliasOut(model_name=name, alias=alias, version=body.version)


@router.delete(
    "/{name}/aliases/{alias}",
    status_code=204,
    response_class=Response,
    responses=error_responses(
        404, 422, 503, e404="no such model, or it has no such alias (the message lists them)"
    ),
)
def delete_alias(name: Name, alias: Alias, store: StoreDep) -> Response:
    """Remove an alias (its version stays). Without `production`, predictions without
    `version` get the latest version."""
    store.delete_alias(check_name(name), check_alias(alias))
    return Response(status_code=204)


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
        e404="no such model, version or alias",
        e422="`version` is not a version number or alias; or a sample has the wrong shape, NaN "
        "or infinity, or there are too many (TRAINSERVE_MAX_PREDICT_SAMPLES)",
        e503=UNAVAILABLE + "; or the model's queue is full (with Retry-After)",
    ),
)
async def predict(
    name: Name,
    body: PredictRequest,
    request: Request,
    version: Annotated[VersionRef | None, Query(description=VERSION_REF)] = None,
) -> Response:
    """Predict raw samples; training's normalisation is applied. `version` is a version number
    or an alias; without it, the version of the alias `production` when the model has one,
    else the latest version. The response names the version that answered.

    For classification each prediction is a class index, with `probabilities` and `classes`.
    Beyond what the schema states, each sample must have the model's input shape (422).
    Requests to one version are batched (TRAINSERVE_PREDICT_MAX_BATCH, ..._MAX_WAIT_MS); when
    its queue is full (TRAINSERVE_PREDICT_MAX_QUEUE) the answer is 503 with Retry-After.
    """
    return await answer_prediction(
        request.app.state, name, version, body.inputs, request.is_disconnected
    )


async def answer_prediction(
    state: State,
    name: str,
    version: int | str | None,
    inputs: list[Any],
    client_gone: Callable[[], Awaitable[bool]],
) -> Response:
    """The predict route's answer, also given by app/api/predict_lane.py's fast lane. It reads
    app.state itself: FastAPI's resolution of each dependency costs more than the dependency."""
    ref = version_ref(version)
    versions: VersionCache = state.versions
    row = versions.cached(name, ref) or await versions.resolve(check_name(name), ref)
    try:
        out = await inference.predict(
            state.services,
            state.model_cache,
            state.inference_executor,
            row,
            inputs,
            client_gone=client_gone,
        )
    except Abandoned:
        log.info("prediction for %s v%d abandoned: the client left", row.model_name, row.version)
        return Response(status_code=CLIENT_CLOSED)  # no one reads it
    except QueueFull as full:
        retry = {"Retry-After": str(full.retry_after)}
        raise HTTPException(503, full.detail, headers=retry) from None
    # Built by the handler: the outputs are already JSON-safe (no second validation pass),
    # and pydantic's serializer writes them about 8x faster than json.dumps.
    return Response(to_json(out), media_type="application/json")


WeightsFormat = Literal["safetensors", "onnx", "pt2"]
FORMAT_DOC = (
    "safetensors (default: the weights, with the model card in the metadata), onnx (opset 18, "
    "dynamic batch) or pt2 (torch.export); onnx and pt2 take raw inputs and give what predict "
    "gives (standardisation inside)"
)
MEDIA_TYPES = {"safetensors": "application/octet-stream", "onnx": "application/onnx"}
WEIGHTS_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the weights as safetensors, with the architecture, its parameters, the "
        "preprocessing statistics and how to rebuild and preprocess in the metadata (key "
        "'trainserve'); or with `format`, an ONNX model or a torch.export program",
        "content": {
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "application/onnx": {"schema": {"type": "string", "format": "binary"}},
        },
    },
    **error_responses(
        404,
        422,
        503,
        e404="no such model, version or alias",
        e422="not a version number or alias, or an unknown format (safetensors, onnx, pt2)",
        e503=UNAVAILABLE + "; or the export failed",
    ),
}


def check_format(value: str) -> str:
    if value not in get_args(WeightsFormat):
        raise Invalid(
            f"format {shown(value)} is unknown; choose one of {', '.join(get_args(WeightsFormat))}"
        )
    return value


FormatQuery = Annotated[
    str,
    Query(
        alias="format",
        description=FORMAT_DOC,
        json_schema_extra={"enum": list(get_args(WeightsFormat))},
    ),
]


@router.get(
    "/{name}/versions/{version}/weights",
    response_class=StreamingResponse,
    responses=WEIGHTS_RESPONSES,
)
def download_weights(
    name: Name, version: Version, services: ServicesDep, fmt: FormatQuery = "safetensors"
) -> StreamingResponse:
    """Download one version (`{version}`: a number or an alias) as safetensors, ONNX or pt2.

    ONNX and pt2 exports are made on the first request from the stored weights (checked
    against the eager model within 1e-5) and kept next to them."""
    fmt = check_format(fmt)
    row = services.store.resolve_version(check_name(name), version_ref(version))
    return _download(services, row, fmt)


@router.get("/{name}/weights", response_class=StreamingResponse, responses=WEIGHTS_RESPONSES)
def download_default_weights(
    name: Name,
    services: ServicesDep,
    version: Annotated[VersionRef | None, Query(description=VERSION_REF)] = None,
    fmt: FormatQuery = "safetensors",
) -> StreamingResponse:
    """As `/versions/{version}/weights`; without `version`, the version predict uses (the
    alias `production` when the model has it, else the latest)."""
    fmt = check_format(fmt)
    row = services.store.resolve_version(check_name(name), version_ref(version))
    return _download(services, row, fmt)


def _download(services, row, fmt: str) -> StreamingResponse:
    if fmt == "safetensors":
        handle = open_verified_weights(services, row)
        etag = row.sha256
    else:
        handle, etag = exports.open_export(services, row, fmt), None
    size = handle.seek(0, io.SEEK_END)
    handle.seek(0)
    headers = {
        "Content-Disposition": f'attachment; filename="{row.model_name}-v{row.version}.{fmt}"',
        "Content-Length": str(size),
    }
    if etag:
        headers["ETag"] = f'"{etag}"'
    return StreamingResponse(
        _chunks(handle),
        media_type=MEDIA_TYPES.get(fmt, "application/octet-stream"),
        headers=headers,
    )


@router.delete(
    "/{name}/versions/{version}",
    status_code=204,
    response_class=Response,
    responses=error_responses(
        404,
        409,
        422,
        503,
        e404="no such model or version",
        e409="an alias names the version (delete with ?force=true to remove the aliases too)",
        e422="not a version number",
    ),
)
def delete_version(
    name: Name,
    version: Annotated[int, Path(ge=1, le=VERSION_MAX, description="a version number")],
    services: ServicesDep,
    cache: CacheDep,
    force: Annotated[
        bool, Query(description="also remove the aliases that name this version")
    ] = False,
) -> Response:
    """Delete one version: its row, weights and exports. Refused (409) while an alias names it,
    unless `force=true`. Its number is never given to another version."""
    deletion.delete_version(services, check_name(name), version, force)
    cache.discard(name, [version])
    return Response(status_code=204)


@router.delete(
    "/{name}",
    status_code=204,
    response_class=Response,
    responses=error_responses(404, 503, e404="no such model"),
)
def delete_model(name: Name, services: ServicesDep, cache: CacheDep) -> Response:
    """Delete a model: every version (rows, weights, exports) and alias. A later job may
    publish under the name again; its versions continue the numbering."""
    cache.discard(name, deletion.delete_model(services, check_name(name)))
    return Response(status_code=204)


async def _chunks(handle: BinaryIO) -> AsyncIterator[bytes]:
    """The file from its start, a chunk at a time, read off the event loop; then closed (also
    when the client goes away). Memory per download: about one chunk, whatever the file size."""
    try:
        while chunk := await anyio.to_thread.run_sync(handle.read, DOWNLOAD_CHUNK_BYTES):
            yield chunk
    finally:
        handle.close()
