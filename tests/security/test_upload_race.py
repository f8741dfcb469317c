"""Two uploads under one name at the same moment, over HTTP to uvicorn: exactly one wins, and the
winner's row points at the winner's bytes (uploads are kept by the hash of their content, and
read back only when they match it), with no file of the loser left behind."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from app.api.main import create_app
from app.core.artifacts import dataset_key
from app.core.datasets import load_upload
from app.core.errors import Unavailable
from app.core.store import JobStore
from models.files import sha256_hex
from tests.app.conftest import AUTH, make_settings
from tests.security.server import serve

UPLOADS = 6


def csv_with(rows: int) -> bytes:
    """A CSV of `rows` rows, so each upload is told apart by its number of samples."""
    body = "".join(f"{i},{i * 2}.5\n" for i in range(rows))
    return f"x,price\n{body}".encode()


@pytest.fixture
def widened(monkeypatch):
    """Every upload finds the name free, then waits 0.2 s before it inserts its row: all of them
    race past the check, and the database's primary key decides."""
    get = JobStore.get_dataset

    def slow(self, name):
        row = get(self, name)
        if row is None:
            time.sleep(0.2)
        return row

    monkeypatch.setattr(JobStore, "get_dataset", slow)


def test_racing_uploads_leave_the_winner_with_its_own_file(tmp_path, widened):
    settings = make_settings(tmp_path, max_upload_bytes=1024 * 1024)
    app = create_app(settings)
    start = threading.Barrier(UPLOADS)

    def upload(rows: int) -> httpx.Response:
        start.wait()
        files = {"file": ("data.csv", csv_with(rows), "text/csv")}
        data = {"name": "shared", "target": "price"}
        return httpx.post(f"{url}/v1/datasets", headers=AUTH, files=files, data=data, timeout=30)

    with serve(app) as url, ThreadPoolExecutor(UPLOADS) as pool:
        responses = list(pool.map(upload, range(10, 10 + UPLOADS)))
        services = app.state.services
        codes = sorted(r.status_code for r in responses)
        assert codes == [201] + [409] * (UPLOADS - 1), [r.text for r in responses]
        winner = next(r.json() for r in responses if r.status_code == 201)
        row = services.store.get_dataset("shared")
        assert row.n_samples == winner["n_samples"]
        stored = services.artifacts.get(dataset_key(row.sha256))
        assert sha256_hex(stored) == row.sha256
        assert len(load_upload(services, row)) == winner["n_samples"]
        assert services.artifacts.list("datasets/") == [dataset_key(row.sha256)]
        listed = httpx.get(f"{url}/v1/datasets", headers=AUTH).json()
        assert [d["n_samples"] for d in listed if d["name"] == "shared"] == [winner["n_samples"]]


def test_a_tampered_upload_is_refused_on_read(client, services):
    files = {"file": ("data.csv", csv_with(12), "text/csv")}
    response = client.post("/v1/datasets", files=files, data={"name": "mine", "target": "price"})
    assert response.status_code == 201, response.text
    row = services.store.get_dataset("mine")
    path = services.artifacts.path(dataset_key(row.sha256))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(Unavailable, match="sha256 mismatch"):
        load_upload(services, row)
