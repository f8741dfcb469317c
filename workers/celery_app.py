"""The one Celery app of the workers, configured from Settings by app.core.queue."""

from __future__ import annotations

from app.core.queue import make_celery
from app.core.settings import get_settings

celery_app = make_celery(get_settings(), include=["workers.tasks"])
