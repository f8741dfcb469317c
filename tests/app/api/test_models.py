"""Models: listing, versions, predictions (checked against the Predictor), weight downloads."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from safetensors import safe_open

from app.api.stored_weights import open_verified_weights
from app.core.artifacts import weights_key
from app.core.services import Services
from models.predictor import Predictor
from models.training import TrainingResult
from tests.app.conftest import publish

BOSTON_ROW = [0.00632, 18, 2.31, 0, 0.538, 6.575, 65.2, 4.09, 1, 296, 15.3, 396.9, 4.98]


@pytest.fixture
def house(services: Services, house_model: TrainingResult) -> str:
    publish(services, "house-prices", house_model)
    return "house-prices"


def test_models_and_versions(client: TestClient, services, house, house_model):
    assert publish(services, house, house_model) == 2
    models = client.get("/v1/models").json()
    assert [(m["name"], m["latest_version"], m["task"]) for m in models] == [
        ("house-prices", 2, "regression")
    ]
    assert models[0]["architecture"] == "house_prices_mlp"
    detail = client.get("/v1/models/house-prices").json()
    versions = detail["versions"]
    assert [v["version"] for v in versions] == [1, 2]
    assert versions[0]["input_shape"] == [13] and versions[0]["task"] == "regression"
    assert set(versions[0]["metrics"]) >= {"train_loss", "val_loss", "val_rmse"}
    assert versions[0]["created_at"].endswith(("Z", "+00:00"))


def test_a_retrain_of_another_kind_is_what_the_model_reports(
    client: TestClient, services, house, classifier_model
):
    assert publish(services, house, classifier_model) == 2  # regression, then a classifier
    expected = ("house-prices", 2, "classification", "mlp")
    (model,) = client.get("/v1/models").json()
    assert (model["name"], model["latest_version"], model["task"], model["architecture"]) == (
        expected
    )
    detail = client.get("/v1/models/house-prices").json()
    assert (detail["name"], detail["latest_version"], detail["task"], detail["architecture"]) == (
        expected
    )
    assert [(v["task"], v["architecture"]) for v in detail["versions"]] == [
        ("regression", "house_prices_mlp"),
        ("classification", "mlp"),
    ]


def test_predict_matches_the_predictor(client: TestClient, house, house_model):
    inputs = [BOSTON_ROW, [0.1] * 13]
    response = client.post(f"/v1/models/{house}/predict", json={"inputs": inputs})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_name"] == house and body["version"] == 1
    assert "probabilities" not in body
    expected = Predictor.from_bytes(house_model.weights()).predict(np.array(inputs, np.float32))
    assert body["predictions"] == pytest.approx(expected.predictions, rel=1e-5)
    pinned = client.post(f"/v1/models/{house}/predict?version=1", json={"inputs": inputs})
    assert pinned.json() == body


def test_the_predict_example_works(client: TestClient, house):
    doc = client.get("/openapi.json").json()
    example = doc["components"]["schemas"]["PredictRequest"]["examples"][0]
    assert client.post(f"/v1/models/{house}/predict", json=example).status_code == 200


def test_classifier_adds_probabilities(client: TestClient, services, classifier_model):
    publish(services, "clf", classifier_model)
    response = client.post("/v1/models/clf/predict", json={"inputs": [[0, 0, 0, 0], [1, 2, 3, 4]]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert all(isinstance(p, int) and 0 <= p < 3 for p in body["predictions"])
    assert [sum(row) for row in body["probabilities"]] == pytest.approx([1.0, 1.0], abs=1e-5)
    assert body["classes"] == ["0", "1", "2"]


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ([BOSTON_ROW, BOSTON_ROW[:12]], "sample 1 has shape 12; expected 13"),
        ([[*BOSTON_ROW[:12], "NaN"]], "sample 0"),
        ([[1] * 13, [[1, 2], [3]]], "sample 1"),
        ([], "at least 1 item"),
        ([BOSTON_ROW] * 17, "limit of 16"),
        ([[True] * 13, "text"], "sample 1"),
    ],
)
def test_bad_inputs_are_422_naming_the_sample(client: TestClient, house, inputs, message):
    response = client.post(f"/v1/models/{house}/predict", json={"inputs": inputs})
    assert response.status_code == 422, response.text
    assert message in str(response.json()["detail"])


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_numbers_are_422_naming_the_sample(client: TestClient, house, literal):
    row = ", ".join(["1"] * 12 + [literal])
    body = f'{{"inputs": [[{", ".join(["1"] * 13)}], [{row}]]}}'
    response = client.post(
        f"/v1/models/{house}/predict", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert "sample 1" in response.json()["detail"]


def test_predict_body_shape_is_validated(client: TestClient, house):
    for body in ({}, {"inputs": 3}, {"inputs": [[1] * 13], "extra": 1}):
        response = client.post(f"/v1/models/{house}/predict", json=body)
        assert response.status_code == 422, body


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/models/nope"),
        ("GET", "/v1/models/..%2Fetc"),
        ("GET", "/v1/models/UPPER"),
        ("POST", "/v1/models/nope/predict"),
        ("POST", "/v1/models/house-prices/predict?version=9"),
        ("GET", "/v1/models/house-prices/versions/9/weights"),
        ("GET", "/v1/models/nope/versions/1/weights"),
        ("GET", "/v1/models/..%2F..%2Fx/versions/1/weights"),
    ],
)
def test_unknown_models_and_versions_are_404(client: TestClient, house, method, path):
    response = client.request(method, path, json={"inputs": [BOSTON_ROW]})
    assert response.status_code == 404, response.text
    assert response.json()["detail"]


# Neither a version number nor an alias ("x" is an alias: 404, see test_model_registry.py)
@pytest.mark.parametrize("version", ["0", "-1", "X", str(2**70)])
def test_bad_version_numbers_are_refused(client: TestClient, house, version):
    weights = client.get(f"/v1/models/{house}/versions/{version}/weights")
    predict = client.post(
        f"/v1/models/{house}/predict?version={version}", json={"inputs": [BOSTON_ROW]}
    )
    assert weights.status_code == predict.status_code == 422


def test_weights_download_is_valid_safetensors(client: TestClient, services, house, tmp_path):
    response = client.get(f"/v1/models/{house}/versions/1/weights")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    assert 'filename="house-prices-v1.safetensors"' in response.headers["content-disposition"]
    assert response.content == services.artifacts.get(weights_key(house, 1))
    path = tmp_path / "w.safetensors"
    path.write_bytes(response.content)
    with safe_open(str(path), framework="pt") as handle:
        card = json.loads(handle.metadata()["trainserve"])
        assert card["architecture"] == "house_prices_mlp" and card["input_stats"]
        assert list(handle.keys())


def _flip_a_byte(services: Services, name: str, version: int) -> None:
    path = services.artifacts.path(weights_key(name, version))
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def test_corrupt_weights_are_503_naming_the_version(client: TestClient, services, house):
    _flip_a_byte(services, house, 1)
    response = client.post(f"/v1/models/{house}/predict", json={"inputs": [BOSTON_ROW]})
    assert response.status_code == 503
    assert "model 'house-prices' version 1" in response.json()["detail"]
    assert services.store.get_version(house, 1).corrupt
    download = client.get(f"/v1/models/{house}/versions/1/weights")
    assert download.status_code == 503 and "version 1" in download.json()["detail"]
    assert client.get(f"/v1/models/{house}").json()["versions"][0]["corrupt"] is True


def test_missing_weights_are_503(client: TestClient, services, house):
    services.artifacts.delete(weights_key(house, 1))
    response = client.post(f"/v1/models/{house}/predict", json={"inputs": [BOSTON_ROW]})
    assert response.status_code == 503 and "missing" in response.json()["detail"]


def test_missing_weights_are_503_to_download(client: TestClient, services, house):
    services.artifacts.delete(weights_key(house, 1))
    download = client.get(f"/v1/models/{house}/versions/1/weights")
    assert download.status_code == 503 and "missing" in download.json()["detail"]


def test_a_download_sends_the_bytes_it_checked(services, house, classifier_model):
    """The file is opened once: replaced after its check, the old bytes are still what is sent."""
    key = weights_key(house, 1)
    checked = services.artifacts.get(key)
    row = services.store.get_version(house, 1)
    with open_verified_weights(services, row) as handle:
        services.artifacts.put(key, classifier_model.weights())
        assert handle.read() == checked
    assert services.artifacts.get(key) != checked


def test_a_version_is_loaded_once(client: TestClient, house):
    cache = client.app.state.model_cache
    for _ in range(3):
        client.post(f"/v1/models/{house}/predict", json={"inputs": [BOSTON_ROW]})
    assert cache.loads == 1 and len(cache) == 1
