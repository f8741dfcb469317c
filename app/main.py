"""The FastAPI application: routers, API keys, body limits and one place that maps errors to HTTP.

app = create_app()                      # settings from the environment
app = create_app(settings, services)    # tests and the command line
"""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy.exc import DataError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.auth import KeyRefused, load_or_create_api_keys, owner_of_authorization
from app.deps import require_key, unauthorized
from app.errors import ServiceError
from app.inference import ModelCache
from app.names import shown
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

SECURED_PREFIX = "/v1"
UPLOAD_PATH = "/v1/datasets"
FASTAPI_BODY_ERROR = "There was an error parsing the body"
BODY_TYPE_ERRORS = {"model_attributes_type", "model_type", "dict_type"}
DETAIL_MAX = 4000  # characters of an error message; longer ones are cut (they echo input)
HANDLED = (
    ServiceError,
    CatalogueError,
    DataFormatError,
    DatasetUnavailableError,
    InputError,
    *DatabaseError,
    DataError,
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
    elif isinstance(exc, DataError):  # the database refused a value (PostgreSQL: a NUL byte)
        log.warning("job store refused a value: %s", exc)
        code, detail = 422, "a value in the request cannot be stored (control characters?)"
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
    kind = error.get("type")
    if kind == "extra_forbidden":
        msg = "unknown field; see the request schema at /docs"
    elif kind == "json_invalid":  # loc is ("body", the character where parsing stopped)
        reason = (error.get("ctx") or {}).get("error", "malformed")
        msg = f"the request body is not valid JSON: {reason} at character {field}"
        field = ""
    elif loc == ["body"] and kind == "missing":
        msg = "the request body is missing: send a JSON object (Content-Type: application/json)"
    elif loc == ["body"] and kind in BODY_TYPE_ERRORS:
        msg = "the request body must be a JSON object, sent with Content-Type: application/json"
    if field and not msg.startswith(field):
        msg = f"{field}: {msg}"
    return {"loc": loc, "msg": msg, "type": error.get("type")}


async def _handle(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, HTTPException) and exc.status_code == 405:
        exc = HTTPException(405, exc.detail, headers={"Allow": _allowed_methods(request)})
    elif isinstance(exc, HTTPException) and exc.detail == FASTAPI_BODY_ERROR and exc.__cause__:
        exc = HTTPException(400, _unreadable_body(exc.__cause__))  # FastAPI's message is vague
    elif isinstance(exc, HTTPException) and exc.status_code == 404 and exc.detail == "Not Found":
        exc = HTTPException(404, _no_route(request))
    return error_response(exc)


def _no_route(request: Request) -> str:
    """Which path has no route, and the one meant when it is only a trailing '/' away (paths
    are not redirected: a redirect would answer a path no route names with a 3xx)."""
    path = request.scope["path"]
    message = f"no route {request.method} {shown(path, 200)}; the routes are at /docs"
    meant = path.rstrip("/")
    if path != meant and meant.rsplit("/", 1)[-1] not in ("", ".", ".."):
        scope = {**request.scope, "path": meant}
        if any(route.matches(scope)[0] != Match.NONE for route in iter_routes(request.app)):
            message += f" (did you mean {shown(meant, 200)}?)"
    return message


def _unreadable_body(cause: BaseException) -> str:
    """What made a request body unreadable, in words (FastAPI says only that it was)."""
    if isinstance(cause, RecursionError):
        return "the JSON body is nested too deeply to be read"
    if isinstance(cause, UnicodeDecodeError):
        return f"the request body is not UTF-8 text (byte {cause.start} cannot be decoded)"
    if isinstance(cause, ValueError) and "digits" in str(cause):
        return f"a number in the JSON body has over {sys.get_int_max_str_digits()} digits"
    return "the request body cannot be read as JSON (uploads: as multipart/form-data)"


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
    """Before anything reads a request: a /v1 request without a valid API key gets 401 (so no
    body of an unauthenticated client is parsed or spooled to disk, and a new /v1 route cannot
    forget the key); bodies over the limit get 413 (Content-Length or counted while streamed).
    Any unexpected exception becomes a 500 `{"detail": "internal error"}`, logged, no trace."""

    def __init__(
        self, app: ASGIApp, max_body_bytes: int, max_upload_bytes: int, api_keys: list[str]
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_upload_bytes = max_upload_bytes
        self.api_keys = api_keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if scope["path"] == SECURED_PREFIX or scope["path"].startswith(SECURED_PREFIX + "/"):
            header = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
            header = header.decode("latin-1")
            try:
                owner_of_authorization(header, self.api_keys)
            except KeyRefused as refused:
                return await error_response(unauthorized(refused))(scope, receive, send)
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
        redirect_slashes=False,
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
        api_keys=keys,
    )
    app.include_router(health.router)
    secured = [Depends(require_key)]
    for module in (catalogue, datasets, jobs, models):
        app.include_router(
            module.router,
            prefix=SECURED_PREFIX,
            dependencies=secured,
            responses=error_responses(401),
        )
    return app
