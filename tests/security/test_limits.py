"""Every limit is configurable (TRAINSERVE_MAX_*) and a request over one gets a 413 or a 422 whose
message names the limit: its value and its variable. Tested with small configured values."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.api.main import create_app
from app.core.settings import Settings
from tests.app.api.test_models import BOSTON_ROW
from tests.app.conftest import AUTH, make_settings, publish

MINIMAL = {"model_name": "house", "architecture": "house_prices_mlp", "dataset": "boston_housing"}
LIMITS = {
    "max_body_bytes": 2048,
    "max_upload_bytes": 4096,
    "max_predict_samples": 3,
    "max_epochs": 20,
    "max_batch_size": 64,
    "max_queued_jobs": 2,
}


@pytest.fixture
def small(tmp_path) -> TestClient:
    with TestClient(create_app(make_settings(tmp_path, **LIMITS)), headers=AUTH) as client:
        yield client


def assert_names_the_limit(response, code: int, value: int, variable: str) -> None:
    assert response.status_code == code, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and str(value) in detail and variable in detail, detail


def test_the_defaults_are_sane():
    defaults = Settings(_env_file=None)
    assert 1024 * 1024 <= defaults.max_body_bytes <= 100 * 1024 * 1024
    assert defaults.max_body_bytes <= defaults.max_upload_bytes <= 1024**3
    assert 1 <= defaults.max_predict_samples <= 100_000
    assert 1 <= defaults.max_epochs <= 1_000_000 and 1 <= defaults.max_batch_size <= 10**6
    assert 1 <= defaults.max_queued_jobs <= 10_000 and 60 <= defaults.max_job_seconds <= 7 * 86400


def test_body_size(small: TestClient):
    body = MINIMAL | {"model_name": "x" * 3000}
    assert_names_the_limit(
        small.post("/v1/jobs", json=body), 413, 2048, "TRAINSERVE_MAX_BODY_BYTES"
    )
    predict = {"inputs": [BOSTON_ROW] * 40}  # bodies of every route count
    response = small.post("/v1/models/m/predict", json=predict)
    assert_names_the_limit(response, 413, 2048, "TRAINSERVE_MAX_BODY_BYTES")


def test_upload_size(small: TestClient):
    data = b"a,label\n" + b"1,2\n" * 1100
    response = small.post(
        "/v1/datasets", data={"name": "big", "target": "label"}, files={"file": ("d.csv", data)}
    )
    assert_names_the_limit(response, 413, 4096, "TRAINSERVE_MAX_UPLOAD_BYTES")
    small_one = b"a,label\n" + b"1,2\n" * 10
    response = small.post(
        "/v1/datasets", data={"name": "ok", "target": "label"}, files={"file": ("d.csv", small_one)}
    )
    assert response.status_code == 201, response.text  # uploads have their own, larger limit


def test_predict_samples(small: TestClient, house_model):
    publish(small.app.state.services, "house-prices", house_model)
    ok = small.post("/v1/models/house-prices/predict", json={"inputs": [BOSTON_ROW] * 3})
    assert ok.status_code == 200, ok.text
    response = small.post("/v1/models/house-prices/predict", json={"inputs": [BOSTON_ROW] * 4})
    assert_names_the_limit(response, 422, 3, "TRAINSERVE_MAX_PREDICT_SAMPLES")


@pytest.mark.parametrize(
    ("field", "value", "limit", "variable"),
    [
        ("epochs", 21, 20, "TRAINSERVE_MAX_EPOCHS"),
        ("batch_size", 65, 64, "TRAINSERVE_MAX_BATCH_SIZE"),
    ],
)
def test_training_sizes(small: TestClient, field, value, limit, variable):
    assert small.post("/v1/jobs", json=MINIMAL | {field: limit}).status_code == 202
    response = small.post("/v1/jobs", json=MINIMAL | {field: value, "model_name": "other"})
    assert_names_the_limit(response, 422, limit, variable)
    assert field in response.json()["detail"]


def test_queued_jobs_per_api_key(tmp_path):
    settings = make_settings(tmp_path, **LIMITS | {"api_keys": "k1,k2"})
    with TestClient(create_app(settings)) as client:

        def submit(key: str, name: str):
            return client.post(
                "/v1/jobs",
                json=MINIMAL | {"model_name": name},
                headers={"Authorization": f"Bearer {key}"},
            )

        first, second = submit("k1", "m0"), submit("k1", "m1")
        assert first.status_code == second.status_code == 202
        assert_names_the_limit(submit("k1", "m2"), 422, 2, "TRAINSERVE_MAX_QUEUED_JOBS")
        assert submit("k2", "m3").status_code == 202  # the limit is per API key
        cancel = client.post(
            f"/v1/jobs/{first.json()['id']}/cancel", headers={"Authorization": "Bearer k1"}
        )
        assert cancel.status_code == 202
        assert submit("k1", "m4").status_code == 202  # a place freed up


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"architecture_params": {"hidden_size": 1025}}, ("hidden_size", "between 1 and 1024")),
        ({"architecture_params": {"hidden_size": 0}}, ("hidden_size", "between 1 and 1024")),
        (
            {
                "architecture": "cnn",
                "dataset": "digits28",
                "architecture_params": {"channels": [256], "pool": False, "hidden_size": 1024},
            },
            ("over the limit of 100,000,000",),
        ),
        (
            {"dataset": "synthetic_regression", "dataset_params": {"n_samples": 10**7}},
            ("n_samples", "between"),
        ),
    ],
)
def test_architecture_and_dataset_bounds(small: TestClient, change, words):
    response = small.post("/v1/jobs", json=MINIMAL | change)
    assert response.status_code == 422, response.text
    for word in words:
        assert word in response.json()["detail"]
