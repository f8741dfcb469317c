"""A running job's training checkpoints in the artifact store, each recorded with its sha256
in the job store (the newest `keep` per job), so a job resumes on any host from the newest one
that is intact. A checkpoint whose bytes fail their sha256, or do not load, is skipped for the
one before it, as a truncated file always was."""

from __future__ import annotations

import logging
from typing import Any

from app.core.artifacts import (
    ArtifactMissing,
    StoreUnavailable,
    checkpoint_key,
    checkpoints_prefix,
)
from app.core.services import Services
from models.checkpoints import checkpoint_from_bytes
from models.errors import CheckpointError
from models.files import sha256_hex

log = logging.getLogger(__name__)


def store_checkpoint(
    services: Services, job_id: str, lease: int, epoch: int, data: bytes, keep: int = 2
) -> str:
    """Put the checkpoint of `epoch`, record it (fenced on `lease`), delete older ones beyond
    `keep`; returns its key. The object is written before its row, so a row always has one."""
    key = checkpoint_key(job_id, epoch)
    sha256 = services.artifacts.put(key, data)
    for old in services.store.record_checkpoint(job_id, lease, epoch, sha256, len(data), keep):
        services.artifacts.delete(checkpoint_key(job_id, old))
    return key


def load_latest_checkpoint(services: Services, job_id: str) -> dict[str, Any] | None:
    """The trainer state of the job's newest intact checkpoint; None if it has none (start
    afresh). StoreUnavailable when the artifact store does not answer: never start afresh then."""
    for row in services.store.checkpoints(job_id):
        key = checkpoint_key(job_id, row.epoch)
        where = services.artifacts.where(key)
        try:
            data = services.artifacts.get(key)
        except ArtifactMissing:
            log.warning("skipping unusable checkpoint: %s is missing", where)
            continue
        if sha256_hex(data) != row.sha256:
            log.warning("skipping unusable checkpoint: %s fails its sha256 check", where)
            continue
        try:
            state = checkpoint_from_bytes(data, where)
        except CheckpointError as exc:
            log.warning("skipping unusable checkpoint: %s", exc)
            continue
        log.info("resuming from %s", where)
        return state
    return None


def delete_checkpoints(services: Services, job_id: str) -> None:
    """Remove a job's checkpoints and their rows. Best effort: with the store down they stay,
    and a later sweep removes them."""
    try:
        for key in services.artifacts.list(checkpoints_prefix(job_id)):
            services.artifacts.delete(key)
    except StoreUnavailable as exc:
        log.warning("job %s: checkpoints kept for a later sweep: %s", job_id, exc)
    services.store.forget_checkpoints(job_id)
