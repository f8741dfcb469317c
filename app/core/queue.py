"""The queue client: sends a committed job's id to the training queue, by task name.

Redis (or the embedded file broker) carries only wake-ups: a job id. The job store knows every
job, so anything the broker loses can be sent again. The Celery configuration lives here, once:
the API sends with it, and the worker's app (workers/celery_app.py) is built from it.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Sequence
from contextlib import suppress
from functools import cached_property

from celery import Celery
from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.json import dumps

from app.core.settings import Settings

TRAINING_QUEUE = "training"
TRAIN_TASK = "trainserve.train_job"
BROKER_TIMEOUT_S = 2.0


class _FileChannel(filesystem.Channel):
    def _put(self, queue, payload, **kwargs):
        """kombu writes a message file in place, so a worker that lists the folder between the
        file's creation and its write reads it empty (a JSON error; the message is lost): the
        shorter the poll interval, the likelier. Written under a name no queue matches, then
        renamed into place, a message appears whole or not at all."""
        name = f"{round(time.monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        temp = os.path.join(self.data_folder_out, f".{uuid.uuid4().hex}.tmp")
        try:
            with open(temp, "wb") as file:
                file.write(dumps(payload).encode())
            os.replace(temp, final)
        except OSError as exc:
            with suppress(OSError):
                os.unlink(temp)
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc


class FileTransport(filesystem.Transport):
    """kombu's filesystem transport, with messages that appear atomically (see _FileChannel)."""

    Channel = _FileChannel


def make_celery(settings: Settings, include: Sequence[str] = ()) -> Celery:
    """A Celery app for `settings`: JSON only, late acks, one job at a time per worker."""
    app = Celery("trainserve", broker=settings.effective_broker_url, include=list(include))
    transport_options: dict = {"visibility_timeout": settings.max_job_seconds + 3600}
    if settings.broker_url is None:  # embedded: kombu's filesystem transport under the data dir
        # It has no wake-up: an idle worker lists the queue folder, then sleeps this long
        # (kombu's default is 1 s; Celery's loop adds no delay of its own). See
        # docs/benchmarks.md, "Dispatch on the embedded default", for the chosen value.
        transport_options.update(
            polling_interval=settings.broker_poll_seconds,
            data_folder_in=str(settings.broker_queue_dir),
            data_folder_out=str(settings.broker_queue_dir),
            control_folder=str(settings.broker_control_dir),
            processed_folder=str(settings.broker_dir / "processed"),
            store_processed=False,
        )
        app.conf.broker_transport = FileTransport
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        event_serializer="json",
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        task_default_queue=TRAINING_QUEUE,
        task_ignore_result=True,
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    return app


class JobQueue:
    """Sends job ids to the workers; knows nothing of the tasks' code (they run elsewhere)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @cached_property
    def celery(self) -> Celery:
        return make_celery(self.settings)

    def send(self, job_id: str) -> None:
        self.celery.send_task(TRAIN_TASK, args=[job_id], queue=TRAINING_QUEUE)

    def waiting(self) -> int:
        """Messages waiting in the training queue (0 when the queue does not exist)."""
        with self.celery.connection_for_write() as connection:
            try:
                return connection.default_channel.queue_declare(
                    queue=TRAINING_QUEUE, passive=True
                ).message_count
            except connection.channel_errors:
                return 0

    def check(self) -> None:
        """Raise when the broker does not answer within BROKER_TIMEOUT_S."""
        with self.celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, timeout=BROKER_TIMEOUT_S)
