"""One prediction must not take the API down: a request is budgeted by samples x the model's
cost per sample, runs in chunks of bounded memory, and stops when its client leaves. Real HTTP
to uvicorn, a resnet18 published as a worker publishes it."""

from __future__ import annotations

import json
import socket
import threading
import time
from urllib.parse import urlparse

import httpx
import pytest
import torch

from app.api.main import create_app
from models.datasets import Dataset
from models.predictor import Predictor
from models.request import TrainingRequest
from models.training import run_training
from tests.app.conftest import AUTH, KEY, make_settings, publish
from tests.security.server import serve

SHAPE = (1, 28, 28)


@pytest.fixture(scope="module")
def resnet():
    """resnet18 on 1x28x28 (the issue's case), trained for one epoch on 40 random images."""
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(40, *SHAPE, generator=generator)
    data = Dataset(images, torch.arange(40) % 4, "classification")
    request = TrainingRequest(architecture="resnet18", dataset="random", epochs=1, device="cpu")
    return run_training(request, dataset=data)


def settings_for(tmp_path, **overrides):
    return make_settings(
        tmp_path,
        max_body_bytes=32 * 1024**2,
        max_predict_samples=4096,
        inference_threads=1,
        **overrides,
    )


def sample_rows(n: int) -> list:
    return torch.rand(n, *SHAPE).tolist()


def test_a_request_over_the_budget_is_refused_saying_how_many_fit(tmp_path, resnet):
    settings = settings_for(tmp_path, max_predict_work_bytes=1024**3)
    app = create_app(settings)
    per_sample = Predictor(resnet.model, resnet.card).bytes_per_sample
    with serve(app) as url, httpx.Client(base_url=url, headers=AUTH, timeout=60) as client:
        publish(app.state.services, "resnet", resnet)
        started = time.monotonic()
        fits = settings.max_predict_work_bytes // per_sample
        assert 100 < fits < 400  # resnet18: about 5.5 MiB of activations per 1x28x28 sample
        refused = client.post("/v1/models/resnet/predict", json={"inputs": sample_rows(1024)})
        assert refused.status_code == 422, refused.text
        assert time.monotonic() - started < 10
        detail = refused.json()["detail"]
        assert "TRAINSERVE_MAX_PREDICT_WORK_BYTES" in detail
        assert f"send at most {fits} samples" in detail
        ok = client.post("/v1/models/resnet/predict", json={"inputs": sample_rows(fits)})
        assert ok.status_code == 200, ok.text
        assert len(ok.json()["predictions"]) == fits


def test_chunks_bound_the_memory_of_one_request(tmp_path, resnet):
    """The same 200 samples, in one forward and in chunks of about 16 MiB of activations."""
    predictor = Predictor(resnet.model, resnet.card)
    samples = torch.rand(200, *SHAPE).numpy()
    whole = predictor.predict(samples)
    chunk = predictor.chunk_size(16 * 1024**2)
    assert 1 <= chunk < 200
    chunked = predictor.predict(samples, chunk=chunk)
    assert chunked.predictions == whole.predictions
    assert torch.allclose(torch.tensor(chunked.probabilities), torch.tensor(whole.probabilities))


def post_and_leave(url: str, body: bytes) -> None:
    """Send a whole predict request, then close the socket without reading the answer."""
    parts = urlparse(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        head = (
            "POST /v1/models/resnet/predict HTTP/1.1\r\n"
            f"Host: {parts.netloc}\r\nAuthorization: Bearer {KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        sock.sendall(head.encode() + body)
        time.sleep(0.3)


def test_abandoned_requests_stop_and_do_not_delay_the_next(tmp_path, resnet):
    settings = settings_for(
        tmp_path, max_predict_work_bytes=8 * 1024**3, predict_chunk_bytes=4 * 1024**2
    )
    app = create_app(settings)
    chunks_run = []
    original = Predictor.predict

    def counted(self, samples, chunk=None, stop=lambda: False):
        def stop_and_count():
            chunks_run.append(1)
            return stop()

        return original(self, samples, chunk=chunk, stop=stop_and_count)

    with serve(app) as url, httpx.Client(base_url=url, headers=AUTH, timeout=60) as client:
        publish(app.state.services, "resnet", resnet)
        one = {"inputs": sample_rows(1)}
        assert client.post("/v1/models/resnet/predict", json=one).status_code == 200  # loaded
        Predictor.predict = counted
        try:
            heavy = json.dumps({"inputs": sample_rows(1024)}).encode()
            leavers = [threading.Thread(target=post_and_leave, args=(url, heavy)) for _ in range(4)]
            for thread in leavers:
                thread.start()
            for thread in leavers:
                thread.join()
            started = time.monotonic()
            answer = client.post("/v1/models/resnet/predict", json=one)
            waited = time.monotonic() - started
        finally:
            Predictor.predict = original
    assert answer.status_code == 200
    chunk = Predictor(resnet.model, resnet.card).chunk_size(4 * 1024**2)
    full = 4 * -(-1024 // chunk)  # the chunks four requests would have run to the end
    assert len(chunks_run) < full / 2, (len(chunks_run), full)
    assert waited < 5, f"a one-sample prediction waited {waited:.1f} s behind abandoned ones"
