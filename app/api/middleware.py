"""What every request passes before the application reads it: the API key and the body limit."""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.auth import KeyRefused, owner_of_authorization
from app.api.deps import unauthorized
from app.api.error_handlers import error_response

log = logging.getLogger(__name__)

SECURED_PREFIX = "/v1"
UPLOAD_PATH = "/v1/datasets"
# Room for the multipart boundaries, part headers and the small form fields around an upload's
# file, so that a file of exactly TRAINSERVE_MAX_UPLOAD_BYTES is accepted.
MULTIPART_FRAMING_BYTES = 64 * 1024


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
        limit, variable = (  # an upload's file is checked against its own limit by the route
            (self.max_upload_bytes + MULTIPART_FRAMING_BYTES, "TRAINSERVE_MAX_UPLOAD_BYTES")
            if upload
            else (self.max_body_bytes, "TRAINSERVE_MAX_BODY_BYTES")
        )
        allowed = self.max_upload_bytes if upload else limit
        framing = " (and its multipart framing)" if upload else ""
        too_large = HTTPException(
            413, f"the request body is over the limit of {allowed} bytes{framing} ({variable})"
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
