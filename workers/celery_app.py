"""The one Celery app, configured from Settings: JSON only, late acks, one job at a time.

Redis (or the embedded file broker) carries only wake-ups: a job id. The job store knows
every job, so anything the broker loses can be sent again.
"""

from __future__ import annotations

from celery import Celery

from app.settings import Settings, get_settings

TRAINING_QUEUE = "training"
TRAIN_TASK = "trainserve.train_job"


def make_celery(settings: Settings) -> Celery:
    app = Celery("trainserve", broker=settings.effective_broker_url, include=["workers.tasks"])
    transport_options: dict = {"visibility_timeout": settings.max_job_seconds + 3600}
    if settings.broker_url is None:  # embedded: kombu's filesystem transport under the data dir
        transport_options.update(
            data_folder_in=str(settings.broker_queue_dir),
            data_folder_out=str(settings.broker_queue_dir),
            processed_folder=str(settings.broker_dir / "processed"),
            store_processed=False,
        )
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


celery_app = make_celery(get_settings())
