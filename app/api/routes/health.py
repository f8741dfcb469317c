"""Liveness and readiness (job store and broker answer); no API key."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request

from app.api.deps import ServicesDep
from app.api.schemas import Health, Readiness, error_responses
from app.core.errors import Unavailable
from app.core.services import Services

log = logging.getLogger(__name__)
router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """200 while the process serves.

    On the event loop, with no dependency: a sync route would wait for a thread of the pool,
    which requests stuck on a slow job store may all hold (readiness is /readyz)."""
    return Health(status="ok")


def _check_store(services: Services) -> str | None:
    try:
        services.store.count_jobs("queued")  # one round trip to the database
    except Exception as exc:  # any failure means "not ready"; the reason goes to the log
        log.warning("readiness: job store check failed: %s", exc)
        return "job store does not answer"
    return None


def _check_broker(services: Services) -> str | None:
    try:
        services.queue.check()
    except Exception as exc:  # as above
        log.warning("readiness: broker check failed: %s", exc)
        return "broker does not answer"
    return None


def _check_artifacts(services: Services) -> str | None:
    try:
        services.artifacts.check()
    except Exception as exc:  # as above; the reason names the store, never a credential
        log.warning("readiness: artifact store check failed: %s", exc)
        return f"artifact store {services.artifacts.name} does not answer"
    return None


def _check_worker(request: Request) -> str | None:
    supervisor = getattr(request.app.state, "worker_supervisor", None)
    if supervisor is None or supervisor.alive():
        return None
    return f"the worker is not running (restarted {supervisor.restarts} times so far)"


@router.get(
    "/readyz",
    response_model=Readiness,
    responses=error_responses(
        503,
        e503="the job store, the broker or the artifact store does not answer (or, under "
        "`trainserve serve`, its worker is not running)",
    ),
)
def readyz(services: ServicesDep, request: Request) -> Readiness:
    """200 when the job store, the broker and the artifact store answer, else 503 naming which
    one does not.
    Under `trainserve serve`, which runs its own worker, also 503 while that worker is down
    (between its death and its restart); a separate API does not depend on workers."""
    checks = (
        _check_store(services),
        _check_broker(services),
        _check_artifacts(services),
        _check_worker(request),
    )
    problems = [p for p in checks if p]
    if problems:
        raise Unavailable("not ready: " + "; ".join(problems))
    return Readiness(status="ready", store="ok", broker="ok")
