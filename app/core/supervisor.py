"""`trainserve serve`'s worker: a child process, started again whenever it dies.

A worker killed by the kernel (out of memory), by kill -9 or by a crash leaves the embedded
service with no one to train; the supervisor notices (it waits on the child from a thread) and
starts a new one after a pause that doubles while children keep dying young (1 s up to 30 s).
The reaper re-sends the job the dead worker held.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
import time
from collections.abc import Sequence

from app.core.metrics_dir import process_dead

log = logging.getLogger(__name__)

FIRST_PAUSE_S = 1.0
MAX_PAUSE_S = 30.0
HEALTHY_AFTER_S = 60.0  # a child that lived this long resets the pause


class WorkerSupervisor:
    def __init__(self, argv: Sequence[str], env: dict[str, str]) -> None:
        self.argv, self.env = list(argv), env
        self.restarts = 0
        self._child: subprocess.Popen | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._watch, name="worker-supervisor", daemon=True)

    def start(self) -> None:
        self._spawn()
        self._thread.start()

    def alive(self) -> bool:
        """Whether a worker process is running now (False between a death and its restart)."""
        with self._lock:
            return self._child is not None and self._child.poll() is None

    @property
    def pid(self) -> int | None:
        with self._lock:
            return self._child.pid if self._child is not None else None

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the worker (it checkpoints and requeues its job), then wait; kill if needed."""
        with self._lock:  # no child is spawned after this
            self._stopping.set()
            child = self._child
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("worker did not stop within %.0f s; killing it", timeout)
                child.kill()
                child.wait()
        self._thread.join(timeout=5)

    def _spawn(self) -> None:
        with self._lock:
            if self._stopping.is_set():
                return
            self._child = subprocess.Popen(self.argv, env=self.env)
            self._started = time.monotonic()

    def _watch(self) -> None:
        pause = FIRST_PAUSE_S
        while not self._stopping.is_set():
            with self._lock:
                child = self._child
            code = child.wait()
            process_dead(child.pid)  # its live gauges (busy slots, device) stop counting
            if self._stopping.is_set():
                return
            lived = time.monotonic() - self._started
            pause = FIRST_PAUSE_S if lived >= HEALTHY_AFTER_S else pause
            log.error(
                "the worker (pid %d) exited with %s after %.0f s; starting another in %.0f s",
                child.pid,
                code,
                lived,
                pause,
            )
            if self._stopping.wait(pause):
                return
            self._spawn()
            self.restarts += 1
            pause = min(pause * 2, MAX_PAUSE_S)
