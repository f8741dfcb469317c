"""Job store tables (SQLAlchemy 2), job statuses, and the engine: SQLite by default, PostgreSQL
by URL. The schema changes only through migrations (app/core/migrations)."""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker


def utcnow() -> datetime:
    return datetime.now(UTC)


class JobStatus(StrEnum):
    """queued -> running -> succeeded | failed | cancelled (and queued -> cancelled)."""

    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


TERMINAL = (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: DateTime(timezone=True)}


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    model_name: Mapped[str] = mapped_column(String(64), index=True)
    architecture: Mapped[str] = mapped_column(String(64))
    dataset: Mapped[str] = mapped_column(String(64))
    request: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    epoch: Mapped[int] = mapped_column(default=0)
    epochs: Mapped[int]
    metrics: Mapped[dict[str, Any] | None]
    error: Mapped[str | None] = mapped_column(Text)
    model_version: Mapped[int | None]
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    worker: Mapped[str | None] = mapped_column(String(255))
    heartbeat_at: Mapped[datetime | None]
    enqueued_at: Mapped[datetime | None]  # last time its id was sent to the queue
    attempts: Mapped[int] = mapped_column(default=0)
    lease: Mapped[int] = mapped_column(default=0)  # fencing token: bumped by every claim
    owner: Mapped[str] = mapped_column(String(64), default="")  # hash of the submitting key
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    promotion: Mapped[dict[str, Any] | None]  # what the request's promotion rule decided

    __table_args__ = (UniqueConstraint("owner", "idempotency_key", name="uq_jobs_idempotency"),)


class JobEvaluation(Base):
    """One row per evaluation of a job (every eval_every epochs and the last one)."""

    __tablename__ = "job_evaluations"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    epoch: Mapped[int] = mapped_column(Integer, primary_key=True)
    values: Mapped[dict[str, Any]]


class JobCheckpoint(Base):
    """One training checkpoint of a running job, in the artifact store under
    `checkpoint_key(job_id, epoch)`; its sha256 is checked before a resume uses it."""

    __tablename__ = "job_checkpoints"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    epoch: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class RegisteredModel(Base):
    """A name in the model registry; its versions are ModelVersion rows."""

    __tablename__ = "models"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    task: Mapped[str] = mapped_column(String(16))
    architecture: Mapped[str] = mapped_column(String(64))
    latest_version: Mapped[int] = mapped_column(default=0)  # 0: no version (left)
    # the highest number ever given: deleted versions' numbers are never given again
    versions_assigned: Mapped[int] = mapped_column(default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ModelVersion(Base):
    __tablename__ = "model_versions"

    model_name: Mapped[str] = mapped_column(ForeignKey("models.name"), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[str] = mapped_column(String(32))
    task: Mapped[str] = mapped_column(String(16))
    architecture: Mapped[str] = mapped_column(String(64))
    input_shape: Mapped[list[Any]]
    classes: Mapped[list[Any] | None]
    metrics: Mapped[dict[str, Any]]
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    corrupt: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ModelAlias(Base):
    """A name for one version of a model (`production`, `staging`), set and moved by users.
    Its version must exist (a foreign key to model_versions)."""

    __tablename__ = "model_aliases"

    model_name: Mapped[str] = mapped_column(ForeignKey("models.name"), primary_key=True)
    alias: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)

    __table_args__ = (
        ForeignKeyConstraint(
            ["model_name", "version"], ["model_versions.model_name", "model_versions.version"]
        ),
    )


class RegistryRevision(Base):
    """One row whose `revision` is bumped by database triggers on every insert, update and
    delete of models, model_versions and model_aliases (migration 0005), whichever process
    or code made it: an API process compares it to what it cached to know the registry moved."""

    __tablename__ = "registry_revision"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    revision: Mapped[int] = mapped_column(BigInteger)


class UploadedDataset(Base):
    __tablename__ = "datasets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    task: Mapped[str] = mapped_column(String(16))
    n_samples: Mapped[int]
    input_shape: Mapped[list[Any]]
    n_classes: Mapped[int | None]
    classes: Mapped[list[Any] | None]
    feature_names: Mapped[list[Any] | None]
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Worker(Base):
    """A worker process and what it can train on, refreshed by its heartbeat."""

    __tablename__ = "workers"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    device: Mapped[str] = mapped_column(String(16))  # "cuda" or "cpu"
    device_count: Mapped[int]
    device_names: Mapped[list[Any]]
    started_at: Mapped[datetime]
    heartbeat_at: Mapped[datetime]


def make_engine(url: str) -> Engine:
    """An engine for `url`: psycopg 3 for postgresql:// URLs, WAL and a busy timeout for SQLite."""
    if url.startswith(("postgresql://", "postgres://")):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    options = f"-c idle_in_transaction_session_timeout={int(PG_IDLE_IN_TRANSACTION_S * 1000)}"
    return create_engine(url, pool_pre_ping=True, connect_args={"options": options})


# The store's transactions are short and never wait on anything outside the database, so a
# session idle inside one this long belongs to a frozen process (a stopped or hung worker):
# PostgreSQL ends it, and the row locks it held stop blocking the API (a cancel, a delete).
PG_IDLE_IN_TRANSACTION_S = 5.0

SQLITE_BUSY_S = 30.0


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    """WAL (readers never wait for the writer), foreign keys, and a busy timeout. Switching to
    WAL needs the database to itself and is not covered by the busy timeout: it is done only
    when the file is not in WAL yet (once per database), retried while another process holds
    a lock (a migration in progress, say)."""
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_S * 1000)}")
    cursor.execute("PRAGMA foreign_keys=ON")
    deadline = time.monotonic() + SQLITE_BUSY_S
    while cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    cursor.close()


def make_session_factory(engine: Engine) -> sessionmaker:
    """Sessions on `engine`; the tables come from migrations (app.core.migrate), not from here."""
    return sessionmaker(engine, expire_on_commit=False)
