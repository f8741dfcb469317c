"""A registry you can trust: diverged runs publish nothing; aliases name versions (set, moved,
removed), and predict, the model's detail and the weights download take a number or an alias."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.core.services import Services
from models.training import TrainingResult
from tests.app.api.test_models import BOSTON_ROW
from tests.app.conftest import publish
from workers.runner import run_job

PREDICT = {"inputs": [BOSTON_ROW]}


@pytest.fixture
def house(services: Services, house_model: TrainingResult) -> str:
    """house-prices with three versions (the same weights: versions are told apart by number)."""
    for _ in range(3):
        publish(services, "house-prices", house_model)
    return "house-prices"


def test_a_diverged_job_fails_with_the_fix_and_publishes_nothing(
    client: TestClient, services: Services
):
    request = {
        "model_name": "house-prices",
        "architecture": "house_prices_mlp",
        "dataset": "boston_housing",
        "optimizer": {"name": "sgd", "lr": 10},
        "epochs": 10,
        "device": "cpu",
    }
    submitted = client.post("/v1/jobs", json=request)
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["id"]
    assert run_job(job_id, services) == "failed"
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "failed" and job["model_version"] is None
    assert job["error"] == (
        "diverged at epoch 1: the loss became infinite; lower lr or enable grad_clip_norm"
    )
    assert client.get("/v1/models").json() == []
    assert client.get("/v1/models/house-prices").status_code == 404
    assert client.post("/v1/models/house-prices/predict", json=PREDICT).status_code == 404


def test_an_alias_is_set_moved_and_removed(client: TestClient, house):
    assert client.get(f"/v1/models/{house}").json()["aliases"] == {}
    put = client.put(f"/v1/models/{house}/aliases/staging", json={"version": 2})
    assert put.status_code == 200, put.text
    assert put.json() == {"model_name": house, "alias": "staging", "version": 2}
    assert client.get(f"/v1/models/{house}").json()["aliases"] == {"staging": 2}

    moved = client.put(f"/v1/models/{house}/aliases/staging", json={"version": 1})
    assert moved.status_code == 200 and moved.json()["version"] == 1
    client.put(f"/v1/models/{house}/aliases/production", json={"version": 3})
    detail = client.get(f"/v1/models/{house}").json()
    assert detail["aliases"] == {"production": 3, "staging": 1}
    assert [v["version"] for v in detail["versions"]] == [1, 2, 3]

    gone = client.delete(f"/v1/models/{house}/aliases/staging")
    assert gone.status_code == 204 and gone.content == b""
    assert client.get(f"/v1/models/{house}").json()["aliases"] == {"production": 3}
    again = client.delete(f"/v1/models/{house}/aliases/staging")
    assert again.status_code == 404
    assert again.json()["detail"] == (
        "model 'house-prices' has no alias 'staging'; its aliases: production"
    )


def test_predict_weights_and_detail_take_an_alias(client: TestClient, house):
    client.put(f"/v1/models/{house}/aliases/candidate", json={"version": 2})
    predicted = client.post(f"/v1/models/{house}/predict?version=candidate", json=PREDICT)
    assert predicted.status_code == 200, predicted.text
    assert predicted.json()["version"] == 2
    by_number = client.post(f"/v1/models/{house}/predict?version=2", json=PREDICT).json()
    assert by_number["predictions"] == predicted.json()["predictions"]

    detail = client.get(f"/v1/models/{house}?version=candidate").json()
    assert [v["version"] for v in detail["versions"]] == [2]
    assert detail["aliases"] == {"candidate": 2}
    assert [
        v["version"] for v in client.get(f"/v1/models/{house}?version=3").json()["versions"]
    ] == [3]

    weights = client.get(f"/v1/models/{house}/versions/candidate/weights")
    by_version = client.get(f"/v1/models/{house}/versions/2/weights")
    assert weights.status_code == 200 and weights.content == by_version.content
    assert weights.headers["etag"] == by_version.headers["etag"]
    assert 'filename="house-prices-v2.safetensors"' in weights.headers["content-disposition"]


def test_predict_defaults_to_production_else_the_latest(client: TestClient, house):
    def default_version() -> int:
        response = client.post(f"/v1/models/{house}/predict", json=PREDICT)
        assert response.status_code == 200, response.text
        return response.json()["version"]

    assert default_version() == 3  # no production alias: the latest
    client.put(f"/v1/models/{house}/aliases/staging", json={"version": 2})
    assert default_version() == 3  # another alias changes nothing
    client.put(f"/v1/models/{house}/aliases/production", json={"version": 1})
    assert default_version() == 1
    client.put(f"/v1/models/{house}/aliases/production", json={"version": 2})
    assert default_version() == 2
    client.delete(f"/v1/models/{house}/aliases/production")
    assert default_version() == 3


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/models/house-prices/predict?version=nope"),
        ("GET", "/v1/models/house-prices?version=nope"),
        ("GET", "/v1/models/house-prices/versions/nope/weights"),
    ],
)
def test_an_unknown_alias_is_404_naming_the_known_ones(client: TestClient, house, method, path):
    client.put(f"/v1/models/{house}/aliases/production", json={"version": 1})
    client.put(f"/v1/models/{house}/aliases/staging", json={"version": 2})
    response = client.request(method, path, json=PREDICT)
    assert response.status_code == 404, response.text
    assert response.json()["detail"] == (
        "model 'house-prices' has no alias 'nope'; its aliases: production, staging"
    )


def test_an_alias_of_a_missing_version_or_model_is_refused(client: TestClient, house):
    missing = client.put(f"/v1/models/{house}/aliases/production", json={"version": 9})
    assert missing.status_code == 404
    assert missing.json()["detail"] == (
        "model 'house-prices' has no version 9; its versions are 1 to 3"
    )
    nobody = client.put("/v1/models/nope/aliases/production", json={"version": 1})
    assert nobody.status_code == 404 and nobody.json()["detail"] == "model 'nope' does not exist"
    assert client.delete("/v1/models/nope/aliases/production").status_code == 404
    assert client.get(f"/v1/models/{house}").json()["aliases"] == {}


@pytest.mark.parametrize("alias", ["1", "007", "Prod", "a..b", "-x", "x" * 65])
def test_alias_names_that_are_digits_or_not_slugs_are_422(client: TestClient, house, alias):
    response = client.put(f"/v1/models/{house}/aliases/{alias}", json={"version": 1})
    assert response.status_code == 422, response.text
    assert "is not a valid alias" in response.json()["detail"]
    assert client.delete(f"/v1/models/{house}/aliases/{alias}").status_code == 422
    assert client.get(f"/v1/models/{house}").json()["aliases"] == {}


@pytest.mark.parametrize(
    "body", [{}, {"version": 0}, {"version": "2"}, {"version": 2.0}, {"version": True}, [2]]
)
def test_the_alias_body_is_a_strict_version_number(client: TestClient, house, body):
    response = client.put(f"/v1/models/{house}/aliases/production", json=body)
    assert response.status_code == 422, response.text
    assert client.get(f"/v1/models/{house}").json()["aliases"] == {}


@pytest.mark.parametrize("version", ["0", "-1", str(2**31), "9" * 5000, "Prod", "a..b"])
def test_a_version_that_is_neither_number_nor_alias_is_422(client: TestClient, house, version):
    response = client.post(f"/v1/models/{house}/predict?version={version}", json=PREDICT)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail.startswith("version ") and len(detail) < 300
