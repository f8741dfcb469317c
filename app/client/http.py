"""The HTTP client (httpx): requests with the key, errors as CliError with the server's detail."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx

from app.client.connection import Connection
from app.client.errors import USAGE, CliError

TIMEOUT_S = 30.0
STREAM_READ_TIMEOUT_S = 45.0  # the service sends a keep-alive comment every 15 s


class ApiClient:
    def __init__(self, connection: Connection) -> None:
        self.url = connection.url
        headers = {"Authorization": f"Bearer {connection.api_key}"} if connection.api_key else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=TIMEOUT_S)

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The response when its status is 2xx; CliError otherwise (or when unreachable)."""
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise self.unreachable(exc) from None
        if response.is_success:
            return response
        raise refused(response)

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        return response.json() if response.content else None

    def unreachable(self, exc: Exception) -> CliError:
        return CliError(
            f"cannot reach the trainserve API at {self.url} ({exc or type(exc).__name__}); is it "
            "running? (`trainserve serve`, or set --url / TRAINSERVE_URL)",
            USAGE,
        )

    def events(self, job_id: str) -> Iterator[dict[str, Any]]:
        """The jobs of GET /v1/jobs/{id}/events as they come (server-sent events), until the
        stream ends; httpx's errors when it drops."""
        timeout = httpx.Timeout(TIMEOUT_S, read=STREAM_READ_TIMEOUT_S)
        with self.http.stream("GET", f"/v1/jobs/{job_id}/events", timeout=timeout) as response:
            if not response.is_success:
                response.read()
                raise refused(response)
            data: list[str] = []
            for line in response.iter_lines():
                if line.startswith("data:"):
                    data.append(line[5:].removeprefix(" "))
                elif not line and data:
                    yield json.loads("\n".join(data))
                    data = []


def refused(response: httpx.Response) -> CliError:
    """The server's `detail`, as a message: a string as is, validation items one per line."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    if isinstance(detail, list):
        lines = [f"  {item.get('msg')}" for item in detail]  # each msg names its field
        message = "the request is invalid:\n" + "\n".join(lines)
    elif detail:
        message = str(detail)
    else:
        message = response.text[:500] or response.reason_phrase
    return CliError(f"{response.status_code} {response.reason_phrase}: {message}", USAGE)
