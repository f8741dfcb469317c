"""Dynamic batching and the in-memory version lookups, over real HTTP to uvicorn.

Correctness, not speed: batched answers are the one-by-one answers for each architecture; a bad
sample fails its own request only; a client that leaves is dropped before the forward; a full
queue answers 503 with Retry-After; a version published or deleted by another process is seen
by the next request (after one registry check interval)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

import httpx
import numpy as np
import pytest
import torch

from app.api.main import create_app
from models.datasets import Dataset
from models.predictor import Predictor
from models.request import TrainingRequest
from models.training import TrainingResult, run_training
from tests.app.conftest import AUTH, KEY, make_settings, publish
from tests.e2e.processes import wait_until
from tests.security.server import serve

IMAGE = (1, 28, 28)
ARCHITECTURES = {  # architecture -> (input shape, task)
    "house_prices_mlp": ((13,), "regression"),
    "mlp": ((6,), "classification"),
    "mnist_convnet": (IMAGE, "classification"),
    "cnn": (IMAGE, "classification"),
    "resnet18": (IMAGE, "classification"),
}


def train(architecture: str) -> TrainingResult:
    shape, task = ARCHITECTURES[architecture]
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(32, *shape, generator=generator)
    y = torch.arange(32) % 3 if task == "classification" else x.flatten(1).sum(1, keepdim=True)
    request = TrainingRequest(architecture=architecture, dataset="random", epochs=1, device="cpu")
    return run_training(request, dataset=Dataset(x, y, task))


@pytest.fixture(scope="module")
def models() -> dict[str, TrainingResult]:
    return {name: train(name) for name in ARCHITECTURES}


def settings_for(tmp_path, **overrides):
    values = {
        "max_body_bytes": 8 * 1024**2,
        "max_predict_samples": 256,
        "predict_max_batch": 64,
        "predict_max_wait_ms": 300,
        "registry_check_ms": 20,
    }
    return make_settings(tmp_path, **(values | overrides))


def served_of(app, name: str):
    """The one loaded version of `name` (its predictor and batcher)."""
    entries = [v for k, (v, _) in app.state.model_cache._entries.items() if k[0] == name]
    assert len(entries) == 1
    return entries[0]


def batcher_of(app, name: str):
    return served_of(app, name).batcher


def post_all(url: str, path: str, bodies: list) -> list[httpx.Response]:
    """Each body in its own connection, all at once."""

    def post(body):
        with httpx.Client(base_url=url, headers=AUTH, timeout=60) as client:
            return client.post(path, json=body)

    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(post, bodies))


@pytest.mark.parametrize("backend", ["eager", "onnx"])
@pytest.mark.parametrize("architecture", list(ARCHITECTURES))
def test_batched_answers_are_the_one_by_one_answers(tmp_path, models, architecture, backend):
    """Concurrent requests of 1 to 3 samples answered from shared batches get, to 1e-6, what
    the same loaded model answers to each one alone; and what eager PyTorch answers (ONNX
    Runtime's export is checked to 1e-5 of eager, relative)."""
    result = models[architecture]
    shape, task = ARCHITECTURES[architecture]
    app = create_app(settings_for(tmp_path, predict_backend=backend, predict_max_wait_ms=1000))
    generator = torch.Generator().manual_seed(1)
    requests = [torch.rand(1 + i % 3, *shape, generator=generator).tolist() for i in range(10)]
    eager = Predictor(result.model, result.card)
    with serve(app) as url:
        publish(app.state.services, "m", result)
        path = "/v1/models/m/predict"
        first = post_all(url, path, [{"inputs": requests[0]}])  # loads it (eager answers)
        assert first[0].status_code == 200, first[0].text
        served = served_of(app, "m")
        assert served.ready.wait(180)  # the ONNX export runs in the background
        stats = served.batcher.stats
        before = (stats.batches, stats.samples)
        answers = post_all(url, path, [{"inputs": inputs} for inputs in requests])
    expected_type = "OnnxPredictor" if backend == "onnx" else "Predictor"
    assert type(served.predictor).__name__ == expected_type
    assert [a.status_code for a in answers] == [200] * len(requests), answers[0].text
    assert stats.batches - before[0] < len(requests)  # batched (at most 64 samples each)
    assert stats.samples - before[1] == sum(len(r) for r in requests)
    for inputs, answer in zip(requests, answers, strict=True):
        samples = np.asarray(inputs, dtype=np.float32)
        alone, reference = served.predictor.predict(samples), eager.predict(samples)
        got = answer.json()
        if task == "classification":
            assert got["predictions"] == alone.predictions == reference.predictions
            np.testing.assert_allclose(got["probabilities"], alone.probabilities, atol=1e-6)
            np.testing.assert_allclose(got["probabilities"], reference.probabilities, atol=1e-5)
        else:
            np.testing.assert_allclose(got["predictions"], alone.predictions, atol=1e-6)
            np.testing.assert_allclose(got["predictions"], reference.predictions, rtol=1e-5)


def test_a_bad_sample_fails_its_request_alone(tmp_path, models):
    app = create_app(settings_for(tmp_path, predict_max_wait_ms=500))
    good = torch.rand(2, *IMAGE).tolist()
    wrong_shape = [torch.rand(*IMAGE).tolist(), torch.rand(1, 28, 27).tolist()]
    with serve(app) as url:
        publish(app.state.services, "m", models["mnist_convnet"])
        path = "/v1/models/m/predict"
        bodies = [{"inputs": good}, {"inputs": wrong_shape}, {"inputs": good}]
        answers = post_all(url, path, bodies)
        stats = batcher_of(app, "m").stats
    assert [a.status_code for a in answers] == [200, 422, 200]
    assert "sample 1 has shape 1x28x27; expected 1x28x28" in answers[1].json()["detail"]
    assert answers[0].json() == answers[2].json()
    assert stats.samples == 4  # the bad request never reached the batch


def post_and_leave(url: str, body: bytes) -> None:
    """A whole predict request, then the socket closed without reading the answer."""
    parts = urlparse(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        head = (
            "POST /v1/models/m/predict HTTP/1.1\r\n"
            f"Host: {parts.netloc}\r\nAuthorization: Bearer {KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        sock.sendall(head.encode() + body)
        time.sleep(0.1)


def test_a_client_that_leaves_mid_batch_is_dropped_before_the_forward(tmp_path, models):
    """The batch waits 1 s for more requests; one client leaves meanwhile: its samples are not
    run, the others are answered."""
    app = create_app(settings_for(tmp_path, predict_max_wait_ms=1000))
    result = models["mnist_convnet"]
    with serve(app) as url, httpx.Client(base_url=url, headers=AUTH, timeout=60) as client:
        publish(app.state.services, "m", result)
        path = "/v1/models/m/predict"
        assert client.post(path, json={"inputs": torch.rand(1, *IMAGE).tolist()}).is_success
        batcher = batcher_of(app, "m")
        before = batcher.stats.samples
        stayed = torch.rand(2, *IMAGE).tolist()
        with ThreadPoolExecutor(2) as pool:
            answer = pool.submit(client.post, path, json={"inputs": stayed})
            leaver = json.dumps({"inputs": torch.rand(5, *IMAGE).tolist()}).encode()
            pool.submit(post_and_leave, url, leaver).result()
            answer = answer.result()
        stats = batcher.stats
    assert answer.status_code == 200, answer.text
    expected = Predictor(result.model, result.card).predict(np.asarray(stayed, dtype=np.float32))
    assert answer.json()["predictions"] == expected.predictions
    assert stats.dropped == 1
    assert stats.samples - before == 2  # the 5 samples of the client that left never ran


def test_a_full_queue_answers_503_with_retry_after(tmp_path, models, monkeypatch):
    """One sample per batch; the first forward is held until the queue (2) is full."""
    settings = settings_for(
        tmp_path,
        predict_max_batch=1,
        predict_max_queue=2,
        predict_backend="eager",
        inference_threads=1,  # one forward at a time: the held one
    )
    app = create_app(settings)
    release, entered = threading.Event(), threading.Event()
    original = Predictor.predict

    def held(self, samples, chunk=None, stop=lambda: False):
        entered.set()
        release.wait(60)
        return original(self, samples, chunk=chunk, stop=stop)

    one = {"inputs": torch.rand(1, *IMAGE).tolist()}
    with serve(app) as url, httpx.Client(base_url=url, headers=AUTH, timeout=60) as client:
        publish(app.state.services, "m", models["mnist_convnet"])
        path = "/v1/models/m/predict"
        assert client.post(path, json=one).status_code == 200  # loaded
        batcher = batcher_of(app, "m")
        monkeypatch.setattr(Predictor, "predict", held)
        with ThreadPoolExecutor(3) as pool:
            running = pool.submit(client.post, path, json=one)
            assert entered.wait(60)  # its forward runs (and is held)
            queued = [pool.submit(client.post, path, json=one) for _ in range(2)]
            wait_until(lambda: len(batcher) == 2, 60, "two queued requests")
            refused = client.post(path, json=one)
            release.set()
            answers = [running.result(), *(q.result() for q in queued)]
    assert refused.status_code == 503
    assert int(refused.headers["retry-after"]) >= 1
    assert "TRAINSERVE_PREDICT_MAX_QUEUE" in refused.json()["detail"]
    assert [a.status_code for a in answers] == [200, 200, 200]


REGISTRY_WRITER = """
import sys
from pathlib import Path
from sqlalchemy import text
from app.core.services import build_services
from app.core.settings import Settings
from models.weights_file import read_card
from workers.runner import publish_result

data_dir, command, name = sys.argv[1:4]
settings = Settings(data_dir=data_dir, database_url=f"sqlite:///{data_dir}/jobs.db")
services = build_services(settings, upgrade=False)
store = services.store
if command == "publish":
    weights = Path(sys.argv[4]).read_bytes()

    class Result:  # what publish_result reads of a TrainingResult
        card = read_card(weights)
        final_metrics = {}

        def weights(self):
            return weights

    request = {"model_name": name, "architecture": Result.card.architecture,
               "dataset": Result.card.dataset, "epochs": 1}
    job, _ = store.create_job(request)
    lease = store.claim(job.id, "other-process")
    print(publish_result(services, job.id, lease, name, Result()))
else:  # delete a version, as a deletion made elsewhere would (no API of this process)
    version = int(sys.argv[4])
    with store._sessions.begin() as session:
        session.execute(text("DELETE FROM model_aliases WHERE model_name = :n AND version = :v"),
                        {"n": name, "v": version})
        session.execute(text("DELETE FROM model_versions WHERE model_name = :n AND version = :v"),
                        {"n": name, "v": version})
"""


def in_another_process(tmp_path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", REGISTRY_WRITER, str(tmp_path), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_versions_published_or_deleted_by_another_process_are_seen(tmp_path, models):
    settings = settings_for(tmp_path, registry_check_ms=20)
    app = create_app(settings)
    other = models["house_prices_mlp"]
    weights = tmp_path / "other.safetensors"
    weights.write_bytes(other.weights())
    row = {"inputs": [[0.5] * 13]}
    with serve(app) as url, httpx.Client(base_url=url, headers=AUTH, timeout=60) as client:
        publish(app.state.services, "m", models["mlp"])  # version 1: a 6-feature classifier
        path = "/v1/models/m/predict"
        assert client.post(path, json={"inputs": [[0.5] * 6]}).json()["version"] == 1
        assert client.post(path, json={"inputs": [[0.5] * 6]}).json()["version"] == 1  # cached
        assert in_another_process(tmp_path, "publish", "m", str(weights)) == "2"
        time.sleep(0.2)  # a few registry checks (every 20 ms)
        answer = client.post(path, json=row)
        assert answer.status_code == 200, answer.text
        assert answer.json()["version"] == 2
        assert client.post(path, params={"version": 2}, json=row).status_code == 200
        in_another_process(tmp_path, "delete", "m", "2")
        time.sleep(0.2)
        gone = client.post(path, params={"version": 2}, json=row)
        assert gone.status_code == 404, gone.text
        assert "no version 2" in gone.json()["detail"]
        first = client.post(path, params={"version": 1}, json={"inputs": [[0.5] * 6]})
        assert first.status_code == 200 and first.json()["version"] == 1
