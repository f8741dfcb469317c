"""Jobs, as a worker and the reaper see them: a claim gives a lease token, and every write of
the worker holding it is fenced on it (`fenced`), so a worker that lost its claim (a second
delivery, a reaped job) can no longer change the job. Heartbeats, evaluations, the outcome,
giving a job back, and what the reaper reads and re-sends."""

from __future__ import annotations

from datetime import UTC, timedelta
from typing import Any

from sqlalchemy import Update, delete, func, select, update
from sqlalchemy.orm import Session

from app.core.db import Job, JobEvaluation, JobStatus, utcnow
from app.core.errors import LeaseLost
from app.core.store.base import StoreBase


def fenced(job_id: str, lease: int) -> Update:
    """An UPDATE of the job that changes nothing unless it is running under this lease."""
    return update(Job).where(Job.id == job_id, Job.lease == lease, Job.status == JobStatus.running)


class LeasesMixin(StoreBase):
    def claim(self, job_id: str, worker: str) -> int | None:
        """Take a queued job: mark it running and return a new lease token, else None."""
        now = self._now()
        stmt = (
            update(Job)
            .where(
                Job.id == job_id, Job.status == JobStatus.queued, Job.cancel_requested.is_(False)
            )
            .values(
                status=JobStatus.running,
                worker=worker,
                heartbeat_at=now,
                started_at=func.coalesce(Job.started_at, now),
                attempts=Job.attempts + 1,
                lease=Job.lease + 1,
                error=None,  # a note left while it waited (runner: the artifact store down)
            )
        )

        def apply(session: Session) -> int | None:
            if session.execute(stmt).rowcount == 0:
                return None
            return session.scalar(select(Job.lease).where(Job.id == job_id))

        return self._run(apply)

    def heartbeat(self, job_id: str, lease: int, epoch: int | None = None) -> bool:
        """Refresh the heartbeat (and progress); returns whether a cancel was asked."""
        values: dict[str, Any] = {"heartbeat_at": self._now()}
        if epoch is not None:
            values["epoch"] = epoch

        def apply(session: Session) -> bool:
            if session.execute(fenced(job_id, lease).values(**values)).rowcount == 0:
                raise LeaseLost(job_id)
            return bool(session.scalar(select(Job.cancel_requested).where(Job.id == job_id)))

        return self._run(apply)

    def record_evaluation(self, job_id: str, lease: int, row: dict[str, Any]) -> None:
        """Store one evaluation (replacing a row of the same epoch, as after a resume)."""
        values = {k: v for k, v in row.items() if k != "epoch"}
        epoch = int(row["epoch"])

        def apply(session: Session) -> None:
            mine = fenced(job_id, lease).values(metrics=values, epoch=epoch)
            if session.execute(mine).rowcount == 0:
                raise LeaseLost(job_id)
            session.execute(
                delete(JobEvaluation).where(
                    JobEvaluation.job_id == job_id, JobEvaluation.epoch == epoch
                )
            )
            session.add(JobEvaluation(job_id=job_id, epoch=epoch, values=values))

        self._run(apply)

    def finish(self, job_id: str, lease: int, status: str, error: str | None = None) -> None:
        stmt = fenced(job_id, lease).values(status=status, error=error, finished_at=utcnow())
        self._run(lambda s: s.execute(stmt))

    def requeue(self, job_id: str, lease: int, note: str | None = None) -> str | None:
        """Give a running job back to the queue (worker shutting down, a store down); one whose
        cancel was asked ends `cancelled` instead. `note` is shown as its error meanwhile.
        Returns the new status (None: the lease was lost)."""
        held = fenced(job_id, lease)
        cancelled = held.where(Job.cancel_requested.is_(True)).values(
            status=JobStatus.cancelled, finished_at=utcnow(), worker=None
        )
        queued = held.values(status=JobStatus.queued, worker=None, error=note)

        def apply(session: Session) -> str | None:
            if session.execute(cancelled).rowcount:
                return JobStatus.cancelled
            return JobStatus.queued if session.execute(queued).rowcount else None

        return self._run(apply)

    def running_seconds(self, job_id: str) -> float:
        """Seconds since the job first started (over all its attempts), by the store's clock."""
        if self._postgres:
            stmt = select(func.extract("epoch", func.clock_timestamp() - Job.started_at))
            return float(self._run(lambda s: s.scalar(stmt.where(Job.id == job_id))) or 0.0)
        started = self.get_job(job_id).started_at  # JobsMixin
        if started is None:
            return 0.0
        return (utcnow() - started.replace(tzinfo=started.tzinfo or UTC)).total_seconds()

    def stale_running(self, older_than: timedelta) -> list[Job]:
        cutoff = self._ago(older_than)
        stmt = select(Job).where(Job.status == JobStatus.running, Job.heartbeat_at < cutoff)
        return self._run(lambda s: list(s.scalars(stmt)))

    def statuses(self, job_ids: list[str]) -> dict[str, str]:
        """The status of each of these jobs that exists."""
        stmt = select(Job.id, Job.status).where(Job.id.in_(job_ids))
        return self._run(lambda s: {job_id: status for job_id, status in s.execute(stmt)})

    def mark_enqueued(self, job_ids: list[str]) -> None:
        stmt = update(Job).where(Job.id.in_(job_ids)).values(enqueued_at=self._now())
        self._run(lambda s: s.execute(stmt))

    def waiting_since(self, older_than: timedelta) -> list[str]:
        """Queued jobs last sent to the queue before `older_than` ago, oldest first."""
        cutoff = self._ago(older_than)
        stmt = (
            select(Job.id)
            .where(Job.status == JobStatus.queued, Job.enqueued_at < cutoff)
            .order_by(Job.created_at)
        )
        return self._run(lambda s: list(s.scalars(stmt)))

    def reap(self, job: Job, older_than: timedelta, max_attempts: int) -> str | None:
        """A running job whose worker stopped beating: back to the queue, or failed once it
        has used its attempts; a job whose cancel was asked ends `cancelled`. Fenced on its
        lease and stale heartbeat, so that two reapers, or a worker that comes back to life,
        cannot both act. Returns the new status."""
        cutoff = self._ago(older_than)
        stale = update(Job).where(
            Job.id == job.id,
            Job.lease == job.lease,
            Job.status == JobStatus.running,
            Job.heartbeat_at < cutoff,
        )
        if job.cancel_requested:
            values = {"status": JobStatus.cancelled, "finished_at": utcnow(), "worker": None}
        elif job.attempts >= max_attempts:
            error = (
                f"the worker running this job stopped answering {job.attempts} times "
                f"(last on {job.worker}); it was not retried again. The job may exhaust the "
                "worker's memory: try a smaller batch_size or architecture"
            )
            values = {"status": JobStatus.failed, "error": error, "finished_at": utcnow()}
        else:
            values = {"status": JobStatus.queued, "worker": None}
        changed = self._run(lambda s: s.execute(stale.values(**values)).rowcount)
        return values["status"] if changed else None
