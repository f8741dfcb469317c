"""Liveness never waits behind the thread pool or the job store: with every thread of AnyIO's
pool (40) stuck on a stalled job store, GET /healthz still answers at once over real HTTP."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from app.api.main import create_app
from app.core.store import JobStore
from tests.app.conftest import AUTH, make_settings
from tests.security.server import serve

STUCK = 45  # requests on the stalled store: more than the pool's 40 threads
POOL_THREADS = 40  # AnyIO's default limit of worker threads
ANSWER_WITHIN_S = 1.0
log = logging.getLogger(__name__)


@pytest.fixture
def stalled_store(monkeypatch) -> tuple[threading.Event, list[int]]:
    """JobStore.list_jobs blocks until the event is set; the list counts calls that entered."""
    release, entered = threading.Event(), []
    list_jobs = JobStore.list_jobs

    def stalled(self, **kwargs):
        entered.append(1)
        release.wait(60)
        return list_jobs(self, **kwargs)

    monkeypatch.setattr(JobStore, "list_jobs", stalled)
    return release, entered


def wait_for(predicate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not true after {timeout} s")
        time.sleep(0.05)


def timed_healthz(base_url: str) -> tuple[int | None, float]:
    """(status or None when it did not answer in time, seconds taken)."""
    started = time.monotonic()
    try:
        status = httpx.get(f"{base_url}/healthz", timeout=ANSWER_WITHIN_S * 3).status_code
    except httpx.TimeoutException:
        status = None
    return status, time.monotonic() - started


@pytest.mark.timeout(120)
def test_healthz_answers_while_the_pool_is_stuck_on_the_store(tmp_path, stalled_store):
    release, entered = stalled_store
    app = create_app(make_settings(tmp_path / "data"))

    def list_jobs(base_url: str) -> int:
        return httpx.get(f"{base_url}/v1/jobs", headers=AUTH, timeout=60).status_code

    with serve(app) as base_url, ThreadPoolExecutor(STUCK) as pool:
        try:
            stuck = [pool.submit(list_jobs, base_url) for _ in range(STUCK)]
            wait_for(lambda: len(entered) >= POOL_THREADS, 20)  # the pool is full
            status, seconds = timed_healthz(base_url)
        finally:
            release.set()
        codes = [future.result(timeout=60) for future in stuck]

    log.info("/healthz with %d requests stuck on the store: %s in %.3f s", STUCK, status, seconds)
    assert status == 200 and seconds < ANSWER_WITHIN_S, f"/healthz: {status} after {seconds:.2f} s"
    assert codes == [200] * STUCK
