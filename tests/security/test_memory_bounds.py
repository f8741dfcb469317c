"""One upload must not take the API down: the real `trainserve api` under an address-space limit
(prlimit), with the default limits, sent a 1 MB NPZ that decompresses to 1 GB, and a CSV."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from tests.e2e.processes import TRAINSERVE, Process, Service, wait_until
from tests.models.test_uploads import npz_bomb

pytestmark = pytest.mark.e2e

# torch alone maps about 3.3 GB of address space: 5 GB leaves the API under 2 GB to work in,
# so an upload that decompresses to gigabytes cannot be served by luck.
ADDRESS_SPACE = 5 * 1024**3


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


@pytest.fixture
def bounded_api(tmp_path):
    if shutil.which("prlimit") is None:
        pytest.fail("prlimit (util-linux) is needed to bound the server's memory")
    service = Service(tmp_path, {})
    service.migrate()
    api = Process(
        ["prlimit", f"--as={ADDRESS_SPACE}", TRAINSERVE, "api"], service.env, tmp_path / "api.log"
    )
    service.api = api
    service.processes.append(api)
    try:
        wait_until(service._ready, 90, f"the API under prlimit ({api.log})")
        yield service, api
    finally:
        service.stop()


def test_an_npz_bomb_gets_413_and_the_api_stays_up(bounded_api):
    service, api = bounded_api
    bomb = npz_bomb(1000 * 1024 * 1024)  # under the old 1 GiB per array, over the new total
    assert len(bomb) < 2 * 1024 * 1024
    with service.client() as client:
        before = rss_bytes(api.popen.pid)
        started = time.monotonic()
        response = client.post(
            "/v1/datasets", data={"name": "bomb"}, files={"file": ("bomb.npz", bomb)}
        )
        elapsed = time.monotonic() - started
        assert response.status_code == 413, response.text
        assert "TRAINSERVE_MAX_DATASET_BYTES" in response.json()["detail"]
        assert elapsed < 5
        assert rss_bytes(api.popen.pid) - before < 100 * 1024 * 1024
        assert api.alive() and client.get("/healthz").status_code == 200
        rows = "".join(f"{i},{i % 17}.5,{i % 3}\n" for i in range(200_000))
        csv = f"a,b,label\n{rows}".encode()
        ok = client.post(
            "/v1/datasets", data={"name": "fine", "target": "label"}, files={"file": ("f.csv", csv)}
        )
        assert ok.status_code == 201, ok.text
        assert ok.json()["n_samples"] == 200_000
    assert api.alive(), api.output()[-2000:]
