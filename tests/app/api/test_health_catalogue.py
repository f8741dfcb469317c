"""Health, readiness and the catalogue lists."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.exc import OperationalError

from app.core.services import Services


def test_healthz(client: TestClient):
    assert client.get("/healthz").json() == {"status": "ok"}


def test_readyz_when_store_and_broker_answer(client: TestClient):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "store": "ok", "broker": "ok", "artifacts": "ok"}


def test_readyz_names_the_store_when_it_is_down(
    client: TestClient, services: Services, monkeypatch
):
    def down(status):
        raise OperationalError("SELECT 1", {}, Exception("connection refused"))

    monkeypatch.setattr(services.store, "count_jobs", down)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert "job store" in response.json()["detail"]
    assert "broker" not in response.json()["detail"]


def test_readyz_names_the_broker_when_it_is_down(client: TestClient, services: Services):
    services.settings.broker_url = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    services.__dict__.pop("celery", None)  # the cached Celery app is rebuilt from the new URL
    response = client.get("/readyz")
    assert response.status_code == 503
    assert "broker" in response.json()["detail"]
    assert "job store" not in response.json()["detail"]


def test_architectures_list_the_catalogue(client: TestClient):
    entries = {a["name"]: a for a in client.get("/v1/architectures").json()}
    for name in ("house_prices_mlp", "mlp", "mnist_convnet", "cnn", "resnet18"):
        assert name in entries
    house = entries["house_prices_mlp"]
    assert house["task"] == "regression"
    assert house["params"] == {"hidden_size": 13}
    assert house["description"]


def test_datasets_list_registry_with_unavailable_ones(client: TestClient):
    entries = {d["name"]: d for d in client.get("/v1/datasets").json()}
    for name in (
        "boston_housing",
        "diabetes",
        "digits",
        "digits28",
        "mnist",
        "fashion_mnist",
        "synthetic_regression",
        "synthetic_classification",
    ):
        assert name in entries
    boston = entries["boston_housing"]
    assert boston["task"] == "regression" and boston["input_shape"] == [13]
    assert boston["n_samples"] == 506 and boston["available"]
    assert entries["digits28"]["input_shape"] == [1, 28, 28]
    assert entries["digits28"]["n_classes"] == 10
    mnist = entries["mnist"]
    assert mnist["available"] is False and "downloads are disabled" in mnist["reason"]


def test_openapi_documents_every_route_with_examples(client: TestClient):
    doc = client.get("/openapi.json").json()
    paths = doc["paths"]
    for path in (
        "/v1/jobs",
        "/v1/jobs/{job_id}",
        "/v1/jobs/{job_id}/events",
        "/v1/jobs/{job_id}/cancel",
        "/v1/jobs/{job_id}/metrics",
        "/v1/models",
        "/v1/models/{name}",
        "/v1/models/{name}/predict",
        "/v1/models/{name}/versions/{version}/weights",
        "/v1/datasets",
        "/v1/architectures",
        "/healthz",
        "/readyz",
    ):
        assert path in paths, path
    assert doc["components"]["schemas"]["JobRequest"]["examples"]
    events = paths["/v1/jobs/{job_id}/events"]["get"]["responses"]["200"]["content"]
    assert "text/event-stream" in events
