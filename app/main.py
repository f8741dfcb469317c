"""The FastAPI application: routers, API keys, body limits and one place that maps errors to HTTP.

app = create_app()                      # settings from the environment
app = create_app(settings, services)    # tests and the command line
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.auth import load_or_create_api_keys
from app.deps import require_key
from app.errors import ServiceError
from app.inference import ModelCache
from app.reaper import Reaper
from app.routers import catalogue, datasets, health, jobs, models
from app.schemas import ErrorOut, error_responses
from app.services import Services, build_services
from app.settings import Settings, get_settings
from models.errors import CatalogueError, DataFormatError, DatasetUnavailableError
from models.predictor import InputError

log = logging.getLogger(__name__)
DatabaseError = (OperationalError, PoolTimeout)

DESCRIPTION = """Train PyTorch models and serve their predictions.

Every `/v1` route needs `Authorization: Bearer <key>` (TRAINSERVE_API_KEYS, or the key
generated into `<data dir>/api_key`). Errors are `{"detail": ...}`."""

UPLOAD_PATH = "/v1/datasets"
DETAIL_MAX = 4000  # characters of an error message; longer ones are cut (they echo input)
HANDLED = (
    ServiceError,
    CatalogueError,
    DataFormatError,
    DatasetUnavailableError,
    InputError,
    *DatabaseError,
    BrokerError,
    HTTPException,
    RequestValidationError,
)


def error_response(exc: Exception) -> JSONResponse:
    """The one translation of errors to HTTP: a status that names the cause, `{"detail": ...}`."""
    headers = None
    if isinstance(exc, ServiceError):
        code, detail = exc.status_code, exc.detail
    elif isinstance(exc, HTTPException):
        code, detail, headers = exc.status_code, exc.detail, exc.headers
    elif isinstance(exc, RequestValidationError):
        code, detail = 422, [_validation_item(e) for e in exc.errors()]
    elif isinstance(exc, DataFormatError):
        code, detail = 400, str(exc)
    elif isinstance(exc, CatalogueError | DatasetUnavailableError | InputError):
        code, detail = 422, str(exc)
    elif isinstance(exc, DatabaseError):
        log.error("job store unavailable: %s", exc)
        code, detail = 503, "job store unavailable; try again shortly"
    elif isinstance(exc, BrokerError):
        log.error("broker unavailable: %s", exc)
        code, detail = 503, "broker unavailable; try again shortly"
    else:
        code, detail = 500, "internal error"
    return JSONResponse({"detail": _printable(detail)}, status_code=code, headers=headers)


def _printable(detail: Any) -> Any:
    """A message that JSON in UTF-8 can carry (lone surrogates escaped) and of bounded size."""
    if isinstance(detail, list):
        return [_printable(item) for item in detail]
    if isinstance(detail, dict):
        return {key: _printable(value) for key, value in detail.items()}
    if not isinstance(detail, str):
        return detail
    text = detail.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= DETAIL_MAX else text[:DETAIL_MAX] + "... (cut)"


def _validation_item(error: dict[str, Any]) -> dict[str, Any]:
    """FastAPI's error item, its message naming the field, without the input (which may be
    large, or NaN, which JSON cannot carry)."""
    loc = [str(part) for part in error.get("loc", ())]
    field = ".".join(loc[1:] if loc[:1] in (["body"], ["query"], ["path"], ["header"]) else loc)
    msg = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    if error.get("type") == "extra_forbidden":
        msg = "unknown field; see the request schema at /docs"
    if field and not msg.startswith(field):
        msg = f"{field}: {msg}"
    return {"loc": loc, "msg": msg, "type": error.get("type")}


async def _handle(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, HTTPException) and exc.status_code == 405:
        exc = HTTPException(405, exc.detail, headers={"Allow": _allowed_methods(request)})
    return error_response(exc)


def _allowed_methods(request: Request) -> str:
    """Every method of every route on the request's path (Starlette's 405 names only those of
    the first route that matched the path, and one path may have a route per method)."""
    methods: set[str] = set()
    for route in iter_routes(request.app):
        match, _ = route.matches({**request.scope, "method": "GET"})
        if match != Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return ", ".join(sorted(methods))


def iter_routes(app: FastAPI) -> Iterator[Any]:
    """The application's routes, those of included routers too, each with its full `path`,
    its `methods` and `matches(scope)` (FastAPI >= 0.130 keeps included routers nested)."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # older FastAPI: included routes are copied into app.routes
        yield from app.routes
        return
    yield from iter_route_contexts(app.routes)


class TrainserveAPI(FastAPI):
    """FastAPI whose OpenAPI document gives every error response the `{"detail": ...}` schema."""

    def openapi(self) -> dict[str, Any]:
        return _document_errors(super().openapi())


def _document_errors(schema: dict[str, Any]) -> dict[str, Any]:
    """Every 4xx/5xx response of every operation is `ErrorOut` as JSON (FastAPI's own 422,
    `HTTPValidationError`, is replaced: this service's validation errors look different)."""
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            for code, response in operation.get("responses", {}).items():
                if code[:1] in ("4", "5"):
                    response["content"] = error
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    if "ErrorOut" not in components:  # a service whose routes declare no error
        out = ErrorOut.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(out.pop("$defs", {}), ErrorOut=out)
    return schema


class GuardMiddleware:
    """Bodies over the limit get 413 (Content-Length or counted while streamed); any
    unexpected exception becomes a 500 `{"detail": "internal error"}`, logged, without a trace."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, max_upload_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_upload_bytes = max_upload_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        upload = scope["method"] == "POST" and scope["path"].rstrip("/") == UPLOAD_PATH
        limit, variable = (
            (self.max_upload_bytes, "TRAINSERVE_MAX_UPLOAD_BYTES")
            if upload
            else (self.max_body_bytes, "TRAINSERVE_MAX_BODY_BYTES")
        )
        too_large = HTTPException(
            413, f"the request body is over the limit of {limit} bytes ({variable})"
        )
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            return await error_response(too_large)(scope, receive, send)
        received, started = 0, False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise too_large
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except Exception as exc:
            if exc is not too_large:
                log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            if not started:
                await error_response(exc)(scope, receive, send)


def create_app(settings: Settings | None = None, services: Services | None = None) -> FastAPI:
    """The application; `services` are built from `settings` at start-up unless given."""
    settings = services.settings if services is not None else (settings or get_settings())
    keys, _generated = load_or_create_api_keys(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if services is None:
            app.state.services = await anyio.to_thread.run_sync(build_services, settings)
        app.state.inference_limiter = anyio.CapacityLimiter(settings.inference_threads)
        reaper = Reaper(app.state.services)
        reaper.start()
        try:
            yield
        finally:
            reaper.stop()

    app = TrainserveAPI(
        title="trainserve",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
        exception_handlers={cls: _handle for cls in HANDLED},
    )
    app.state.settings = settings
    app.state.api_keys = keys
    app.state.model_cache = ModelCache(settings.model_cache_models, settings.model_cache_bytes)
    if services is not None:
        app.state.services = services
    app.add_middleware(
        GuardMiddleware,
        max_body_bytes=settings.max_body_bytes,
        max_upload_bytes=settings.max_upload_bytes,
    )
    app.include_router(health.router)
    secured = [Depends(require_key)]
    for module in (catalogue, datasets, jobs, models):
        app.include_router(
            module.router, prefix="/v1", dependencies=secured, responses=error_responses(401)
        )
    return app
