"""The job store: every read and write of jobs, evaluations, models and uploaded datasets.

The store is the source of truth. State changes are conditional UPDATEs, and a worker's writes
are fenced by the lease token it got when it claimed the job, so a worker that lost its claim
(a second delivery, a reaped job) can no longer change the job.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from datetime import UTC, timedelta
from typing import Any, TypeVar

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from app.core import promotion
from app.core.db import (
    TERMINAL,
    Job,
    JobCheckpoint,
    JobEvaluation,
    JobStatus,
    ModelAlias,
    ModelVersion,
    RegisteredModel,
    RegistryRevision,
    UploadedDataset,
    Worker,
    utcnow,
)
from app.core.errors import Conflict, LeaseLost, NotFound, TooLarge
from app.core.names import shown

T = TypeVar("T")
DEFAULT_ALIAS = "production"  # the version a prediction without `version` gets, when set
log = logging.getLogger(__name__)


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


class JobStore:
    """`retry_seconds`: how long a transaction is retried (with backoff) when the database
    drops or refuses the connection (a restart, a failover); workers wait longer than the API,
    so that an outage never fails a job."""

    def __init__(self, session_factory: sessionmaker, retry_seconds: float = 2.0) -> None:
        self._sessions = session_factory
        self.retry_seconds = retry_seconds
        bind = session_factory.kw.get("bind")
        self._postgres = bind is not None and bind.dialect.name == "postgresql"
        # Called after this store changed models, versions or aliases (another process's
        # changes are seen through registry_revision): the API forgets its resolved versions.
        self.registry_listeners: list[Callable[[], None]] = []

    def _registry_changed(self) -> None:
        for listener in self.registry_listeners:
            listener()

    def _run(self, work: Callable[[Session], T]) -> T:
        delay, deadline = 0.05, time.monotonic() + self.retry_seconds
        while True:
            try:
                with self._sessions.begin() as session:
                    return work(session)
            except (OperationalError, InterfaceError) as exc:
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("job store: %s; retrying in %.2f s", _first_line(exc), delay)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def _now(self) -> Any:
        """The database's clock where hosts share the database (PostgreSQL), so that workers'
        clocks never decide whether a job is alive; SQLite is on one machine, with one clock."""
        return func.clock_timestamp() if self._postgres else utcnow()

    def _ago(self, delta: timedelta) -> Any:
        return func.clock_timestamp() - delta if self._postgres else utcnow() - delta

    # -- jobs, as the API sees them -------------------------------------------------------

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

    # -- jobs, as a worker sees them ------------------------------------------------------

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

    def _fenced(self, job_id: str, lease: int):
        return update(Job).where(
            Job.id == job_id, Job.lease == lease, Job.status == JobStatus.running
        )

    def heartbeat(self, job_id: str, lease: int, epoch: int | None = None) -> bool:
        """Refresh the heartbeat (and progress); returns whether a cancel was asked."""
        values: dict[str, Any] = {"heartbeat_at": self._now()}
        if epoch is not None:
            values["epoch"] = epoch

        def apply(session: Session) -> bool:
            if session.execute(self._fenced(job_id, lease).values(**values)).rowcount == 0:
                raise LeaseLost(job_id)
            return bool(session.scalar(select(Job.cancel_requested).where(Job.id == job_id)))

        return self._run(apply)

    def record_evaluation(self, job_id: str, lease: int, row: dict[str, Any]) -> None:
        """Store one evaluation (replacing a row of the same epoch, as after a resume)."""
        values = {k: v for k, v in row.items() if k != "epoch"}
        epoch = int(row["epoch"])

        def apply(session: Session) -> None:
            fenced = self._fenced(job_id, lease).values(metrics=values, epoch=epoch)
            if session.execute(fenced).rowcount == 0:
                raise LeaseLost(job_id)
            session.execute(
                delete(JobEvaluation).where(
                    JobEvaluation.job_id == job_id, JobEvaluation.epoch == epoch
                )
            )
            session.add(JobEvaluation(job_id=job_id, epoch=epoch, values=values))

        self._run(apply)

    def finish(self, job_id: str, lease: int, status: str, error: str | None = None) -> None:
        stmt = self._fenced(job_id, lease).values(status=status, error=error, finished_at=utcnow())
        self._run(lambda s: s.execute(stmt))

    def requeue(self, job_id: str, lease: int, note: str | None = None) -> str | None:
        """Give a running job back to the queue (worker shutting down, a store down); one whose
        cancel was asked ends `cancelled` instead. `note` is shown as its error meanwhile.
        Returns the new status (None: the lease was lost)."""
        fenced = self._fenced(job_id, lease)
        cancelled = fenced.where(Job.cancel_requested.is_(True)).values(
            status=JobStatus.cancelled, finished_at=utcnow(), worker=None
        )
        queued = fenced.values(status=JobStatus.queued, worker=None, error=note)

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
        started = self.get_job(job_id).started_at
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

    # -- training checkpoints -------------------------------------------------------------

    def record_checkpoint(
        self, job_id: str, lease: int, epoch: int, sha256: str, size: int, keep: int
    ) -> list[int]:
        """Record a checkpoint the worker holding `lease` stored; returns the epochs of older
        ones beyond the newest `keep`, whose rows are gone (the caller deletes their objects)."""

        def apply(session: Session) -> list[int]:
            fenced = self._fenced(job_id, lease).values(heartbeat_at=self._now())
            if session.execute(fenced).rowcount == 0:
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

    # -- models ---------------------------------------------------------------------------

    def publish_version(
        self,
        job_id: str,
        lease: int,
        version_fields: dict[str, Any],
        write_weights: Callable[[int], tuple[str, int]],
        promote: dict[str, Any] | None = None,
    ) -> int:
        """Add the next version of a model and mark the job succeeded, in one transaction.

        `write_weights(version)` stores the file and returns (sha256, size); it runs while the
        model row is locked, so the file exists before any reader can see the version. The
        model takes the task and architecture of its newest version (a retrain may change them).
        Version numbers are never given twice (`versions_assigned`), even after deletions.
        `promote` (the request's rule) is decided and applied in the same transaction, and the
        decision recorded on the job (`promotion`).
        """
        name, task, architecture = (
            version_fields[k] for k in ("model_name", "task", "architecture")
        )
        self._ensure_model(name, task, architecture)

        def apply(session: Session) -> int:
            bump = (
                update(RegisteredModel)
                .where(RegisteredModel.name == name)
                .values(
                    versions_assigned=RegisteredModel.versions_assigned + 1,
                    latest_version=RegisteredModel.versions_assigned + 1,
                    task=task,
                    architecture=architecture,
                )
                .returning(RegisteredModel.versions_assigned)
            )
            version = session.execute(bump).scalar_one()
            sha256, size = write_weights(version)
            session.add(
                ModelVersion(
                    version=version, job_id=job_id, sha256=sha256, size_bytes=size, **version_fields
                )
            )
            session.flush()
            decision = None
            if promote:
                decision = self._promote(session, name, version, version_fields["metrics"], promote)
            done = self._fenced(job_id, lease).values(
                status=JobStatus.succeeded,
                finished_at=utcnow(),
                model_version=version,
                error=None,
                promotion=decision,
            )
            if session.execute(done).rowcount == 0:
                raise LeaseLost(job_id)
            return version

        version = self._run(apply)
        self._registry_changed()
        return version

    def _promote(
        self, session: Session, name: str, version: int, metrics: dict[str, Any], rule: dict
    ) -> dict[str, Any]:
        alias = rule["alias"]
        named = select(ModelAlias.version).where(
            ModelAlias.model_name == name, ModelAlias.alias == alias
        )
        current = session.scalar(named)
        current_metrics = None
        if current is not None:
            row = session.get(ModelVersion, (name, current))
            current_metrics = row.metrics if row is not None else None
        decision = promotion.decide(rule, version, metrics, current, current_metrics)
        if decision["moved"]:
            self._upsert_alias(session, name, alias, version)
        log.info("promotion of %s v%d: %s", name, version, decision["reason"])
        return decision

    @staticmethod
    def _upsert_alias(session: Session, name: str, alias: str, version: int) -> None:
        dialect = session.get_bind().dialect.name
        insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
        upsert = insert(ModelAlias).values(model_name=name, alias=alias, version=version)
        session.execute(
            upsert.on_conflict_do_update(
                index_elements=[ModelAlias.model_name, ModelAlias.alias],
                set_={"version": version},
            )
        )

    def _ensure_model(self, name: str, task: str, architecture: str) -> None:
        """The model's row, created with no version when missing (the version bump sets its
        task and architecture, so an existing row is left as it is here)."""
        if self._run(lambda s: s.get(RegisteredModel, name)) is not None:
            return
        # Another job may create it at the same moment: then the row exists, all we need.
        with contextlib.suppress(IntegrityError):
            self._run(
                lambda s: s.add(RegisteredModel(name=name, task=task, architecture=architecture))
            )

    def list_models(self) -> list[RegisteredModel]:
        stmt = (
            select(RegisteredModel)
            .where(RegisteredModel.latest_version > 0)
            .order_by(RegisteredModel.name)
        )
        return self._run(lambda s: list(s.scalars(stmt)))

    def get_model(self, name: str) -> tuple[RegisteredModel, list[ModelVersion]]:
        def read(session: Session):
            model = session.get(RegisteredModel, name)
            if model is None or model.latest_version == 0:
                raise NotFound(f"model '{name}' does not exist")
            stmt = select(ModelVersion).where(ModelVersion.model_name == name)
            return model, list(session.scalars(stmt.order_by(ModelVersion.version)))

        return self._run(read)

    def get_version(self, name: str, version: int | None) -> ModelVersion:
        """One version (None: the latest), read by its key: not every version of the model."""

        def read(session: Session) -> ModelVersion:
            model = self._registered(session, name)
            wanted = model.latest_version if version is None else version
            row = session.get(ModelVersion, (name, wanted))
            if row is None:
                stmt = select(ModelVersion.version).where(ModelVersion.model_name == name)
                stmt = stmt.order_by(ModelVersion.version)
                known = ", ".join(str(v) for v in session.scalars(stmt))
                raise NotFound(f"model '{name}' has no version {wanted}; versions: {known}")
            return row

        return self._run(read)

    def registry_revision(self) -> int:
        """A number that changes whenever models, versions or aliases change, by any process
        (bumped by database triggers, migration 0005): cached lookups compare it."""
        stmt = select(RegistryRevision.revision).where(RegistryRevision.id == 1)
        return self._run(lambda s: s.scalar(stmt)) or 0

    # -- aliases: user-chosen names of versions (`production`) ----------------------------

    def aliases(self, name: str) -> dict[str, int]:
        """The model's aliases and the version each names, by alias."""
        stmt = (
            select(ModelAlias.alias, ModelAlias.version)
            .where(ModelAlias.model_name == name)
            .order_by(ModelAlias.alias)
        )
        return self._run(lambda s: {alias: version for alias, version in s.execute(stmt)})

    def set_alias(self, name: str, alias: str, version: int) -> None:
        """Point `alias` at `version` of model `name`: made, or moved from the version it named.

        One upsert, so that concurrent calls leave the alias at one of their versions (the last
        to commit). The version is checked in the same transaction, and a foreign key to it
        makes an alias of a version that does not exist impossible whatever the caller."""

        def apply(session: Session) -> None:
            model = self._registered(session, name)
            found = select(ModelVersion.version).where(
                ModelVersion.model_name == name, ModelVersion.version == version
            )
            if session.scalar(found) is None:
                raise NotFound(
                    f"model '{name}' has no version {version}; its versions are 1 to "
                    f"{model.latest_version}"
                )
            self._upsert_alias(session, name, alias, version)

        self._run(apply)
        self._registry_changed()

    def delete_alias(self, name: str, alias: str) -> None:
        """Remove the alias; NotFound naming the model's aliases when it has no such alias."""

        def apply(session: Session) -> None:
            self._registered(session, name)
            stmt = delete(ModelAlias).where(
                ModelAlias.model_name == name, ModelAlias.alias == alias
            )
            if session.execute(stmt).rowcount == 0:
                raise NotFound(self._no_alias(session, name, alias))

        self._run(apply)
        self._registry_changed()

    def resolve_version(self, name: str, ref: int | str | None) -> ModelVersion:
        """The version that `ref` names: a version number, an alias, or None: the version of
        the alias DEFAULT_ALIAS (`production`) when the model has it, else the latest. Read in
        one transaction, so an alias moved meanwhile gives its old or its new version."""

        def read(session: Session) -> ModelVersion:
            model = self._registered(session, name)
            if isinstance(ref, int):
                version = ref
            else:
                aliased = select(ModelAlias.version).where(
                    ModelAlias.model_name == name, ModelAlias.alias == (ref or DEFAULT_ALIAS)
                )
                version = session.scalar(aliased)
                if version is None and ref is not None:
                    raise NotFound(self._no_alias(session, name, ref))
                if version is None:
                    version = model.latest_version
            row = session.get(ModelVersion, (name, version))
            if row is None:
                raise NotFound(
                    f"model '{name}' has no version {version}; its versions are 1 to "
                    f"{model.latest_version}"
                )
            return row

        return self._run(read)

    @staticmethod
    def _registered(session: Session, name: str) -> RegisteredModel:
        model = session.get(RegisteredModel, name)
        if model is None or model.latest_version == 0:
            raise NotFound(f"model '{name}' does not exist")
        return model

    @staticmethod
    def _no_alias(session: Session, name: str, alias: str) -> str:
        stmt = select(ModelAlias.alias).where(ModelAlias.model_name == name)
        known = ", ".join(sorted(session.scalars(stmt))) or "none"
        return f"model '{name}' has no alias {shown(alias)}; its aliases: {known}"

    # -- deletion: rows first, in one transaction; files after (cleanup.sweep finishes) ----

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

    def delete_version(self, name: str, version: int, force: bool = False) -> list[str]:
        """Remove one version's row; Conflict while aliases name it, unless `force`, which
        removes those aliases too (returned). Its number is never given again."""

        def apply(session: Session) -> list[str]:
            model = self._registered(session, name)
            if session.get(ModelVersion, (name, version)) is None:
                known = ", ".join(map(str, self._version_numbers(session, name)))
                raise NotFound(f"model '{name}' has no version {version}; its versions: {known}")
            aliased = select(ModelAlias.alias).where(
                ModelAlias.model_name == name, ModelAlias.version == version
            )
            aliases = sorted(session.scalars(aliased))
            if aliases and not force:
                raise Conflict(
                    f"version {version} of model '{name}' is named by alias(es) "
                    f"{', '.join(aliases)}: move or delete them first, or delete with "
                    "?force=true (which removes them too)"
                )
            session.execute(
                delete(ModelAlias).where(
                    ModelAlias.model_name == name, ModelAlias.version == version
                )
            )
            session.execute(
                delete(ModelVersion).where(
                    ModelVersion.model_name == name, ModelVersion.version == version
                )
            )
            remaining = self._version_numbers(session, name)
            model.latest_version = remaining[-1] if remaining else 0
            return aliases

        removed = self._run(apply)
        self._registry_changed()
        return removed

    def delete_model(self, name: str) -> list[int]:
        """Remove every version and alias of a model (returns the version numbers). The name's
        row stays, with no version (so the model is gone), keeping the numbers already given."""

        def apply(session: Session) -> list[int]:
            model = self._registered(session, name)
            versions = self._version_numbers(session, name)
            session.execute(delete(ModelAlias).where(ModelAlias.model_name == name))
            session.execute(delete(ModelVersion).where(ModelVersion.model_name == name))
            model.latest_version = 0
            return versions

        removed = self._run(apply)
        self._registry_changed()
        return removed

    @staticmethod
    def _version_numbers(session: Session, name: str) -> list[int]:
        stmt = select(ModelVersion.version).where(ModelVersion.model_name == name)
        return list(session.scalars(stmt.order_by(ModelVersion.version)))

    def version_files_state(self) -> dict[str, tuple[int, set[int]]]:
        """Per model name: (the highest number ever given, the versions that exist). A weights
        file of a number at most the first and not in the second belongs to no version."""

        def read(session: Session) -> dict[str, tuple[int, set[int]]]:
            state = {
                name: (assigned, set())
                for name, assigned in session.execute(
                    select(RegisteredModel.name, RegisteredModel.versions_assigned)
                )
            }
            for name, version in session.execute(
                select(ModelVersion.model_name, ModelVersion.version)
            ):
                state.setdefault(name, (version, set()))[1].add(version)
            return state

        return self._run(read)

    def delete_dataset(self, name: str) -> tuple[UploadedDataset, bool]:
        """Remove an uploaded dataset's row; Conflict while a queued or running job uses it.
        Returns the row and whether another dataset still holds the same content."""

        def apply(session: Session) -> tuple[UploadedDataset, bool]:
            row = session.get(UploadedDataset, name)
            if row is None:
                raise NotFound(f"uploaded dataset '{name}' does not exist")
            users = select(Job.id).where(
                Job.dataset == name, Job.status.in_([JobStatus.queued, JobStatus.running])
            )
            using = list(session.scalars(users.limit(5)))
            if using:
                raise Conflict(
                    f"dataset '{name}' is used by queued or running job(s) {', '.join(using)}; "
                    "delete it once they have ended (or cancel them)"
                )
            session.delete(row)
            session.flush()
            shared = select(func.count()).select_from(UploadedDataset)
            still = session.scalar(shared.where(UploadedDataset.sha256 == row.sha256)) > 0
            return row, still

        return self._run(apply)

    def dataset_hashes(self) -> set[str]:
        return set(self._run(lambda s: list(s.scalars(select(UploadedDataset.sha256)))))

    # -- workers: what each can train on --------------------------------------------------

    def announce_worker(self, name: str, device: str, count: int, names: list[str]) -> None:
        """Record (or refresh) a starting worker and its devices."""

        def apply(session: Session) -> None:
            session.execute(delete(Worker).where(Worker.name == name))
            session.add(
                Worker(
                    name=name,
                    device=device,
                    device_count=count,
                    device_names=names,
                    started_at=self._now(),
                    heartbeat_at=self._now(),
                )
            )

        self._run(apply)

    def worker_heartbeat(self, name: str) -> bool:
        """Refresh a worker's heartbeat; False when its row is gone (announce again)."""
        stmt = update(Worker).where(Worker.name == name).values(heartbeat_at=self._now())
        return bool(self._run(lambda s: s.execute(stmt).rowcount))

    def remove_worker(self, name: str) -> None:
        self._run(lambda s: s.execute(delete(Worker).where(Worker.name == name)))

    def live_workers(self, max_age: timedelta) -> list[Worker]:
        """Workers whose heartbeat is younger than `max_age`, by name."""
        stmt = select(Worker).where(Worker.heartbeat_at >= self._ago(max_age))
        return self._run(lambda s: list(s.scalars(stmt.order_by(Worker.name))))

    def forget_workers(self, older_than: timedelta) -> int:
        stmt = delete(Worker).where(Worker.heartbeat_at < self._ago(older_than))
        return self._run(lambda s: s.execute(stmt).rowcount)

    def mark_corrupt(self, name: str, version: int) -> None:
        stmt = (
            update(ModelVersion)
            .where(ModelVersion.model_name == name, ModelVersion.version == version)
            .values(corrupt=True)
        )
        self._run(lambda s: s.execute(stmt))
        self._registry_changed()

    # -- uploaded datasets ----------------------------------------------------------------

    def add_dataset(self, row: UploadedDataset) -> UploadedDataset:
        try:
            self._run(lambda s: s.add(row))
        except IntegrityError:
            raise Conflict(f"dataset '{row.name}' already exists; choose another name") from None
        return row

    def dataset_uses(self, sha256: str) -> int:
        """How many uploaded datasets hold the content of this hash."""
        stmt = (
            select(func.count())
            .select_from(UploadedDataset)
            .where(UploadedDataset.sha256 == sha256)
        )
        return self._run(lambda s: s.scalar(stmt))

    def get_dataset(self, name: str) -> UploadedDataset | None:
        return self._run(lambda s: s.get(UploadedDataset, name))

    def list_datasets(self) -> list[UploadedDataset]:
        stmt = select(UploadedDataset).order_by(UploadedDataset.name)
        return self._run(lambda s: list(s.scalars(stmt)))
