"""Fixtures for the HTTP API: a fresh data dir, SQLite, the in-memory broker, a known key."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.api.main import create_app
from app.core.services import Services
from app.core.settings import Settings
from models.request import TrainingRequest
from models.training import TrainingResult, run_training
from workers.runner import publish_result

KEY = "test-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No TRAINSERVE_* variable of the developer's shell reaches the settings."""
    for name in list(os.environ):
        if name.startswith("TRAINSERVE_"):
            monkeypatch.delenv(name)


def make_settings(tmp_path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp_path,
        "database_url": f"sqlite:///{tmp_path / 'jobs.db'}",
        "auto_migrate": True,
        "broker_url": "memory://",
        "api_keys": KEY,
        "max_epochs": 1000,
        "max_predict_samples": 16,
        "max_body_bytes": 64 * 1024,
        "max_upload_bytes": 256 * 1024,
        # Eager PyTorch throughout (the default, auto, switches some architectures to ONNX
        # Runtime seconds after a load, with answers equal to 1e-5, not bit for bit);
        # tests/app/api/test_batching.py tests both backends.
        "predict_backend": "eager",
    }
    return Settings(**(values | overrides))


@pytest.fixture
def settings(tmp_path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    app = create_app(settings)
    app.state.events_poll_s = 0.01
    with TestClient(app, headers=AUTH) as test_client:
        yield test_client


@pytest.fixture
def services(client: TestClient) -> Services:
    return client.app.state.services


@pytest.fixture
def sent(services: Services, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Job ids sent to the broker (still sent for real, to the in-memory broker)."""
    ids: list[str] = []
    original = services.enqueue

    def record(job_id: str) -> None:
        original(job_id)
        ids.append(job_id)

    monkeypatch.setattr(services, "enqueue", record)
    return ids


# -- trained models, published the way a worker publishes them ----------------------------


@pytest.fixture(scope="session")
def house_model() -> TrainingResult:
    config = TrainingRequest(architecture="house_prices_mlp", dataset="boston_housing", epochs=2)
    return run_training(config)


@pytest.fixture(scope="session")
def classifier_model() -> TrainingResult:
    config = TrainingRequest(
        architecture="mlp",
        dataset="synthetic_classification",
        dataset_params={"n_samples": 60, "n_features": 4, "n_classes": 3},
        architecture_params={"hidden_size": 8},
        epochs=2,
    )
    return run_training(config)


def publish(services: Services, name: str, result: TrainingResult) -> int:
    """Submit, claim and publish a job for `result`, as workers/runner.py does; the version."""
    card = result.card
    request = {
        "model_name": name,
        "architecture": card.architecture,
        "dataset": card.dataset,
        "epochs": 2,
    }
    job, _ = services.store.create_job(request)
    lease = services.store.claim(job.id, "test-worker")
    return publish_result(services, job.id, lease, name, result)
