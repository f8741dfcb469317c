"""Run one job: claim it, train it with store callbacks, publish the weights, record the end."""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Mapping
from datetime import UTC, datetime

import torch
from sqlalchemy.exc import InterfaceError, OperationalError

from app.core import metrics
from app.core.artifacts import EXPORT_FORMATS, StoreUnavailable, export_key, weights_key
from app.core.checkpoints import load_latest_checkpoint
from app.core.cleanup import remove_checkpoints
from app.core.datasets import load_upload
from app.core.db import JobStatus
from app.core.errors import LeaseLost, NoSpace, Unavailable
from app.core.exports import serving_exports
from app.core.services import Services
from models.errors import (
    CatalogueError,
    DataFormatError,
    DatasetUnavailableError,
    DivergedError,
)
from models.request import TrainingRequest
from models.training import TrainingResult, run_training
from workers.progress import (
    Deadline,
    EpochCounter,
    Heartbeat,
    Interrupted,
    JobTimeout,
    StoreCheckpointing,
    StoreProgress,
)

log = logging.getLogger(__name__)

USER_ERRORS = (
    CatalogueError,
    DataFormatError,
    DatasetUnavailableError,
    DivergedError,  # no version is published: the job fails with the epoch and the fix
    Unavailable,
)
STORE_DOWN = (OperationalError, InterfaceError)  # after the store's own retries
NO_SPACE = (
    "no space left on the artifact store ({what}): free space or grow the volume, then submit "
    "the job again"
)


def run_job(job_id: str, services: Services, worker: str | None = None) -> str:
    """Train job `job_id` if it is queued; returns the status it ended with (or 'skipped').

    Infrastructure never fails a job: a store that stays down leaves it running, and the
    reaper sends it back to the queue once its heartbeat is stale."""
    store = services.store
    lease = store.claim(job_id, worker or socket.gethostname())
    if lease is None:
        log.info("job %s is not queued (already running, ended or unknown): skipped", job_id)
        return "skipped"
    try:
        with metrics.busy_slot():
            return _run_claimed(job_id, lease, services)
    except LeaseLost:
        log.warning("job %s: lease %d lost to another claim; stopping", job_id, lease)
        return "lost"
    except STORE_DOWN as exc:
        log.error("job %s: the job store is unavailable (%s); the reaper re-sends it", job_id, exc)
        return "store-unavailable"
    except StoreUnavailable as exc:
        return _wait_for_artifacts(services, job_id, lease, exc)


def _run_claimed(job_id: str, lease: int, services: Services) -> str:
    store, settings = services.store, services.settings
    job = store.get_job(job_id)
    log.info(
        "job %s: training %s on %s (attempt %d)",
        job_id,
        job.architecture,
        job.dataset,
        job.attempts,
    )
    if job.attempts == 1 and job.started_at is not None:  # submission -> first start
        metrics.job_started((_utc(job.started_at) - _utc(job.created_at)).total_seconds())
    deadline = Deadline(settings.max_job_seconds, already=store.running_seconds(job_id))
    if deadline.remaining() <= 0:
        return _fail(services, job_id, lease, deadline.message(job.epoch), "timeout", deadline)
    config = TrainingRequest.from_stored(job.request)
    checkpointing = StoreCheckpointing(services, job_id, lease, every=settings.checkpoint_every)
    progress = StoreProgress(store, job_id, lease, checkpointing)
    try:
        with Heartbeat(store, job_id, lease, settings.heartbeat_seconds):
            result = run_training(
                config,
                data_dir=settings.data_dir,
                allow_download=settings.allow_downloads,
                dataset=_uploaded_dataset(services, config.dataset),
                callbacks=[checkpointing, progress, deadline, EpochCounter(config.architecture)],
                resume_from=load_latest_checkpoint(services, job_id),
            )
    except Interrupted:
        status = store.requeue(job_id, lease)
        if status == JobStatus.queued:
            log.info(
                "job %s: worker shutting down; checkpointed and sent back to the queue", job_id
            )
            services.enqueue(job_id)
            return "requeued"
        log.info("job %s: worker shutting down; the job is now %s", job_id, status)
        if status == JobStatus.cancelled:
            remove_checkpoints(services, job_id)
            metrics.job_finished(status, deadline.elapsed())
        return str(status)
    except StoreUnavailable:
        raise  # infrastructure: the job waits (run_job), it does not fail
    except NoSpace:
        error = NO_SPACE.format(what="training checkpoints")
        return _fail(services, job_id, lease, error, "no_space", deadline)
    except (JobTimeout, *USER_ERRORS) as exc:
        return _fail(services, job_id, lease, str(exc), failure_reason(exc), deadline)
    except torch.cuda.OutOfMemoryError:
        error = "ran out of GPU memory; lower batch_size or choose a smaller architecture"
        return _fail(services, job_id, lease, error, "out_of_memory", deadline)
    except (LeaseLost, *STORE_DOWN):
        raise
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            error = NO_SPACE.format(what="training checkpoints")
            return _fail(services, job_id, lease, error, "no_space", deadline)
        log.exception("job %s failed", job_id)
        error = f"training failed: {type(exc).__name__}: {exc}"
        return _fail(services, job_id, lease, error, "error", deadline)
    except Exception as exc:
        log.exception("job %s failed", job_id)
        error = f"training failed: {type(exc).__name__}: {exc}"
        return _fail(services, job_id, lease, error, "error", deadline)

    exports = {}
    if not progress.cancelled:
        with Heartbeat(store, job_id, lease, settings.heartbeat_seconds):
            exports = serving_exports(settings, job.architecture, result.weights)
    if progress.cancelled or (exports and store.heartbeat(job_id, lease)):  # or while exporting
        store.finish(job_id, lease, JobStatus.cancelled)
        status = JobStatus.cancelled
    else:
        try:
            version = publish_result(
                services,
                job_id,
                lease,
                job.model_name,
                result,
                job.request.get("promote"),
                exports=exports,
            )
        except NoSpace:
            error = NO_SPACE.format(what="model weights")
            return _fail(services, job_id, lease, error, "no_space", deadline)
        log.info(
            "job %s: published %s v%d %s", job_id, job.model_name, version, result.final_metrics
        )
        status = JobStatus.succeeded
    remove_checkpoints(services, job_id)
    metrics.job_finished(status, deadline.elapsed())
    return status


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _uploaded_dataset(services: Services, name: str):
    row = services.store.get_dataset(name)
    return None if row is None else load_upload(services, row)


def publish_result(
    services: Services,
    job_id: str,
    lease: int,
    model_name: str,
    result: TrainingResult,
    promote: dict | None = None,
    exports: Mapping[str, bytes] | None = None,
) -> int:
    """Store the weights, and `exports` of them by format (app/core/exports.py), and add the
    model version; the job ends succeeded, atomically, with the request's promotion rule
    (`promote`) applied (app/core/promotion.py)."""
    data = result.weights()
    card = result.card

    def write(version: int) -> tuple[str, int]:
        # The version's exports are exactly these: none left by a publish of this number
        # that was rolled back after writing its files.
        for fmt in EXPORT_FORMATS:
            key = export_key(model_name, version, fmt)
            if exports and fmt in exports:
                services.artifacts.put(key, exports[fmt])
            else:
                services.artifacts.delete(key)
        return services.artifacts.put(weights_key(model_name, version), data), len(data)

    fields = {
        "model_name": model_name,
        "task": card.task,
        "architecture": card.architecture,
        "input_shape": card.input_shape,
        "classes": card.classes,
        "metrics": result.final_metrics,
    }
    return services.store.publish_version(job_id, lease, fields, write, promote=promote)


def _fail(
    services: Services, job_id: str, lease: int, error: str, reason: str, deadline: Deadline
) -> str:
    services.store.finish(job_id, lease, JobStatus.failed, error=error)
    remove_checkpoints(services, job_id)
    metrics.job_finished(JobStatus.failed, deadline.elapsed(), reason)
    return JobStatus.failed


def _wait_for_artifacts(services: Services, job_id: str, lease: int, exc: StoreUnavailable) -> str:
    """The artifact store stayed down past the worker's retries: the job goes back to the
    queue with a note saying so (its checkpoints stay where they are), and the reaper sends
    it again later; it resumes from its newest checkpoint once the store answers."""
    note = (
        f"waiting for the artifact store: {exc.detail}. The job is queued again and resumes "
        "from its last checkpoint once the store answers"
    )
    log.error("job %s: %s", job_id, note)
    status = services.store.requeue(job_id, lease, note=note)
    if status == JobStatus.cancelled:
        remove_checkpoints(services, job_id)  # best effort: a later sweep finishes it
    return "artifacts-unavailable" if status == JobStatus.queued else str(status)


FAILURE_REASONS = {  # trainserve_job_failures_total's reason label: a bounded set
    JobTimeout: "timeout",
    DivergedError: "diverged",
    CatalogueError: "invalid_request",
    DataFormatError: "data",
    DatasetUnavailableError: "dataset_unavailable",
    Unavailable: "unavailable",
}


def failure_reason(exc: Exception) -> str:
    return next((r for cls, r in FAILURE_REASONS.items() if isinstance(exc, cls)), "error")
