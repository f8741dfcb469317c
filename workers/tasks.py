"""Celery tasks: thin wrappers that take a job id and hand it to the runner."""

from __future__ import annotations

import os
import socket
from functools import lru_cache

from celery.signals import worker_ready, worker_shutdown, worker_shutting_down

from app.core.queue import TRAIN_TASK
from app.core.services import Services, build_services
from app.core.settings import get_settings
from workers.celery_app import celery_app
from workers.devices import DeviceAnnouncer
from workers.liveness import Liveness
from workers.progress import shutdown_requested
from workers.runner import run_job


@lru_cache
def worker_services() -> Services:
    """Built once per worker process, on its first task."""
    settings = get_settings()
    services = build_services(settings)
    services.store.retry_seconds = settings.worker_db_retry_seconds  # outlast a restart
    services.artifacts.retry_seconds = settings.worker_artifacts_retry_seconds
    return services


@lru_cache
def worker_liveness() -> Liveness:
    return Liveness(get_settings().worker_liveness_file)


def worker_devices(name: str) -> DeviceAnnouncer:
    settings = get_settings()
    return DeviceAnnouncer(
        worker_services().store, name, settings.heartbeat_seconds, settings.worker_stale_seconds
    )


_announced: list[DeviceAnnouncer] = []


@worker_ready.connect
def _on_ready(sender=None, **_kwargs) -> None:
    """Touch the liveness file from a thread, also while a job blocks the (solo) pool: the
    health check reads the file instead of asking a busy worker (workers/liveness.py). Tell the
    job store what this worker can train on (workers/devices.py)."""
    worker_liveness().start()
    # the node name (celery@host) and the process: two workers on one host are two rows
    name = f"{getattr(sender, 'hostname', None) or socket.gethostname()}/{os.getpid()}"
    announcer = worker_devices(name)
    announcer.start()
    _announced.append(announcer)


@worker_shutting_down.connect
def _on_shutdown(**_kwargs) -> None:
    shutdown_requested.set()


@worker_shutdown.connect
def _on_stopped(**_kwargs) -> None:
    worker_liveness().stop()
    while _announced:
        _announced.pop().stop()


@celery_app.task(name=TRAIN_TASK)
def train_job(job_id: str) -> str:
    return run_job(job_id, worker_services(), worker=train_job.request.hostname)
