"""The per-key limit of queued jobs under real concurrency: 30 clients submitting at the same
moment, over HTTP to uvicorn, with TRAINSERVE_MAX_QUEUED_JOBS=3, get exactly 3 jobs in (SQLite
and, where a server answers, PostgreSQL). The count of queued jobs is slowed down, so that
without an atomic count-and-insert every request would count the same jobs."""

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

CLIENTS = 30
LIMIT = 3
log = logging.getLogger(__name__)
MINIMAL = {"model_name": "house", "architecture": "house_prices_mlp", "dataset": "boston_housing"}


@pytest.fixture
def slow_count(monkeypatch) -> list[int]:
    """The store's count of an owner's queued jobs takes 0.05 s more; the counts it returned."""
    counts: list[int] = []
    count = JobStore._count_queued

    def slowed(session, owner):
        queued = count(session, owner)
        counts.append(queued)
        time.sleep(0.05)
        return queued

    monkeypatch.setattr(JobStore, "_count_queued", staticmethod(slowed))
    return counts


@pytest.mark.timeout(120)
def test_concurrent_submits_stop_at_the_queued_limit(tmp_path, database_url, slow_count):
    settings = make_settings(tmp_path / "data", database_url=database_url, max_queued_jobs=LIMIT)
    app = create_app(settings)
    start = threading.Barrier(CLIENTS)

    def post(base_url: str) -> httpx.Response:
        with httpx.Client(base_url=base_url, headers=AUTH, timeout=60) as client:
            start.wait(timeout=30)  # all at once
            return client.post("/v1/jobs", json=MINIMAL)

    with serve(app) as base_url, ThreadPoolExecutor(CLIENTS) as pool:
        responses = list(pool.map(post, [base_url] * CLIENTS))

    codes = [r.status_code for r in responses]
    log.info("%s: %d of %d submits accepted", database_url[:10], codes.count(202), CLIENTS)
    assert sorted(codes) == [202] * LIMIT + [422] * (CLIENTS - LIMIT), codes
    refusals = [r.json()["detail"] for r in responses if r.status_code == 422]
    assert all("TRAINSERVE_MAX_QUEUED_JOBS" in d and f"limit is {LIMIT}" in d for d in refusals)
    assert app.state.services.store.count_jobs("queued") == LIMIT
    assert sorted(slow_count) == sorted(min(n, LIMIT) for n in range(CLIENTS))
