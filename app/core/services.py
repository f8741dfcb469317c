"""The long-lived pieces one process needs, built once from settings: store, artifacts, queue."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from app.core import migrate
from app.core.artifacts import ArtifactStore, LocalArtifactStore
from app.core.cache import ArtifactCache
from app.core.db import make_engine, make_session_factory
from app.core.queue import JobQueue
from app.core.s3 import S3ArtifactStore
from app.core.settings import Settings
from app.core.store import JobStore

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    store: JobStore
    artifacts: ArtifactStore
    queue: JobQueue
    cache: ArtifactCache | None = None  # downloads from a remote artifact store, by sha256

    def enqueue(self, job_id: str) -> None:
        """Send a committed job's id to the training queue (a wake-up; the store has the job)."""
        self.queue.send(job_id)
        self.store.mark_enqueued([job_id])


def build_services(settings: Settings, upgrade: bool | None = None) -> Services:
    """`upgrade`: apply pending migrations first (None: as `migrate.upgrades_itself` says).
    Either way the database must then be at head, or this raises migrate.DatabaseBehind."""
    settings.make_dirs()
    engine = make_engine(settings.effective_database_url)
    if upgrade is None:
        upgrade = migrate.upgrades_itself(settings)
    if upgrade:
        migrate.upgrade(engine)
    migrate.check_current(engine)
    artifacts = open_artifact_store(
        settings.artifacts_url, settings.data_dir, settings.s3_endpoint_url
    )
    artifacts.retry_seconds = settings.artifacts_retry_seconds
    remote = not isinstance(artifacts, LocalArtifactStore)
    if remote:
        log.info("artifact store: %s", artifacts.name)
    return Services(
        settings=settings,
        store=JobStore(make_session_factory(engine), retry_seconds=settings.db_retry_seconds),
        artifacts=artifacts,
        queue=JobQueue(settings),
        cache=ArtifactCache(settings.cache_dir, settings.artifact_cache_bytes) if remote else None,
    )


def open_artifact_store(
    url: str | None, data_dir: Path, endpoint_url: str | None = None
) -> ArtifactStore:
    """The store of TRAINSERVE_ARTIFACTS_URL: `file:///path`, `s3://bucket/prefix`, or (unset)
    the data dir. S3 credentials come from boto3's standard chain, never from the URL."""
    if not url:
        return LocalArtifactStore(data_dir)
    scheme, _, rest = url.partition("://")
    if scheme == "file":
        return LocalArtifactStore(Path(rest))
    if scheme == "s3":
        bucket, _, prefix = rest.partition("/")
        return S3ArtifactStore(bucket, prefix, endpoint_url=endpoint_url)
    raise ValueError(f"artifact store URL must be file:///path or s3://bucket/prefix, got {url!r}")
