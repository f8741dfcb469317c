"""Run one job: claim it, train it with store callbacks, publish the weights, record the end."""

from __future__ import annotations

import logging
import shutil
import socket
from pathlib import Path

import torch

from app.core.artifacts import weights_key
from app.core.datasets import load_upload
from app.core.db import JobStatus
from app.core.errors import LeaseLost, Unavailable
from app.core.services import Services
from models.callbacks import Checkpointing
from models.errors import CatalogueError, DataFormatError, DatasetUnavailableError
from models.request import TrainingRequest
from models.training import TrainingResult, run_training
from workers.progress import Deadline, Heartbeat, Interrupted, JobTimeout, StoreProgress

log = logging.getLogger(__name__)

USER_ERRORS = (CatalogueError, DataFormatError, DatasetUnavailableError, Unavailable)


def run_job(job_id: str, services: Services, worker: str | None = None) -> str:
    """Train job `job_id` if it is queued; returns the status it ended with (or 'skipped')."""
    store, settings = services.store, services.settings
    lease = store.claim(job_id, worker or socket.gethostname())
    if lease is None:
        log.info("job %s is not queued (already running, ended or unknown): skipped", job_id)
        return "skipped"
    job = store.get_job(job_id)
    log.info(
        "job %s: training %s on %s (attempt %d)",
        job_id,
        job.architecture,
        job.dataset,
        job.attempts,
    )
    config = TrainingRequest.from_stored(job.request)
    checkpoints = checkpoint_dir(services, job_id)
    checkpointing = Checkpointing(checkpoints, every=settings.checkpoint_every, keep=2)
    progress = StoreProgress(store, job_id, lease, checkpointing)
    callbacks = [checkpointing, progress, Deadline(settings.max_job_seconds)]
    try:
        with Heartbeat(store, job_id, lease, settings.heartbeat_seconds):
            result = run_training(
                config,
                data_dir=settings.data_dir,
                allow_download=settings.allow_downloads,
                dataset=_uploaded_dataset(services, config.dataset),
                callbacks=callbacks,
                resume_from=checkpoints if checkpoints.is_dir() else None,
            )
    except LeaseLost:
        log.warning("job %s: lease %d lost to another claim; stopping", job_id, lease)
        return "lost"
    except Interrupted:
        log.info("job %s: worker shutting down; checkpointed and sent back to the queue", job_id)
        if store.requeue(job_id, lease):
            services.enqueue(job_id)
        return "requeued"
    except (JobTimeout, *USER_ERRORS) as exc:
        return _fail(services, job_id, lease, str(exc))
    except torch.cuda.OutOfMemoryError:
        return _fail(
            services,
            job_id,
            lease,
            "ran out of GPU memory; lower batch_size or choose a smaller architecture",
        )
    except Exception as exc:
        log.exception("job %s failed", job_id)
        return _fail(services, job_id, lease, f"training failed: {type(exc).__name__}: {exc}")

    if progress.cancelled:
        store.finish(job_id, lease, "cancelled")
        status = "cancelled"
    else:
        version = publish_result(services, job_id, lease, job.model_name, result)
        log.info(
            "job %s: published %s v%d %s", job_id, job.model_name, version, result.final_metrics
        )
        status = "succeeded"
    shutil.rmtree(checkpoints, ignore_errors=True)
    return status


def checkpoint_dir(services: Services, job_id: str) -> Path:
    """Where a job's training checkpoints are kept while it runs."""
    return services.settings.checkpoints_dir / job_id


def _uploaded_dataset(services: Services, name: str):
    row = services.store.get_dataset(name)
    return None if row is None else load_upload(services, row)


def publish_result(
    services: Services, job_id: str, lease: int, model_name: str, result: TrainingResult
) -> int:
    """Store the weights and add the model version; the job ends succeeded, atomically."""
    data = result.weights()
    card = result.card

    def write(version: int) -> tuple[str, int]:
        return services.artifacts.put(weights_key(model_name, version), data), len(data)

    fields = {
        "model_name": model_name,
        "task": card.task,
        "architecture": card.architecture,
        "input_shape": card.input_shape,
        "classes": card.classes,
        "metrics": result.final_metrics,
    }
    return services.store.publish_version(job_id, lease, fields, write)


def _fail(services: Services, job_id: str, lease: int, error: str) -> str:
    services.store.finish(job_id, lease, "failed", error=error)
    shutil.rmtree(checkpoint_dir(services, job_id), ignore_errors=True)
    return JobStatus.failed
