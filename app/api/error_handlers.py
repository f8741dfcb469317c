"""The one translation of errors to HTTP: a status that names the cause, `{"detail": ...}`.

Domain errors (app/errors.py, models/errors.py), validation errors, an unavailable job store or
broker, and Starlette's own 404/405 all pass through `error_response`; nothing else writes an
error body, and no response carries a trace.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy.exc import DataError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException
from starlette.routing import Match

from app.core.errors import ServiceError
from app.core.names import shown
from models.errors import (
    AmbiguousDataError,
    CatalogueError,
    DataFormatError,
    DatasetTooLargeError,
    DatasetUnavailableError,
)
from models.predictor import InputError
from models.request import field_path

log = logging.getLogger(__name__)
DatabaseError = (OperationalError, PoolTimeout)

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
    elif isinstance(exc, DatasetTooLargeError):
        code, detail = 413, str(exc)
    elif isinstance(exc, AmbiguousDataError):  # readable, but the user must choose: 422
        code, detail = 422, str(exc)
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
    loc = field_path(error.get("loc", ()))
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


async def handle(request: Request, exc: Exception) -> JSONResponse:
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
