"""The fast lane of `POST /v1/models/{name}/predict`: the predict route, answered as plain ASGI.

Profiled at 32 clients on a small model (bench/predict.py --profile), FastAPI spent about 60 %
of the event loop on a prediction before and around the handler: matching the path against
every route, solving dependencies, parsing the JSON body in Python, then validating it. This
lane, the innermost middleware (after the API key and body limit checks of
app/api/middleware.py), takes a well-formed prediction straight to the route's own answer
(`answer_prediction`): its body parsed and validated in one pass by pydantic's JSON parser into
the route's `PredictRequest`, the `version` query read as the route reads it, errors translated
by the one translation (`error_response`).

Anything it does not take as it is goes on to FastAPI with the body it sent, replayed: a body
that is not a valid `PredictRequest`, a Content-Type other than JSON. So every refusal still
comes from the documented route, in its words, and the two cannot drift apart.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl

from pydantic import ValidationError
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.error_handlers import HANDLED, error_response
from app.api.metrics import ROUTE_KEY
from app.api.routes.registry import answer_prediction
from app.api.schemas import PredictRequest

PREDICT_PATH = re.compile(r"/v1/models/([^/]+)/predict")  # as the route's `{name}` matches
PREDICT_TEMPLATE = "/v1/models/{name}/predict"
JSON_TYPE = re.compile(rb"application/json\s*(;.*)?", re.IGNORECASE | re.DOTALL)


class PredictLane:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = None
        if scope["type"] == "http" and scope["method"] == "POST":
            match = PREDICT_PATH.fullmatch(scope["path"])
        if match is None or not _sends_json(scope):
            return await self.app(scope, receive, send)
        body = await _read_body(receive)
        if body is None:  # the client left before its body was complete: no one to answer
            return None
        try:
            inputs = PredictRequest.model_validate_json(body).inputs
        except ValidationError:  # the route refuses it, in its words
            return await self.app(scope, _replay(body, receive), send)
        scope[ROUTE_KEY] = PREDICT_TEMPLATE
        version = _version_query(scope["query_string"])
        request = Request(scope, receive)
        try:
            response = await answer_prediction(
                scope["app"].state, match[1], version, inputs, request.is_disconnected
            )
        except HANDLED as exc:
            response = error_response(exc)
        await response(scope, receive, send)
        return None


def _sends_json(scope: Scope) -> bool:
    content_type = next((v for k, v in scope["headers"] if k == b"content-type"), None)
    return content_type is not None and JSON_TYPE.fullmatch(content_type) is not None


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body (its size bounded upstream), or None if the client left."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """`receive` that gives `body` first, as one message, then what the connection gives."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def _version_query(query_string: bytes) -> str | None:
    """The `version` query parameter (its last value, as FastAPI reads it), or None."""
    if not query_string:
        return None
    values = [
        value
        for key, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
        if key == "version"
    ]
    return values[-1] if values else None
