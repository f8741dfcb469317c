"""`Idempotency-Key` on POST /v1/jobs under real concurrency: 20 clients posting one request with
one key at the same moment, over HTTP to uvicorn, create exactly one job (SQLite and, where a
server answers, PostgreSQL)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from app.api.main import create_app
from app.core.store import JobStore
from tests.app.conftest import AUTH, make_settings
from tests.security.server import serve

CLIENTS = 20
MINIMAL = {"model_name": "house", "architecture": "house_prices_mlp", "dataset": "boston_housing"}


@pytest.fixture(params=["as-is", "widened"])
def lookups(request, monkeypatch) -> dict[str, int]:
    """Counts of the store's look-ups of a key. "widened": a look-up that finds nothing takes
    0.2 s, so that all the requests find no job and race to insert one (the database's unique
    constraint must then decide)."""
    counts = {"missing": 0, "found": 0}
    find = JobStore._find_idempotent

    def counted(self, owner, key):
        job = find(self, owner, key)
        counts["found" if job else "missing"] += 1
        if job is None and request.param == "widened":
            time.sleep(0.2)
        return job

    monkeypatch.setattr(JobStore, "_find_idempotent", counted)
    return counts


@pytest.mark.timeout(120)
def test_concurrent_posts_with_one_key_create_one_job(tmp_path, database_url, lookups, request):
    app = create_app(make_settings(tmp_path / "data", database_url=database_url))
    start = threading.Barrier(CLIENTS)

    def post(base_url: str) -> httpx.Response:
        with httpx.Client(base_url=base_url, headers=AUTH, timeout=60) as client:
            start.wait()  # all at once
            return client.post("/v1/jobs", json=MINIMAL, headers={"Idempotency-Key": "once"})

    with serve(app) as base_url, ThreadPoolExecutor(CLIENTS) as pool:
        responses = list(pool.map(post, [base_url] * CLIENTS))
        other = httpx.post(
            f"{base_url}/v1/jobs", json=MINIMAL, headers=AUTH | {"Idempotency-Key": "twice"}
        )

    codes = sorted(r.status_code for r in responses)
    assert codes == [200] * (CLIENTS - 1) + [202], [r.text for r in responses if r.is_error]
    ids = {r.json()["id"] for r in responses}
    assert len(ids) == 1
    assert {r.headers["location"] for r in responses} == {f"/v1/jobs/{ids.pop()}"}
    jobs, total = app.state.services.store.list_jobs(
        status=None, model_name=None, limit=50, offset=0
    )
    assert other.status_code == 202
    assert sorted(job.idempotency_key for job in jobs) == ["once", "twice"] and total == 2
    if "widened" in request.node.callspec.id:
        assert lookups["missing"] > 2  # requests did race past the look-up to the insert
