"""HTTP metrics: every request counted and timed by route template (never the raw path),
method and status (app/core/metrics.py defines them); and the GET /metrics answer."""

from __future__ import annotations

import time

from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.error_handlers import iter_routes
from app.core import metrics

# A route that answers before FastAPI routes (app/api/predict_lane.py) names its template here.
ROUTE_KEY = "trainserve.route"


class MetricsMiddleware:
    """Outermost: also counts what the guard answers before routing (401, 413). FastAPI keeps
    included routers nested (scope["route"] lacks their prefix): the template is matched here."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = 500  # unless a response starts

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            metrics.observe_request(
                route_template(scope), scope["method"], status, time.perf_counter() - start
            )


def route_template(scope: Scope) -> str:
    """The template of the route that matches the request (`/v1/jobs/{job_id}`), also for what
    was answered before routing (401, 413); a method the route lacks (405) still names it;
    `unmatched` when no route does. Label values stay bounded whatever paths clients send."""
    if ROUTE_KEY in scope:
        return scope[ROUTE_KEY]
    routes = _routes(scope["app"])
    partial = None
    for route in routes:
        match, _ = route.matches({**scope, "type": "http"})
        if match is Match.FULL:
            return route.path
        if match is Match.PARTIAL and partial is None:
            partial = route.path
    return partial or metrics.UNMATCHED_ROUTE


def _routes(app) -> list:
    """The app's routes with their full paths, listed once (they do not change once served)."""
    routes = getattr(app.state, "metrics_routes", None)
    if routes is None:
        routes = app.state.metrics_routes = list(iter_routes(app))
    return routes
