"""The whole path over HTTP: uvicorn, a real Celery worker, Redis and PostgreSQL."""

import json

import httpx
import numpy as np
import pytest

from models.catalogue import load_dataset
from models.weights_file import deserialize_model
from tests.e2e.processes import wait_for_job

pytestmark = pytest.mark.e2e

BOSTON_JOB = {
    "model_name": "house-prices",
    "architecture": "house_prices_mlp",
    "dataset": "boston_housing",
    "optimizer": {"name": "adam", "lr": 0.01},
    "epochs": 60,
    "eval_every": 10,
    "device": "cpu",
}


def read_events(client: httpx.Client, job_id: str) -> list[dict]:
    events = []
    with client.stream("GET", f"/v1/jobs/{job_id}/events", timeout=120) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data:"):
                events.append(json.loads(line[5:]))
    return events


def test_boston_job_trains_streams_and_predicts(stack):
    with stack.client() as client:
        response = client.post("/v1/jobs", json=BOSTON_JOB)
        assert response.status_code == 202, response.text
        job = response.json()
        assert response.headers["location"] == f"/v1/jobs/{job['id']}"
        assert job["status"] in {"queued", "running"}
        assert job["request"]["batch_size"] == 32  # defaults filled in

        events = read_events(client, job["id"])
        assert events[-1]["status"] == "succeeded", stack.logs()
        epochs_seen = [e["progress"]["epoch"] for e in events]
        assert epochs_seen == sorted(epochs_seen) and epochs_seen[-1] == 60

        done = wait_for_job(client, job["id"], {"succeeded"})
        assert done["model_version"] == 1
        assert done["started_at"] and done["finished_at"]
        assert done["metrics"]["val_rmse"] < 6.0

        history = client.get(f"/v1/jobs/{job['id']}/metrics").json()["history"]
        assert [row["epoch"] for row in history] == [10, 20, 30, 40, 50, 60]
        assert history[-1]["val_rmse"] == pytest.approx(done["metrics"]["val_rmse"])

        data = load_dataset("boston_housing")
        rows = data.X[:5].tolist()
        prediction = client.post("/v1/models/house-prices/predict", json={"inputs": rows})
        assert prediction.status_code == 200, prediction.text
        body = prediction.json()
        assert body["model_name"] == "house-prices" and body["version"] == 1
        assert len(body["predictions"]) == 5
        errors = np.array(body["predictions"]) - data.y[:5, 0].numpy()
        assert np.abs(errors).mean() < 10  # in $1000s: original units, not z-scores

        weights = client.get("/v1/models/house-prices/versions/1/weights")
        assert weights.status_code == 200
        module, card = deserialize_model(weights.content)
        assert card.architecture == "house_prices_mlp" and card.input_shape == [13]

        models = client.get("/v1/models").json()
        assert [m["name"] for m in models] == ["house-prices"]
        assert models[0]["latest_version"] == 1


def test_digits28_classification_returns_probabilities(stack):
    job = {
        "model_name": "digits",
        "architecture": "mnist_convnet",
        "dataset": "digits28",
        "optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.9},
        "epochs": 3,
        "device": "cpu",
    }
    with stack.client() as client:
        created = client.post("/v1/jobs", json=job).json()
        done = wait_for_job(client, created["id"], {"succeeded", "failed"}, timeout=180)
        assert done["status"] == "succeeded", (done["error"], stack.logs())
        assert done["metrics"]["val_accuracy"] > 0.8

        data = load_dataset("digits28")
        body = client.post(
            "/v1/models/digits/predict", json={"inputs": data.X[:10].tolist()}
        ).json()
        probs = np.array(body["probabilities"])
        assert probs.shape == (10, 10)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-4)
        assert body["predictions"] == probs.argmax(axis=1).tolist()
        assert np.mean(np.array(body["predictions"]) == data.y[:10].numpy()) >= 0.7

        model = client.get("/v1/models/digits").json()
        assert model["versions"][0]["classes"] == [str(d) for d in range(10)]


def test_cancel_a_running_job(stack):
    job = {
        "model_name": "long-one",
        "architecture": "mlp",
        "dataset": "synthetic_regression",
        "dataset_params": {"n_samples": 20000, "n_features": 32},
        "epochs": 5000,
        "device": "cpu",
    }
    with stack.client() as client:
        created = client.post("/v1/jobs", json=job).json()
        wait_for_job(client, created["id"], {"running"}, timeout=60)
        response = client.post(f"/v1/jobs/{created['id']}/cancel")
        assert response.status_code == 202
        ended = wait_for_job(client, created["id"], {"cancelled", "succeeded", "failed"}, 60)
        assert ended["status"] == "cancelled", stack.logs()
        assert ended["model_version"] is None
        assert ended["progress"]["epoch"] < 5000
        again = client.post(f"/v1/jobs/{created['id']}/cancel")
        assert again.status_code == 409
        assert "cancelled" in again.json()["detail"]


def test_auth_is_required_and_checked(stack):
    with stack.client(key=None) as anonymous:
        assert anonymous.get("/healthz").status_code == 200
        for method, path in [("GET", "/v1/jobs"), ("POST", "/v1/jobs"), ("GET", "/v1/models")]:
            response = anonymous.request(method, path)
            assert response.status_code == 401, path
            assert "detail" in response.json()
    with stack.client(key="wrong-key") as wrong:
        assert wrong.get("/v1/jobs").status_code == 401


def test_unknown_ids_and_names_are_404(stack):
    with stack.client() as client:
        for path in [
            "/v1/jobs/0123456789abcdef",
            "/v1/jobs/0123456789abcdef/metrics",
            "/v1/models/no-such-model",
            "/v1/models/no-such-model/versions/1/weights",
        ]:
            response = client.get(path)
            assert response.status_code == 404, path
            assert "detail" in response.json()
        missing = client.post("/v1/models/no-such-model/predict", json={"inputs": [[1.0]]})
        assert missing.status_code == 404


BAD_REQUESTS = [
    (
        "POST",
        "/v1/jobs",
        {"content": b"{not json", "headers": {"content-type": "application/json"}},
        422,
    ),
    ("POST", "/v1/jobs", {"json": {**BOSTON_JOB, "architecture": "resnet99"}}, 422),
    ("POST", "/v1/jobs", {"json": {**BOSTON_JOB, "dataset": "nope"}}, 422),
    ("POST", "/v1/jobs", {"json": {**BOSTON_JOB, "loss": "cross_entropy"}}, 422),
    ("POST", "/v1/jobs", {"json": {**BOSTON_JOB, "epochs": 0}}, 422),
    ("POST", "/v1/jobs", {"json": {**BOSTON_JOB, "epochs": "ten"}}, 422),
    ("POST", "/v1/jobs", {"json": {**BOSTON_JOB, "batch_size": -1}}, 422),
    ("POST", "/v1/jobs", {"json": {**BOSTON_JOB, "model_name": "../etc"}}, 422),
    (
        "POST",
        "/v1/jobs",
        {"json": {**BOSTON_JOB, "architecture_params": {"hidden_size": 10**9}}},
        422,
    ),
    ("POST", "/v1/jobs", {"json": {**BOSTON_JOB, "device": "tpu"}}, 422),
    ("POST", "/v1/jobs", {"json": {"architecture": "mlp"}}, 422),
    ("POST", "/v1/models/house-prices/predict", {"json": {"inputs": []}}, 422),
    ("POST", "/v1/models/house-prices/predict", {"json": {"inputs": [[1.0, 2.0]]}}, 422),
    ("POST", "/v1/models/house-prices/predict", {"json": {"inputs": "x"}}, 422),
    (
        "POST",
        "/v1/models/house-prices/predict",
        {
            "content": b'{"inputs": [[NaN,1,1,1,1,1,1,1,1,1,1,1,1]]}',
            "headers": {"content-type": "application/json"},
        },
        422,
    ),
    ("GET", "/v1/jobs?limit=-5", {}, 422),
    ("GET", "/v1/jobs?status=sleeping", {}, 422),
]


@pytest.mark.parametrize(("method", "path", "kwargs", "status"), BAD_REQUESTS)
def test_bad_requests_get_a_clear_4xx(stack, method, path, kwargs, status):
    with stack.client() as client:
        response = client.request(method, path, **kwargs)
        assert response.status_code == status, response.text
        detail = response.json()["detail"]
        assert detail and "Traceback" not in json.dumps(detail)
        assert client.get("/healthz").json() == {"status": "ok"}
