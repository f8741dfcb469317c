"""The FastAPI application: routers, the API key and body guard, and the error handlers.

app = create_app()                      # settings from the environment
app = create_app(settings, services)    # tests and the command line
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

import anyio
from fastapi import Depends, FastAPI

from app.api.auth import load_or_create_api_keys
from app.api.deps import require_key
from app.api.error_handlers import HANDLED, handle, iter_routes
from app.api.events import JobEvents
from app.api.metrics import MetricsMiddleware
from app.api.middleware import SECURED_PREFIX, GuardMiddleware
from app.api.model_cache import ModelCache
from app.api.predict_lane import PredictLane
from app.api.routes import catalogue, datasets, health, jobs, metrics, registry, workers
from app.api.routes.docs import add_docs
from app.api.schemas import ErrorOut, error_responses
from app.api.versions import VersionCache
from app.core.reaper import Reaper
from app.core.services import Services, build_services
from app.core.settings import Settings, get_settings

__all__ = ["create_app", "iter_routes"]

DESCRIPTION = """Train PyTorch models and serve their predictions.

Every `/v1` route needs `Authorization: Bearer <key>` (TRAINSERVE_API_KEYS, or the key
generated into `<data dir>/api_key`). Errors are `{"detail": ...}`."""


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


def create_app(settings: Settings | None = None, services: Services | None = None) -> FastAPI:
    """The application; `services` are built from `settings` at start-up unless given."""
    settings = services.settings if services is not None else (settings or get_settings())
    keys, _generated = load_or_create_api_keys(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if services is None:
            app.state.services = await anyio.to_thread.run_sync(build_services, settings)
        versions = VersionCache(app.state.services.store, settings.registry_check_ms / 1000)
        app.state.versions = versions
        await versions.check()
        checks = asyncio.get_running_loop().create_task(versions.run(), name="registry checks")
        reaper = Reaper(app.state.services)
        reaper.start()
        try:
            yield
        finally:
            reaper.stop()
            checks.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await checks

    app = TrainserveAPI(
        title="trainserve",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
        redirect_slashes=False,
        docs_url=None,  # /docs and /redoc: add_docs, from files in the package (no CDN)
        redoc_url=None,
        exception_handlers={cls: handle for cls in HANDLED},
    )
    app.state.settings = settings
    app.state.api_keys = keys
    app.state.model_cache = ModelCache(settings.model_cache_models, settings.model_cache_bytes)
    # Forwards (one batch each) run here: one per model version at a time, this many at once.
    # Its threads start on demand and outlive a lifespan (the cached models' batchers use it).
    app.state.inference_executor = ThreadPoolExecutor(
        settings.inference_threads, thread_name_prefix="inference"
    )
    app.state.upload_limiter = anyio.CapacityLimiter(settings.max_parallel_uploads)
    app.state.job_events = JobEvents(settings.max_streams_per_key)  # shared event pollers
    if services is not None:
        app.state.services = services
    app.add_middleware(PredictLane)  # innermost: after the guard's checks
    app.add_middleware(
        GuardMiddleware,
        max_body_bytes=settings.max_body_bytes,
        max_upload_bytes=settings.max_upload_bytes,
        api_keys=keys,
    )
    app.add_middleware(MetricsMiddleware)  # outermost: counts the guard's answers too
    app.include_router(health.router)
    app.include_router(metrics.router)
    secured = [Depends(require_key)]
    for module in (catalogue, datasets, jobs, registry, workers):
        app.include_router(
            module.router,
            prefix=SECURED_PREFIX,
            dependencies=secured,
            responses=error_responses(401),
        )
    add_docs(app)
    return app
