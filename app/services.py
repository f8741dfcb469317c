"""The long-lived pieces one process needs, built once from settings: store, weights, queue."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from celery import Celery

from app.db import make_engine, make_session_factory
from app.names import check_slug
from app.settings import Settings
from app.store import JobStore
from app.weights import LocalWeightStore, WeightStore
from workers.celery_app import TRAIN_TASK, TRAINING_QUEUE, make_celery

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    store: JobStore
    weights: WeightStore

    @cached_property
    def celery(self) -> Celery:
        return make_celery(self.settings)

    def enqueue(self, job_id: str) -> None:
        """Send a committed job's id to the training queue (a wake-up; the store has the job)."""
        self.celery.send_task(TRAIN_TASK, args=[job_id], queue=TRAINING_QUEUE)
        self.store.mark_enqueued([job_id])

    def queued_messages(self) -> int:
        """Messages waiting in the training queue (0 when the queue does not exist)."""
        with self.celery.connection_for_write() as connection:
            try:
                return connection.default_channel.queue_declare(
                    queue=TRAINING_QUEUE, passive=True
                ).message_count
            except connection.channel_errors:
                return 0

    def dataset_path(self, name: str) -> Path:
        """Where an uploaded dataset (validated slug) is kept, as NPZ."""
        return self.settings.uploads_dir / f"{check_slug(name, 'dataset name')}.npz"

    def checkpoint_dir(self, job_id: str) -> Path:
        return self.settings.checkpoints_dir / job_id


def build_services(settings: Settings) -> Services:
    settings.make_dirs()
    engine = make_engine(settings.effective_database_url)
    store = JobStore(make_session_factory(engine))
    return Services(settings=settings, store=store, weights=LocalWeightStore(settings.weights_dir))
