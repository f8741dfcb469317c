"""Weight downloads are streamed from the file, not held in memory: 8 clients reading a ~67 MB
version slowly, at once, over real HTTP, raise the server's memory by well under one copy of
the file each. uvicorn runs in a thread of this process, so this process's RSS is the server's.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from app.api.main import create_app
from models.training import TrainingResult
from tests.app.conftest import AUTH, make_settings, publish
from tests.security.server import serve

log = logging.getLogger(__name__)

NAME = "big"
READERS = 8
CHUNK = 64 * 1024
SLOW_PHASE_S = 1.5  # every reader reads a chunk, then sleeps, for this long
BIG_MLP = {"hidden_size": 2048, "hidden_layers": 5}  # about 16.8 M float32 parameters


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def big_result(small: TrainingResult) -> TrainingResult:
    """An untrained wide MLP with the card of a trained small one (same data, same stats)."""
    card = dataclasses.replace(small.card, architecture_params=BIG_MLP)
    return TrainingResult(card.build_module(), card, small.history, False)


class Readers:
    """`READERS` slow streaming downloads; the main thread samples RSS while all are open."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.opened = threading.Barrier(READERS + 1)
        self.sampled = threading.Event()

    def read(self, _index: int) -> tuple[int, dict[str, str], str, int]:
        digest, received = hashlib.sha256(), 0
        with (
            httpx.Client(headers=AUTH, timeout=60) as client,
            client.stream("GET", self.url) as response,
        ):
            self.opened.wait(timeout=60)
            for chunk in response.iter_bytes(CHUNK):
                digest.update(chunk)
                received += len(chunk)
                if not self.sampled.is_set():
                    time.sleep(0.02)
        return response.status_code, dict(response.headers), digest.hexdigest(), received

    def peak_growth(self, baseline: int) -> int:
        """Once all have their headers: the highest RSS over the slow phase, less `baseline`."""
        self.opened.wait(timeout=60)
        peak, deadline = baseline, time.monotonic() + SLOW_PHASE_S
        while time.monotonic() < deadline:
            peak = max(peak, rss_bytes())
            time.sleep(0.02)
        self.sampled.set()
        return peak - baseline


@pytest.mark.timeout(240)
def test_slow_downloads_of_a_big_file_are_streamed(tmp_path, classifier_model):
    app = create_app(make_settings(tmp_path / "data"))
    with serve(app) as base_url:
        services = app.state.services
        publish(services, NAME, big_result(classifier_model))
        gc.collect()
        row = services.store.get_version(NAME, 1)
        readers = Readers(f"{base_url}/v1/models/{NAME}/versions/1/weights")
        with ThreadPoolExecutor(READERS) as pool:
            baseline = rss_bytes()
            results = pool.map(readers.read, range(READERS))
            try:
                growth = readers.peak_growth(baseline)
            finally:
                readers.sampled.set()
            results = list(results)

    size = row.size_bytes
    log.info("%d slow downloads of %.1f MB: RSS +%.1f MB", READERS, size / 1e6, growth / 1e6)
    assert size > 60 * 1024 * 1024
    for status, headers, sha256, received in results:
        assert status == 200
        assert (sha256, received) == (row.sha256, size)
        assert headers["etag"] == f'"{row.sha256}"'
        assert headers["content-length"] == str(size)
        assert headers["content-type"] == "application/octet-stream"
        assert f'filename="{NAME}-v1.safetensors"' in headers["content-disposition"]
    assert growth < 3 * size, f"RSS grew by {growth / 1e6:.0f} MB for a {size / 1e6:.0f} MB file"
