"""The worker's liveness file (workers/liveness.py): started by Celery's `worker_ready`, touched
from a thread while a task holds the worker's main thread (as a solo pool does while it trains),
removed on `worker_shutdown`; `python -m workers.liveness` (the health check) reads its age."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from celery.signals import worker_ready, worker_shutdown

from app.core.settings import get_settings
from workers import liveness, tasks

REPO = Path(__file__).resolve().parents[2]
INTERVAL_S = 0.05


@pytest.fixture
def liveness_file(tmp_path, monkeypatch) -> Path:
    """The settings' liveness file in tmp_path, touched every INTERVAL_S by the worker's."""
    path = tmp_path / "run" / "worker.alive"
    monkeypatch.setenv("TRAINSERVE_WORKER_LIVENESS_FILE", str(path))
    monkeypatch.setenv("TRAINSERVE_DATA_DIR", str(tmp_path / "data"))  # worker_ready announces
    monkeypatch.setattr(liveness, "INTERVAL_S", INTERVAL_S)
    get_settings.cache_clear()
    tasks.worker_liveness.cache_clear()
    tasks.worker_services.cache_clear()
    yield path
    tasks.worker_liveness().stop()
    tasks.worker_liveness.cache_clear()
    tasks.worker_services.cache_clear()
    get_settings.cache_clear()


def busy_task(seconds: float, path: Path) -> set[float]:
    """A stand-in for a job on a solo pool: it holds the calling thread for `seconds` (sleeping
    in slices, as training waits in torch's kernels); returns the file's modification times
    seen meanwhile."""
    seen, deadline = set(), time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.01)
        seen.add(path.stat().st_mtime_ns)
    return seen


def health_check(path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "TRAINSERVE_WORKER_LIVENESS_FILE": str(path)}
    command = [sys.executable, "-m", "workers.liveness"]
    return subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=60)


def test_the_file_is_touched_while_a_task_holds_the_worker(liveness_file):
    worker_ready.send(sender=None)
    assert liveness_file.is_file()  # touched at once
    seen = busy_task(1.0, liveness_file)
    assert len(seen) >= 5, f"touched {len(seen)} times in 1 s, every {INTERVAL_S} s expected"
    assert liveness.age_seconds(liveness_file) < 0.5
    assert health_check(liveness_file).returncode == 0

    worker_shutdown.send(sender=None)
    assert not liveness_file.exists()
    stopped = health_check(liveness_file)
    assert stopped.returncode == 1 and "does not exist" in stopped.stderr


def test_a_stale_file_is_unhealthy(tmp_path):
    path = tmp_path / "worker.alive"
    path.touch()
    old = time.time() - liveness.MAX_AGE_S - 5
    os.utime(path, (old, old))
    result = health_check(path)
    assert result.returncode == 1 and "last touched" in result.stderr, result.stderr
