"""Jobs, as the API sees them: submit (idempotent, with a per-owner limit on queued jobs),
read, list, cancel, count for /metrics, and delete once ended (the rows, in one transaction;
app/core/deletion.py removes the files after)."""

from __future__ import annotations

import uuid
from datetime import UTC
from typing import Any

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.core.db import TERMINAL, Job, JobEvaluation, JobStatus, utcnow
from app.core.errors import Conflict, NotFound, TooLarge
from app.core.store.base import StoreBase


class JobsMixin(StoreBase):
    def create_job(
        self,
        request: dict[str, Any],
        *,
        owner: str = "",
        idempotency_key: str | None = None,
        max_queued: int | None = None,
    ) -> tuple[Job, bool]:
        """Commit a queued job; returns (job, created). A repeated idempotency key returns the
        job it created first."""
        idempotency_key = idempotency_key or None
        if idempotency_key:
            existing = self._find_idempotent(owner, idempotency_key)
            if existing:
                return existing, False
        job = Job(
            id=uuid.uuid4().hex,
            status=JobStatus.queued,
            model_name=request["model_name"],
            architecture=request["architecture"],
            dataset=request["dataset"],
            request=request,
            epochs=request["epochs"],
            owner=owner,
            idempotency_key=idempotency_key,
        )

        def insert(session: Session) -> None:
            if max_queued is not None:
                self._lock_owner(session, owner)  # count and insert as one, per owner
                queued = self._count_queued(session, owner)
                if queued >= max_queued:
                    raise TooLarge(
                        f"{queued} jobs of this API key are already queued, the limit is "
                        f"{max_queued} (TRAINSERVE_MAX_QUEUED_JOBS); wait for some to finish"
                    )
            session.add(job)

        try:
            self._run(insert)
        except IntegrityError:
            existing = idempotency_key and self._find_idempotent(owner, idempotency_key)
            if not existing:
                raise
            return existing, False
        return job, True

    @staticmethod
    def _lock_owner(session: Session, owner: str) -> None:
        """Serialize the count-then-insert of one owner's jobs until the transaction ends, across
        threads and processes. PostgreSQL: a transaction-scoped advisory lock on the owner.
        SQLite: the database's write lock, taken now by a write that changes nothing (a read
        first would start a deferred transaction that every concurrent submit could pass)."""
        dialect = session.get_bind().dialect.name
        if dialect == "postgresql":
            lock = text("SELECT pg_advisory_xact_lock(hashtext(:owner))")
            session.execute(lock, {"owner": owner})
        elif dialect == "sqlite":
            session.execute(text("UPDATE jobs SET id = id WHERE 0"))

    @staticmethod
    def _count_queued(session: Session, owner: str) -> int:
        stmt = select(func.count()).select_from(Job)
        return session.scalar(stmt.where(Job.status == JobStatus.queued, Job.owner == owner))

    def _find_idempotent(self, owner: str, key: str) -> Job | None:
        stmt = select(Job).where(Job.owner == owner, Job.idempotency_key == key)
        return self._run(lambda s: s.scalar(stmt))

    def get_job(self, job_id: str) -> Job:
        job = self._run(lambda s: s.get(Job, job_id))
        if job is None:
            raise NotFound(f"job '{job_id}' does not exist")
        return job

    def list_jobs(
        self, *, status: str | None, model_name: str | None, limit: int, offset: int
    ) -> tuple[list[Job], int]:
        query = select(Job)
        if status:
            query = query.where(Job.status == status)
        if model_name:
            query = query.where(Job.model_name == model_name)

        def read(session: Session) -> tuple[list[Job], int]:
            total = session.scalar(select(func.count()).select_from(query.subquery()))
            page = query.order_by(Job.created_at.desc(), Job.id).limit(limit).offset(offset)
            return list(session.scalars(page)), total

        return self._run(read)

    def history(self, job_id: str) -> list[dict[str, Any]]:
        self.get_job(job_id)
        stmt = select(JobEvaluation).where(JobEvaluation.job_id == job_id)
        rows = self._run(lambda s: list(s.scalars(stmt.order_by(JobEvaluation.epoch))))
        return [{"epoch": r.epoch, **r.values} for r in rows]

    def cancel(self, job_id: str) -> Job:
        """Queued -> cancelled at once; running -> cancel requested (the worker stops it)."""
        now = utcnow()
        queued = (
            update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.queued)
            .values(status=JobStatus.cancelled, finished_at=now, cancel_requested=True)
        )
        running = (
            update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.running)
            .values(cancel_requested=True)
        )

        def apply(session: Session) -> bool:
            return (session.execute(queued).rowcount or session.execute(running).rowcount) > 0

        changed = self._run(apply)
        job = self.get_job(job_id)
        if not changed:
            raise Conflict(f"job '{job_id}' already ended with status '{job.status}'")
        return job

    def count_jobs(self, status: str) -> int:
        stmt = select(func.count()).select_from(Job).where(Job.status == status)
        return self._run(lambda s: s.scalar(stmt))

    def job_counts(self) -> dict[str, int]:
        """Jobs by status (every status, 0 where none), in one query: for /metrics."""
        stmt = select(Job.status, func.count()).group_by(Job.status)
        counts = {str(status): 0 for status in JobStatus}
        counts.update({str(k): int(v) for k, v in self._run(lambda s: s.execute(stmt).all())})
        return counts

    def heartbeat_ages(self) -> dict[str, float]:
        """Seconds since each running job's last heartbeat, by the store's clock: for /metrics."""
        now = func.clock_timestamp() if self._postgres else None
        if now is not None:
            age = func.extract("epoch", now - Job.heartbeat_at)
            stmt = select(Job.id, age).where(Job.status == JobStatus.running)
            return {i: float(a) for i, a in self._run(lambda s: s.execute(stmt).all())}
        stmt = select(Job.id, Job.heartbeat_at).where(Job.status == JobStatus.running)
        rows = self._run(lambda s: s.execute(stmt).all())
        moment = utcnow()
        return {
            i: (moment - at.replace(tzinfo=at.tzinfo or UTC)).total_seconds()
            for i, at in rows
            if at is not None
        }

    def delete_job(self, job_id: str) -> Job:
        """Remove an ended job and its evaluations; Conflict while it is queued or running.
        Its model version, if any, stays (delete that on its own)."""

        def apply(session: Session) -> Job:
            job = session.get(Job, job_id)
            if job is None:
                raise NotFound(f"job '{job_id}' does not exist")
            if job.status not in TERMINAL:
                raise Conflict(
                    f"job '{job_id}' is {job.status}; cancel it (POST /v1/jobs/{job_id}/cancel) "
                    "and delete it once it has ended"
                )
            session.execute(delete(JobEvaluation).where(JobEvaluation.job_id == job_id))
            session.delete(job)
            return job

        return self._run(apply)
