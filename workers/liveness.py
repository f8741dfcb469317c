"""A worker's liveness file, for health checks that need no answer from the worker itself.

A solo-pool worker that trains a job answers no `celery inspect ping` until the job ends, so
every worker looked unhealthy during a long job. Instead, a thread of the worker process touches
a file every `INTERVAL_S` seconds (started on Celery's `worker_ready`, see workers/tasks.py),
whatever the main thread is doing, and the health check only looks at the file's age:

    python -m workers.liveness    exit 0 when TRAINSERVE_WORKER_LIVENESS_FILE is fresh, else 1
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

INTERVAL_S = 5.0  # between touches
MAX_AGE_S = 60.0  # an older file means a dead or hung worker


class Liveness:
    """Touches `path` now and then every `interval` seconds from a daemon thread, until stopped
    (which removes the file: a stopping worker is no longer live)."""

    def __init__(self, path: Path, interval: float | None = None) -> None:
        self.path = Path(path)
        self.interval = INTERVAL_S if interval is None else interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        self.touch()
        self._thread = threading.Thread(target=self._loop, name="liveness", daemon=True)
        self._thread.start()
        log.info("liveness: touching %s every %.1f s", self.path, self.interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.path.unlink(missing_ok=True)

    def touch(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.touch()
        except OSError as exc:  # a full or read-only disk: the health check will say so
            log.warning("liveness: cannot touch %s: %s", self.path, exc)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.touch()


def age_seconds(path: Path) -> float | None:
    """Seconds since `path` was last touched; None when there is no such file."""
    try:
        return time.time() - Path(path).stat().st_mtime
    except FileNotFoundError:
        return None


def main() -> int:
    """The health check: 0 when this host's worker touched its file within MAX_AGE_S."""
    from app.core.settings import Settings

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    path = Settings().worker_liveness_file
    age = age_seconds(path)
    if age is None:
        log.error("unhealthy: %s does not exist (no worker has started here)", path)
        return 1
    if age > MAX_AGE_S:
        log.error("unhealthy: %s was last touched %.0f s ago (> %.0f s)", path, age, MAX_AGE_S)
        return 1
    log.info("healthy: %s touched %.1f s ago", path, age)
    return 0


if __name__ == "__main__":
    sys.exit(main())
