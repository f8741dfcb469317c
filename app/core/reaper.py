"""The API process's background duty: no job is lost when a worker or the broker is.

- A running job whose heartbeat is older than `heartbeat_timeout_seconds` lost its worker
  (killed, host gone): it goes back to the queue and resumes from its last checkpoint on the
  next worker, until `max_attempts` runs have been used; then it fails with a message. One
  whose cancel was asked ends `cancelled`. Heartbeats and deadlines use the store's clock.
- A queued job is only a row plus a wake-up message. When the broker holds fewer messages than
  there are queued jobs (Redis restarted or flushed), jobs waiting longer than
  `resend_after_seconds` are sent again. A duplicate is harmless: only one claim succeeds.

Several API processes may each run a reaper; every change is a fenced conditional UPDATE.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from app.core import metrics
from app.core.cleanup import remove_checkpoints, sweep
from app.core.db import JobStatus
from app.core.services import Services

log = logging.getLogger(__name__)

SWEEP_EVERY_ROUNDS = 60  # and at start: leftovers of crashed writers (app/core/cleanup.py)


class Reaper:
    def __init__(self, services: Services) -> None:
        self.services = services
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="reaper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        interval = self.services.settings.reaper_interval_seconds
        rounds = 0
        while True:
            try:
                if rounds % SWEEP_EVERY_ROUNDS == 0:
                    sweep(self.services)
                self.run_once()
            except Exception as exc:  # store or broker down: try again next round
                log.warning("reaper round failed: %s", exc)
            rounds += 1
            if self._stop.wait(interval):
                return

    def run_once(self) -> dict[str, int]:
        counts = {"requeued": self._reap_stale(), "resent": self._resend_lost()}
        if any(counts.values()):
            log.info("reaper: %s", counts)
        return counts

    def _reap_stale(self) -> int:
        settings, store = self.services.settings, self.services.store
        timeout = timedelta(seconds=settings.heartbeat_timeout_seconds)
        requeued = 0
        for job in store.stale_running(timeout):
            status = store.reap(job, timeout, settings.max_attempts)
            log.warning("job %s: worker %s stopped beating; now %s", job.id, job.worker, status)
            if status in (JobStatus.failed, JobStatus.cancelled):
                remove_checkpoints(self.services, job.id)
                metrics.job_finished(status, None, reason="attempts_exhausted")
            if status == JobStatus.queued:
                self.services.enqueue(job.id)
                requeued += 1
        return requeued

    def _resend_lost(self) -> int:
        settings, store = self.services.settings, self.services.store
        waiting = store.waiting_since(timedelta(seconds=settings.resend_after_seconds))
        if not waiting or self.services.queue.waiting() >= store.count_jobs(JobStatus.queued):
            return 0
        for job_id in waiting:
            self.services.enqueue(job_id)
        return len(waiting)
