"""The long-lived pieces one process needs, built once from settings: store, artifacts, queue."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from app.core import migrate
from app.core.artifacts import ArtifactStore, LocalArtifactStore
from app.core.db import make_engine, make_session_factory
from app.core.queue import JobQueue
from app.core.settings import Settings
from app.core.store import JobStore

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    store: JobStore
    artifacts: ArtifactStore
    queue: JobQueue

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
    return Services(
        settings=settings,
        store=JobStore(make_session_factory(engine), retry_seconds=settings.db_retry_seconds),
        artifacts=LocalArtifactStore(settings.data_dir),
        queue=JobQueue(settings),
    )
