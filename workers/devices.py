"""A worker tells the job store what it can train on (device kind and count), and keeps that
fresh with a heartbeat, so the API refuses a `cuda` job no live worker could run.

Announced on Celery's `worker_ready` (workers/tasks.py), refreshed every `heartbeat_seconds`
from a daemon thread (also while a job blocks the solo pool), removed when the worker stops.
A worker killed outright leaves its row, which stops counting once its heartbeat is older than
`worker_stale_seconds` (and is forgotten by the next announcement after ten times that).
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

import torch

from app.core.store import JobStore

log = logging.getLogger(__name__)


def local_devices() -> tuple[str, int, list[str]]:
    """(kind, count, names) of what this process can train on: CUDA devices, else the CPU."""
    if torch.cuda.is_available() and torch.cuda.device_count() > 0:
        count = torch.cuda.device_count()
        return "cuda", count, [torch.cuda.get_device_name(i) for i in range(count)]
    return "cpu", 1, ["cpu"]


class DeviceAnnouncer:
    """Announces worker `name` now and refreshes its row every `interval` seconds until
    stopped (which removes the row: a stopping worker takes no more jobs)."""

    def __init__(self, store: JobStore, name: str, interval: float, stale_after: float) -> None:
        self.store, self.name = store, name
        self.interval, self.stale_after = interval, stale_after
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        kind, count, names = local_devices()
        self.devices = (kind, count, names)
        self._announce()
        self._thread = threading.Thread(target=self._loop, name="devices", daemon=True)
        self._thread.start()
        log.info("worker %s: announced %d %s device(s) %s", self.name, count, kind, names)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        try:
            self.store.remove_worker(self.name)
        except Exception as exc:  # the store is down: the row goes stale on its own
            log.warning("worker %s: could not remove its device row: %s", self.name, exc)

    def _announce(self) -> None:
        kind, count, names = self.devices
        try:
            self.store.forget_workers(timedelta(seconds=10 * self.stale_after))
            self.store.announce_worker(self.name, kind, count, names)
        except Exception as exc:  # the store is down: try again at the next beat
            log.warning("worker %s: could not announce its devices: %s", self.name, exc)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                if not self.store.worker_heartbeat(self.name):
                    self._announce()
            except Exception as exc:  # a store outage: the next beat tries again
                log.warning("worker %s: device heartbeat failed: %s", self.name, exc)
