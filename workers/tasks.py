"""Celery tasks: thin wrappers that take a job id and hand it to the runner."""

from __future__ import annotations

from functools import lru_cache

from celery.signals import worker_shutting_down

from app.core.queue import TRAIN_TASK
from app.core.services import Services, build_services
from app.core.settings import get_settings
from workers.celery_app import celery_app
from workers.progress import shutdown_requested
from workers.runner import run_job


@lru_cache
def worker_services() -> Services:
    """Built once per worker process, on its first task."""
    return build_services(get_settings())


@worker_shutting_down.connect
def _on_shutdown(**_kwargs) -> None:
    shutdown_requested.set()


@celery_app.task(name=TRAIN_TASK)
def train_job(job_id: str) -> str:
    return run_job(job_id, worker_services(), worker=train_job.request.hostname)
