"""The registry's lifecycle through the HTTP API: promotion rules, deletion (jobs, versions,
models, datasets; refusals; files with their rows; orphans swept), exports and device honesty.

Jobs run through the real runner (`run_job`) on the app's services; the end-to-end versions,
with a real server and worker, are in tests/e2e/test_registry.py."""

from __future__ import annotations

import dataclasses
import io
import json
from datetime import timedelta

import numpy as np
import onnxruntime
import pytest
import torch
from fastapi.testclient import TestClient
from safetensors import safe_open

from app.core.artifacts import export_key, version_keys, weights_key
from app.core.cleanup import checkpoint_dir, sweep
from app.core.services import Services
from models.training import TrainingResult
from tests.app.api.test_models import BOSTON_ROW
from tests.app.conftest import publish
from workers.runner import publish_result, run_job

HOUSE = {
    "model_name": "house",
    "architecture": "house_prices_mlp",
    "dataset": "boston_housing",
    "optimizer": {"name": "adam", "lr": 0.01},
    "device": "cpu",
}


def _with_rmse(result: TrainingResult, rmse: float) -> TrainingResult:
    """The same weights, reported with another final val_rmse."""
    last = {**result.history[-1], "val_rmse": rmse}
    return dataclasses.replace(result, history=[*result.history[:-1], last])


def _publish(services: Services, result: TrainingResult, promote=None, name="house") -> dict:
    """A job published as the runner does, with a promotion rule; returns the job (as JSON)."""
    request = {"model_name": name, "architecture": "house_prices_mlp", "dataset": "x", "epochs": 2}
    if promote:
        request["promote"] = promote
    job, _ = services.store.create_job(request)
    lease = services.store.claim(job.id, "test-worker")
    publish_result(services, job.id, lease, name, result, promote)
    return job.id


# -- promotion -------------------------------------------------------------------------------


def test_promotion_sets_a_missing_alias_then_moves_only_when_better(
    client: TestClient, services: Services, house_model: TrainingResult
):
    rule = {"alias": "production", "if_better": "val_rmse"}
    first = _publish(services, _with_rmse(house_model, 5.0), rule)
    job = client.get(f"/v1/jobs/{first}").json()
    assert job["promotion"] == {
        "alias": "production",
        "version": 1,
        "previous": None,
        "metric": "val_rmse",
        "moved": True,
        "reason": "the model had no alias 'production'",
    }
    worse = client.get(f"/v1/jobs/{_publish(services, _with_rmse(house_model, 7.08), rule)}")
    assert worse.json()["promotion"]["moved"] is False
    assert worse.json()["promotion"]["reason"] == (
        "val_rmse 7.08 of version 2 is not better than 5 of version 1 (lower is better)"
    )
    assert client.get("/v1/models/house").json()["aliases"] == {"production": 1}
    predicted = client.post("/v1/models/house/predict", json={"inputs": [BOSTON_ROW]})
    assert predicted.json()["version"] == 1  # the worse version 2 is not served

    better = client.get(f"/v1/jobs/{_publish(services, _with_rmse(house_model, 3.5), rule)}")
    assert better.json()["promotion"]["moved"] is True
    assert "3.5 of version 3 is better than 5 of version 1" in better.json()["promotion"]["reason"]
    assert client.get("/v1/models/house").json()["aliases"] == {"production": 3}


def test_higher_is_better_for_r2_and_no_rule_always_moves(
    client: TestClient, services: Services, house_model: TrainingResult
):
    r2 = {"alias": "staging", "if_better": "val_r2"}
    _publish(services, house_model, r2)
    lower_r2 = dataclasses.replace(
        house_model, history=[{**house_model.history[-1], "val_r2": -5.0}]
    )
    refused = client.get(f"/v1/jobs/{_publish(services, lower_r2, r2)}").json()["promotion"]
    assert refused["moved"] is False and "(higher is better)" in refused["reason"]
    always = client.get(f"/v1/jobs/{_publish(services, lower_r2, {'alias': 'staging'})}").json()
    assert always["promotion"]["moved"] is True
    assert always["promotion"]["reason"] == "no if_better rule: the alias always moves"
    assert client.get("/v1/models/house").json()["aliases"] == {"staging": 3}


def test_a_real_job_applies_its_rule(client: TestClient, services: Services):
    submitted = client.post(
        "/v1/jobs", json={**HOUSE, "epochs": 3, "promote": {"alias": "production"}}
    )
    assert submitted.status_code == 202, submitted.text
    assert submitted.json()["request"]["promote"] == {"alias": "production", "if_better": None}
    assert run_job(submitted.json()["id"], services) == "succeeded"
    job = client.get(f"/v1/jobs/{submitted.json()['id']}").json()
    assert job["promotion"]["moved"] is True and job["promotion"]["version"] == 1
    assert client.get("/v1/models/house").json()["aliases"] == {"production": 1}


@pytest.mark.parametrize(
    ("promote", "dataset", "message"),
    [
        (
            {"alias": "production", "if_better": "val_accuracy"},
            "boston_housing",
            "promote.if_better: 'val_accuracy' is not a metric of regression models; choose "
            "one of train_loss, val_loss, val_mae, val_r2, val_rmse",
        ),
        (
            {"alias": "production", "if_better": "val_rmse"},
            "digits",
            "promote.if_better: 'val_rmse' is not a metric of classification models; choose "
            "one of train_loss, val_accuracy, val_loss",
        ),
    ],
)
def test_an_unknown_metric_for_the_task_is_refused_at_submission(
    client: TestClient, promote, dataset, message
):
    body = {**HOUSE, "architecture": "mlp", "dataset": dataset, "promote": promote}
    refused = client.post("/v1/jobs", json=body)
    assert refused.status_code == 422
    assert refused.json()["detail"] == message
    assert client.get("/v1/jobs").json()["total"] == 0


def test_a_bad_alias_in_the_rule_is_refused(client: TestClient):
    refused = client.post("/v1/jobs", json={**HOUSE, "promote": {"alias": "123"}})
    assert refused.status_code == 422
    assert "not only digits" in str(refused.json()["detail"])


# -- deletion --------------------------------------------------------------------------------


def test_delete_a_job_only_once_it_has_ended(client: TestClient, services: Services):
    job_id = client.post("/v1/jobs", json={**HOUSE, "epochs": 2}).json()["id"]
    refused = client.delete(f"/v1/jobs/{job_id}")
    assert refused.status_code == 409
    assert refused.json()["detail"] == (
        f"job '{job_id}' is queued; cancel it (POST /v1/jobs/{job_id}/cancel) and delete it "
        "once it has ended"
    )
    assert run_job(job_id, services) == "succeeded"
    checkpoint_dir(services.settings, job_id).mkdir(parents=True)  # as a crashed run leaves
    assert client.get(f"/v1/jobs/{job_id}/metrics").json()["history"]

    deleted = client.delete(f"/v1/jobs/{job_id}")
    assert deleted.status_code == 204 and deleted.content == b""
    assert client.get(f"/v1/jobs/{job_id}").status_code == 404
    assert client.get(f"/v1/jobs/{job_id}/metrics").status_code == 404
    assert not checkpoint_dir(services.settings, job_id).exists()
    assert client.delete(f"/v1/jobs/{job_id}").status_code == 404
    # the version it published stays
    assert client.get("/v1/models/house").json()["latest_version"] == 1


def test_delete_a_version_refused_while_aliased_unless_forced(
    client: TestClient, services: Services, house_model: TrainingResult
):
    for _ in range(3):
        publish(services, "house", house_model)
    client.put("/v1/models/house/aliases/production", json={"version": 3})
    client.put("/v1/models/house/aliases/canary", json={"version": 3})
    assert client.get("/v1/models/house/weights?format=onnx").status_code == 200
    files = version_keys("house", 3)
    assert all(services.artifacts.exists(key) for key in files[:2])  # weights and the onnx

    refused = client.delete("/v1/models/house/versions/3")
    assert refused.status_code == 409
    assert refused.json()["detail"] == (
        "version 3 of model 'house' is named by alias(es) canary, production: move or delete "
        "them first, or delete with ?force=true (which removes them too)"
    )
    assert services.artifacts.exists(weights_key("house", 3))

    assert client.delete("/v1/models/house/versions/3?force=true").status_code == 204
    detail = client.get("/v1/models/house").json()
    assert detail["aliases"] == {} and detail["latest_version"] == 2
    assert [v["version"] for v in detail["versions"]] == [1, 2]
    assert not any(services.artifacts.exists(key) for key in files)
    assert client.get("/v1/models/house/versions/3/weights").status_code == 404
    predicted = client.post("/v1/models/house/predict", json={"inputs": [BOSTON_ROW]})
    assert predicted.json()["version"] == 2

    assert client.delete("/v1/models/house/versions/1").status_code == 204
    missing = client.delete("/v1/models/house/versions/1")
    assert missing.status_code == 404
    assert missing.json()["detail"] == "model 'house' has no version 1; its versions: 2"
    assert client.delete("/v1/models/house/versions/abc").status_code == 422
    # numbers are never given twice: the next version is 4, not 3
    assert publish(services, "house", house_model) == 4


def test_delete_a_model_removes_every_version_and_alias(
    client: TestClient, services: Services, house_model: TrainingResult
):
    publish(services, "house", house_model)
    publish(services, "house", house_model)
    client.put("/v1/models/house/aliases/production", json={"version": 1})
    assert client.delete("/v1/models/house").status_code == 204
    assert client.get("/v1/models/house").status_code == 404
    assert client.get("/v1/models").json() == []
    assert client.post("/v1/models/house/predict", json={"inputs": [BOSTON_ROW]}).status_code == 404
    assert services.artifacts.list("weights/house/") == []
    assert client.delete("/v1/models/house").status_code == 404
    assert publish(services, "house", house_model) == 3  # published again: numbering goes on
    assert client.get("/v1/models/house").json()["aliases"] == {}


PLANTS = b"a,b,y\n" + b"".join(f"{i},{i % 3},{2 * i + 1}\n".encode() for i in range(30))


def test_delete_a_dataset_refused_while_a_queued_job_uses_it(
    client: TestClient, services: Services
):
    files = {"file": ("plants.csv", PLANTS, "text/csv")}
    for name in ("plants", "same"):
        uploaded = client.post("/v1/datasets", data={"name": name, "target": "y"}, files=files)
        assert uploaded.status_code == 201, uploaded.text
    sha = services.store.get_dataset("plants").sha256
    job = client.post("/v1/jobs", json={**HOUSE, "architecture": "mlp", "dataset": "plants"})
    refused = client.delete("/v1/datasets/plants")
    assert refused.status_code == 409
    assert job.json()["id"] in refused.json()["detail"]
    client.post(f"/v1/jobs/{job.json()['id']}/cancel")

    assert client.delete("/v1/datasets/plants").status_code == 204
    assert services.artifacts.exists(f"datasets/{sha}.npz")  # "same" holds the same bytes
    assert client.delete("/v1/datasets/same").status_code == 204
    assert not services.artifacts.exists(f"datasets/{sha}.npz")
    names = [d["name"] for d in client.get("/v1/datasets").json()]
    assert "plants" not in names and "same" not in names
    assert client.delete("/v1/datasets/plants").status_code == 404
    builtin = client.delete("/v1/datasets/boston_housing")
    assert builtin.status_code == 404 and "built in" in builtin.json()["detail"]


def test_sweep_removes_files_no_row_holds_and_keeps_one_being_published(
    client: TestClient, services: Services, house_model: TrainingResult
):
    publish(services, "house", house_model)
    publish(services, "house", house_model)
    data = services.artifacts.get(weights_key("house", 2))
    services.store.delete_version("house", 2)  # a deletion killed before its files went
    services.artifacts.put(export_key("house", 2, "onnx"), b"stale export")
    services.artifacts.put(weights_key("house", 3), data)  # a publish between file and row
    services.artifacts.put(weights_key("gone", 1), data)  # a model row that never committed
    services.artifacts.put("datasets/" + "a" * 64 + ".npz", b"an upload whose row is gone")

    removed = sweep(services, temp_max_age_s=0)
    assert removed["version_files"] == 2 and removed["dataset_files"] == 1
    assert services.artifacts.list("weights/") == [
        weights_key("gone", 1),  # model unknown, number not given: kept (as v3 is)
        weights_key("house", 1),
        weights_key("house", 3),
    ]
    assert services.artifacts.list("datasets/") == []


# -- exports ---------------------------------------------------------------------------------


def test_exports_answer_as_predict(
    client: TestClient, services: Services, house_model: TrainingResult
):
    publish(services, "house", house_model)
    rows = [BOSTON_ROW, [v * 1.1 for v in BOSTON_ROW]]
    answer = client.post("/v1/models/house/predict", json={"inputs": rows}).json()["predictions"]

    onnx_bytes = client.get("/v1/models/house/versions/1/weights?format=onnx")
    assert onnx_bytes.status_code == 200, onnx_bytes.text
    assert 'filename="house-v1.onnx"' in onnx_bytes.headers["content-disposition"]
    session = onnxruntime.InferenceSession(onnx_bytes.content, providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"input": np.asarray(rows, dtype=np.float32)})
    assert np.allclose(got[:, 0], answer, rtol=1e-5, atol=1e-5)
    assert services.artifacts.exists(export_key("house", 1, "onnx"))  # cached next to weights
    assert client.get("/v1/models/house/weights?format=onnx").content == onnx_bytes.content

    pt2 = client.get("/v1/models/house/weights", params={"format": "pt2", "version": 1})
    assert pt2.status_code == 200
    program = torch.export.load(io.BytesIO(pt2.content)).module()
    got = program(torch.tensor(rows, dtype=torch.float32)).detach().numpy()
    assert np.allclose(got[:, 0], answer, rtol=1e-5, atol=1e-5)

    services.store.mark_corrupt("house", 1)  # its weights failed a check: no export either
    refused = client.get("/v1/models/house/weights?format=onnx")
    assert refused.status_code == 503 and "marked corrupt" in refused.json()["detail"]


def test_safetensors_card_says_how_to_rebuild_and_preprocess(
    client: TestClient, services: Services, house_model: TrainingResult, tmp_path
):
    publish(services, "house", house_model)
    path = tmp_path / "w.safetensors"
    path.write_bytes(client.get("/v1/models/house/weights?format=safetensors").content)
    with safe_open(path, "pt") as f:
        card = json.loads(f.metadata()["trainserve"])
    assert (
        "get_architecture('house_prices_mlp').build((13,), 1, {'hidden_size': 13})"
        in (card["rebuild"]["call"])
    )
    assert "fc1" in card["rebuild"]["module"]
    assert "input_stats" in card["preprocessing"]["inputs"]
    assert "target_stats" in card["preprocessing"]["outputs"]


def test_an_unknown_format_is_a_422_naming_the_choices(
    client: TestClient, services: Services, house_model: TrainingResult
):
    publish(services, "house", house_model)
    for path in ("/v1/models/house/weights", "/v1/models/house/versions/1/weights"):
        refused = client.get(path, params={"format": "torchscript"})
        assert refused.status_code == 422
        assert refused.json()["detail"] == (
            "format 'torchscript' is unknown; choose one of safetensors, onnx, pt2"
        )


# -- device honesty --------------------------------------------------------------------------


def test_a_cuda_job_is_refused_unless_a_live_worker_has_cuda(
    client: TestClient, services: Services
):
    store = services.store
    store.announce_worker("cpu-worker", "cpu", 1, ["cpu"])
    refused = client.post("/v1/jobs", json={**HOUSE, "device": "cuda"})
    assert refused.status_code == 422
    assert refused.json()["detail"] == (
        "device 'cuda' is not available: no live worker has CUDA (live workers: cpu-worker: 1 "
        "cpu; see GET /v1/workers); use device 'auto' or 'cpu', or start a GPU worker"
    )
    assert client.post("/v1/jobs", json={**HOUSE, "device": "auto"}).status_code == 202

    store.announce_worker("gpu-worker", "cuda", 2, ["A", "B"])
    workers = client.get("/v1/workers").json()
    assert [(w["name"], w["device"], w["device_count"]) for w in workers] == [
        ("cpu-worker", "cpu", 1),
        ("gpu-worker", "cuda", 2),
    ]
    assert client.post("/v1/jobs", json={**HOUSE, "device": "cuda:1"}).status_code == 202
    too_far = client.post("/v1/jobs", json={**HOUSE, "device": "cuda:2"})
    assert too_far.status_code == 422 and "3 CUDA devices" in too_far.json()["detail"]

    assert store.live_workers(timedelta(seconds=60))  # a stale heartbeat stops counting
    assert store.live_workers(timedelta(seconds=0)) == []
    store.remove_worker("gpu-worker")
    assert client.post("/v1/jobs", json={**HOUSE, "device": "cuda"}).status_code == 422


def test_the_docs_job_example_publishes_under_its_own_name(client: TestClient):
    """Trying the /docs example never replaces a model someone serves (house-prices)."""
    schema = client.get("/openapi.json").json()["components"]["schemas"]["JobRequest"]
    (example,) = schema["examples"]
    assert example["model_name"] == "house-prices-example"
    assert example["promote"] == {"alias": "production", "if_better": "val_rmse"}
    assert client.post("/v1/jobs", json=example).status_code == 202
