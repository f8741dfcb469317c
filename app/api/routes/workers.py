"""The live workers and what each can train on (device kind and count)."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter

from app.api.deps import SettingsDep, StoreDep
from app.api.schemas import WorkerOut, error_responses

router = APIRouter(prefix="/workers", tags=["workers"])


@router.get("", response_model=list[WorkerOut], responses=error_responses(503))
def list_workers(store: StoreDep, settings: SettingsDep) -> list[WorkerOut]:
    """Workers whose heartbeat is younger than TRAINSERVE_WORKER_STALE_SECONDS, by name. A job
    asking for `cuda` is refused (422) unless one of them has CUDA devices."""
    stale = timedelta(seconds=settings.worker_stale_seconds)
    return [WorkerOut.model_validate(w, from_attributes=True) for w in store.live_workers(stale)]
