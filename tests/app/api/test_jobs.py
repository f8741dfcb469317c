"""POST /v1/jobs (validation, commit, enqueue, idempotency), listing, history, cancel, events."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from kombu import Connection

from app.api.routes import jobs
from app.api.schemas.jobs import JOB_EXAMPLE
from app.core.services import Services

MINIMAL = {"model_name": "house", "architecture": "house_prices_mlp", "dataset": "boston_housing"}


def submit(client: TestClient, body=None, **headers):
    return client.post("/v1/jobs", json=MINIMAL if body is None else body, headers=headers)


def test_the_documented_example_is_accepted(client: TestClient, services: Services, sent):
    response = submit(client, JOB_EXAMPLE)
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["status"] == "queued"
    assert job["request"].items() >= JOB_EXAMPLE.items()  # plus the optional extras, null
    assert job["progress"] == {"epoch": 0, "epochs": 100}
    assert job["created_at"].endswith(("Z", "+00:00"))
    assert job["started_at"] is None and job["model_version"] is None
    assert services.store.get_job(job["id"]).status == "queued"  # committed
    assert sent == [job["id"]]


def test_defaults_are_filled_in_and_stored(client: TestClient, services: Services):
    job = submit(client).json()
    request = services.store.get_job(job["id"]).request
    assert request == job["request"]
    assert request["loss"] == "mse"  # resolved from the dataset's task
    assert request["optimizer"] == {
        "name": "adam",
        "lr": 0.001,
        "betas": [0.9, 0.999],
        "weight_decay": 0.0,
    }
    assert (request["epochs"], request["batch_size"], request["eval_every"]) == (10, 32, 1)
    assert (request["test_fraction"], request["seed"], request["device"]) == (0.2, 0, "auto")
    classifier = submit(client, MINIMAL | {"architecture": "mlp", "dataset": "digits"}).json()
    assert classifier["request"]["loss"] == "cross_entropy"


def test_the_message_reaches_the_broker(client: TestClient):
    with Connection("memory://") as conn:
        queue = conn.SimpleQueue("training")
        queue.clear()
        job = submit(client).json()
        message = queue.get(timeout=2)
        message.ack()
        assert message.payload[0] == [job["id"]]  # celery protocol 2: (args, kwargs, embed)
        assert message.headers["task"] == "trainserve.train_job"
        queue.close()


BAD_REQUESTS = [
    ({"architecture": "resnet99"}, "architecture 'resnet99' is unknown; known: "),
    ({"architecture": "resnet99"}, "house_prices_mlp"),
    ({"dataset": "nope"}, "dataset 'nope' is unknown; known: "),
    ({"dataset": "mnist"}, "downloads are disabled"),
    ({"loss": "cross_entropy"}, "does not fit a regression task"),
    ({"loss": "hinge"}, "mse"),
    ({"optimizer": {"name": "lbfgs"}}, "sgd"),
    ({"optimizer": {"name": "adam", "momentum": 0.9}}, "momentum"),
    ({"optimizer": {"lr": 0}}, "optimizer.lr"),
    ({"epochs": 100000}, "epochs 100000 is over the limit of 1000 (TRAINSERVE_MAX_EPOCHS)"),
    ({"epochs": 0}, "epochs"),
    ({"batch_size": 10**6}, "TRAINSERVE_MAX_BATCH_SIZE"),
    ({"batch_size": -1}, "batch_size"),
    ({"eval_every": 0}, "eval_every"),
    ({"test_fraction": 1.0}, "test_fraction"),
    ({"seed": -1}, "seed"),
    ({"device": "tpu"}, "device"),
    ({"model_name": "House Prices"}, "model_name"),
    ({"model_name": "../etc"}, "model_name"),
    ({"model_name": "a..b"}, "model_name"),
    ({"model_name": "x" * 65}, "model_name"),
    ({"unknown_field": 1}, "unknown_field"),
    ({"optimizer": {"name": "sgd", "beta": 1}}, "optimizer.beta"),
    ({"architecture_params": {"hidden_size": 0}}, "hidden_size"),
    ({"architecture_params": {"depth": 3}}, "no parameter 'depth'"),
    ({"dataset_params": {"n_samples": 5}}, "dataset 'boston_housing' has no parameter"),
    ({"architecture": "mnist_convnet"}, "mnist_convnet"),
    ({"architecture": "mlp", "dataset": "digits", "loss": "mse"}, "does not fit a classification"),
    ({"grad_clip_norm": 0}, "grad_clip_norm"),
    ({"lr_schedule": "linear"}, "lr_schedule"),
]


@pytest.mark.parametrize(("change", "message"), BAD_REQUESTS)
def test_bad_requests_get_422_naming_the_problem(
    client: TestClient, services, sent, change, message
):
    response = submit(client, MINIMAL | change)
    assert response.status_code == 422, response.text
    assert message in json.dumps(response.json()["detail"]), response.json()
    assert services.store.count_jobs("queued") == 0 and sent == []


@pytest.mark.parametrize("missing", ["model_name", "architecture", "dataset"])
def test_required_fields(client: TestClient, missing):
    body = {k: v for k, v in MINIMAL.items() if k != missing}
    response = submit(client, body)
    assert response.status_code == 422
    assert missing in json.dumps(response.json()["detail"])


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_refused(client: TestClient, literal):
    body = json.dumps(MINIMAL)[:-1] + f', "test_fraction": {literal}}}'
    response = client.post("/v1/jobs", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert "test_fraction" in json.dumps(response.json()["detail"])


@pytest.mark.parametrize(
    ("body", "code"), [(b"{", 422), (b"[]", 422), (b'"x"', 422), (b"\xff", 400)]
)
def test_malformed_json_is_refused(client: TestClient, body, code):
    response = client.post("/v1/jobs", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == code
    assert response.json()["detail"]


def test_idempotency_key_returns_the_same_job(client: TestClient, services, sent):
    first = submit(client, **{"Idempotency-Key": "abc"})
    again = submit(client, **{"Idempotency-Key": "abc"})
    assert first.status_code == 202 and again.status_code == 200
    assert first.json() == again.json()
    assert again.headers["location"] == first.headers["location"]
    assert services.store.count_jobs("queued") == 1
    other = submit(client, MINIMAL | {"epochs": 3}, **{"Idempotency-Key": "abc"})
    assert other.status_code == 409 and "different request" in other.json()["detail"]
    another_key = client.post("/v1/jobs", json=MINIMAL, headers={"Idempotency-Key": "xyz"})
    assert another_key.json()["id"] != first.json()["id"]


def test_idempotency_keys_are_scoped_by_api_key(tmp_path):
    from app.api.main import create_app
    from tests.app.conftest import make_settings

    with TestClient(create_app(make_settings(tmp_path, api_keys="k1,k2"))) as client:
        ids = {
            client.post(
                "/v1/jobs",
                json=MINIMAL,
                headers={"Authorization": f"Bearer {key}", "Idempotency-Key": "same"},
            ).json()["id"]
            for key in ("k1", "k2")
        }
        assert len(ids) == 2


def test_queue_limit_is_a_422_naming_the_limit(tmp_path):
    from app.api.main import create_app
    from tests.app.conftest import AUTH, make_settings

    with TestClient(create_app(make_settings(tmp_path, max_queued_jobs=1)), headers=AUTH) as client:
        assert submit(client).status_code == 202
        response = submit(client)
        assert response.status_code == 422
        detail = response.json()["detail"]
        assert "limit is 1" in detail and "TRAINSERVE_MAX_QUEUED_JOBS" in detail


def test_list_filter_and_paginate(client: TestClient, services: Services):
    ids = [submit(client, MINIMAL | {"model_name": f"m{i % 2}"}).json()["id"] for i in range(5)]
    services.store.cancel(ids[0])
    page = client.get("/v1/jobs").json()
    assert page["total"] == 5
    assert [j["id"] for j in page["items"]] == ids[::-1]  # newest first
    assert client.get("/v1/jobs?model_name=m1").json()["total"] == 2
    cancelled = client.get("/v1/jobs?status=cancelled").json()
    assert [j["id"] for j in cancelled["items"]] == [ids[0]]
    window = client.get("/v1/jobs?limit=2&offset=1").json()
    assert window["total"] == 5 and [j["id"] for j in window["items"]] == ids[::-1][1:3]
    for bad in ("limit=0", "limit=201", "offset=-1", "status=done"):
        assert client.get(f"/v1/jobs?{bad}").status_code == 422, bad


def _run_to_the_end(services: Services, job_id: str, status: str = "succeeded"):
    lease = services.store.claim(job_id, "w")
    services.store.heartbeat(job_id, lease, epoch=1)
    services.store.record_evaluation(
        job_id, lease, {"epoch": 1, "train_loss": 2.0, "val_loss": 3.0}
    )
    services.store.record_evaluation(
        job_id, lease, {"epoch": 2, "train_loss": 1.0, "val_loss": 1.5}
    )
    services.store.finish(job_id, lease, status)


def test_metrics_history(client: TestClient, services: Services):
    job_id = submit(client).json()["id"]
    assert client.get(f"/v1/jobs/{job_id}/metrics").json() == {"history": []}
    _run_to_the_end(services, job_id)
    history = client.get(f"/v1/jobs/{job_id}/metrics").json()["history"]
    assert history == [
        {"epoch": 1, "train_loss": 2.0, "val_loss": 3.0},
        {"epoch": 2, "train_loss": 1.0, "val_loss": 1.5},
    ]
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["metrics"] == {"train_loss": 1.0, "val_loss": 1.5}
    assert job["progress"]["epoch"] == 2
    assert job["started_at"].endswith(("Z", "+00:00")) and job["finished_at"]


def test_cancel(client: TestClient, services: Services):
    queued = submit(client).json()["id"]
    response = client.post(f"/v1/jobs/{queued}/cancel")
    assert response.status_code == 202 and response.json()["status"] == "cancelled"
    assert client.post(f"/v1/jobs/{queued}/cancel").status_code == 409  # it has ended
    running = submit(client).json()["id"]
    services.store.claim(running, "w")
    response = client.post(f"/v1/jobs/{running}/cancel")
    assert response.status_code == 202 and response.json()["status"] == "running"
    assert services.store.get_job(running).cancel_requested
    finished = submit(client).json()["id"]
    _run_to_the_end(services, finished)
    response = client.post(f"/v1/jobs/{finished}/cancel")
    assert response.status_code == 409 and "succeeded" in response.json()["detail"]


@pytest.mark.parametrize(
    "path", ["/v1/jobs/{}", "/v1/jobs/{}/metrics", "/v1/jobs/{}/events", "/v1/jobs/{}/cancel"]
)
@pytest.mark.parametrize("job_id", ["0" * 32, "x" * 300, "..%2F..%2Fetc"])
def test_unknown_job_is_404(client: TestClient, path, job_id):
    method = "POST" if path.endswith("cancel") else "GET"
    response = client.request(method, path.format(job_id))
    assert response.status_code == 404
    assert response.json()["detail"]  # "job '...' does not exist", or no such route


def _events(text: str) -> list[dict]:
    return [
        json.loads(line[len("data: ") :]) for line in text.splitlines() if line.startswith("data: ")
    ]


@pytest.mark.timeout(20)
def test_events_of_a_finished_job_end(client: TestClient, services: Services):
    job_id = submit(client).json()["id"]
    _run_to_the_end(services, job_id)
    with client.stream("GET", f"/v1/jobs/{job_id}/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        text = response.read().decode()
    assert text.startswith("event: job\n")
    events = _events(text)
    assert len(events) == 1 and events[0]["status"] == "succeeded"


@pytest.mark.timeout(20)
def test_events_follow_a_job_until_it_ends(client: TestClient, services: Services, monkeypatch):
    job_id = submit(client).json()["id"]
    calls = {"n": 0, "lease": None}
    get_job = services.store.get_job

    def advancing(jid):  # the job moves on while the stream polls it
        calls["n"] += 1
        if calls["n"] == 3:
            calls["lease"] = services.store.claim(job_id, "w")
        if calls["n"] == 6:
            services.store.finish(job_id, calls["lease"], "cancelled")
        return get_job(jid)

    monkeypatch.setattr(services.store, "get_job", advancing)
    monkeypatch.setattr(jobs, "KEEPALIVE_S", 0.0)
    with client.stream("GET", f"/v1/jobs/{job_id}/events") as response:
        text = response.read().decode()
    statuses = [event["status"] for event in _events(text)]
    assert ": keep-alive" in text
    assert statuses[0] == "queued" and statuses[-1] == "cancelled"
    assert "running" in statuses and len(statuses) == len(set(statuses))


WIDE_CNN = {
    "model_name": "wide",
    "architecture": "cnn",
    "dataset": "digits28",
    "architecture_params": {"channels": [256] * 6, "kernel_size": 5, "pool": False},
}


def test_a_job_whose_activations_exceed_the_memory_budget_is_refused(client: TestClient):
    """Within every limit of the catalogue (weights, epochs, batch size), yet a training step
    would need about 15 GiB of activations: refused before a worker runs out of memory."""
    response = submit(client, WIDE_CNN | {"batch_size": 512})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert "TRAINSERVE_MAX_JOB_MEMORY_BYTES" in detail and "batch_size 512" in detail
    assert "GiB of activations" in detail
    assert submit(client, WIDE_CNN | {"batch_size": 16}).status_code == 202
