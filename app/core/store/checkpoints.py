"""Training checkpoints' rows: recorded under the worker's lease, the newest `keep` kept (their
objects live in the artifact store: app/core/checkpoints.py)."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from app.core.db import JobCheckpoint
from app.core.errors import LeaseLost
from app.core.store.base import StoreBase
from app.core.store.leases import fenced


class CheckpointsMixin(StoreBase):
    def record_checkpoint(
        self, job_id: str, lease: int, epoch: int, sha256: str, size: int, keep: int
    ) -> list[int]:
        """Record a checkpoint the worker holding `lease` stored; returns the epochs of older
        ones beyond the newest `keep`, whose rows are gone (the caller deletes their objects)."""

        def apply(session: Session) -> list[int]:
            beat = fenced(job_id, lease).values(heartbeat_at=self._now())
            if session.execute(beat).rowcount == 0:
                raise LeaseLost(job_id)
            mine = (JobCheckpoint.job_id == job_id, JobCheckpoint.epoch == epoch)
            session.execute(delete(JobCheckpoint).where(*mine))
            session.add(JobCheckpoint(job_id=job_id, epoch=epoch, sha256=sha256, size_bytes=size))
            session.flush()
            epochs = select(JobCheckpoint.epoch).where(JobCheckpoint.job_id == job_id)
            old = list(session.scalars(epochs.order_by(JobCheckpoint.epoch.desc())))[keep:]
            if old:
                session.execute(
                    delete(JobCheckpoint).where(
                        JobCheckpoint.job_id == job_id, JobCheckpoint.epoch.in_(old)
                    )
                )
            return old

        return self._run(apply)

    def checkpoints(self, job_id: str) -> list[JobCheckpoint]:
        """A job's recorded checkpoints, newest first."""
        stmt = (
            select(JobCheckpoint)
            .where(JobCheckpoint.job_id == job_id)
            .order_by(JobCheckpoint.epoch.desc())
        )
        return self._run(lambda s: list(s.scalars(stmt)))

    def forget_checkpoints(self, job_id: str) -> None:
        stmt = delete(JobCheckpoint).where(JobCheckpoint.job_id == job_id)
        self._run(lambda s: s.execute(stmt))
