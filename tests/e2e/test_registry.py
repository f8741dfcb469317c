"""The registry over HTTP with a real server and worker (Redis, PostgreSQL): what a worker
announces and the cuda job it causes to be refused, promotion rules, exports loaded outside the
service and compared with its answers, and deletion with its refusals."""

import io

import numpy as np
import onnxruntime
import pytest
import torch

from tests.e2e.processes import wait_for_job, wait_until

pytestmark = pytest.mark.e2e

DONE = {"succeeded", "failed", "cancelled"}
HOUSE = {
    "architecture": "house_prices_mlp",
    "dataset": "boston_housing",
    "optimizer": {"name": "adam", "lr": 0.01},
    "epochs": 40,
    "eval_every": 10,
    "device": "cpu",
}
ROWS = [
    [0.00632, 18, 2.31, 0, 0.538, 6.575, 65.2, 4.09, 1, 296, 15.3, 396.9, 4.98],
    [0.02731, 0, 7.07, 0, 0.469, 6.421, 78.9, 4.9671, 2, 242, 17.8, 396.9, 9.14],
]


def run(client, body) -> dict:
    submitted = client.post("/v1/jobs", json=body)
    assert submitted.status_code == 202, submitted.text
    return wait_for_job(client, submitted.json()["id"], DONE, timeout=180)


def test_the_worker_announces_a_cpu_and_a_cuda_job_is_refused(stack):
    with stack.client() as client:
        workers = wait_until(lambda: client.get("/v1/workers").json(), 60, "a worker row")
        assert [(w["device"], w["device_count"]) for w in workers] == [("cpu", 1)], workers
        refused = client.post("/v1/jobs", json={**HOUSE, "model_name": "gpu", "device": "cuda"})
        assert refused.status_code == 422
        detail = refused.json()["detail"]
        assert detail.startswith("device 'cuda' is not available: no live worker has CUDA")
        assert workers[0]["name"] in detail
        assert client.get("/v1/jobs", params={"model_name": "gpu"}).json()["total"] == 0


def test_promotion_happens_then_is_refused_for_a_worse_version(stack):
    rule = {"alias": "production", "if_better": "val_rmse"}
    with stack.client() as client:
        good = run(client, {**HOUSE, "model_name": "promoted", "promote": rule})
        assert good["status"] == "succeeded", stack.logs()
        assert good["promotion"]["moved"] is True and good["promotion"]["version"] == 1
        worse = run(
            client,
            {
                **HOUSE,
                "model_name": "promoted",
                "optimizer": {"name": "sgd", "lr": 0.001},
                "epochs": 1,
                "promote": rule,
            },
        )
        decision = worse["promotion"]
        assert worse["model_version"] == 2 and decision["moved"] is False, decision
        rmse = (good["metrics"]["val_rmse"], worse["metrics"]["val_rmse"])
        assert decision["reason"] == (
            f"val_rmse {rmse[1]:.6g} of version 2 is not better than {rmse[0]:.6g} of version 1 "
            "(lower is better)"
        )
        assert client.get("/v1/models/promoted").json()["aliases"] == {"production": 1}
        answer = client.post("/v1/models/promoted/predict", json={"inputs": ROWS}).json()
        assert answer["version"] == 1


@pytest.mark.parametrize("task", ["regression", "classification"])
def test_exports_answer_as_the_service(stack, task):
    body = {**HOUSE, "model_name": f"export-{task}"}
    if task == "classification":
        body = {**body, "architecture": "mlp", "dataset": "digits", "epochs": 3}
    with stack.client() as client:
        assert run(client, body)["status"] == "succeeded", stack.logs()
        name = body["model_name"]
        detail = client.get(f"/v1/models/{name}").json()["versions"][0]
        n = int(np.prod(detail["input_shape"]))
        rows = ROWS if task == "regression" else np.linspace(0, 16, 3 * n).reshape(3, n).tolist()
        answer = client.post(f"/v1/models/{name}/predict", json={"inputs": rows}).json()
        expected = np.asarray(answer.get("probabilities") or answer["predictions"], np.float32)
        expected = expected.reshape(len(rows), -1)
        x = np.asarray(rows, dtype=np.float32).reshape(len(rows), *detail["input_shape"])

        onnx_file = client.get(f"/v1/models/{name}/weights", params={"format": "onnx"})
        assert onnx_file.status_code == 200, onnx_file.text
        session = onnxruntime.InferenceSession(onnx_file.content)
        (got,) = session.run(None, {"input": x})
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)

        pt2_file = client.get(f"/v1/models/{name}/versions/1/weights", params={"format": "pt2"})
        assert pt2_file.status_code == 200, pt2_file.text
        program = torch.export.load(io.BytesIO(pt2_file.content)).module()
        got = program(torch.from_numpy(x)).detach().numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)

        refused = client.get(f"/v1/models/{name}/weights", params={"format": "pickle"})
        assert refused.status_code == 422 and "safetensors, onnx, pt2" in refused.json()["detail"]


CSV = b"a,b,y\n" + b"".join(f"{i},{i % 7},{3 * i - 2}\n".encode() for i in range(200))


def test_deletions_and_their_refusals(stack):
    weights = stack.tmp / "data" / "weights" / "doomed"
    with stack.client() as client:
        files = {"file": ("rows.csv", CSV, "text/csv")}
        upload = client.post("/v1/datasets", data={"name": "rows", "target": "y"}, files=files)
        assert upload.status_code == 201, upload.text
        submitted = client.post(
            "/v1/jobs",
            json={
                **HOUSE,
                "model_name": "doomed",
                "architecture": "mlp",
                "dataset": "rows",
                "epochs": 10_000,
                "batch_size": 1,
                "eval_every": 1000,
            },
        )
        assert submitted.status_code == 202, submitted.text
        long_job = submitted.json()
        wait_until(
            lambda: client.get(f"/v1/jobs/{long_job['id']}").json()["status"] == "running",
            60,
            "the long job to run",
        )
        busy = client.delete("/v1/datasets/rows")
        assert busy.status_code == 409 and long_job["id"] in busy.json()["detail"]
        running = client.delete(f"/v1/jobs/{long_job['id']}")
        assert running.status_code == 409 and "is running" in running.json()["detail"]
        client.post(f"/v1/jobs/{long_job['id']}/cancel")
        assert wait_for_job(client, long_job["id"], DONE)["status"] == "cancelled"
        assert client.delete("/v1/datasets/rows").status_code == 204
        assert client.get("/v1/datasets").json()[-1]["name"] != "rows"
        assert client.delete(f"/v1/jobs/{long_job['id']}").status_code == 204
        assert client.get(f"/v1/jobs/{long_job['id']}").status_code == 404

        first = run(client, {**HOUSE, "model_name": "doomed", "epochs": 2})
        run(client, {**HOUSE, "model_name": "doomed", "epochs": 2})
        assert client.put("/v1/models/doomed/aliases/production", json={"version": 1}).is_success
        refused = client.delete("/v1/models/doomed/versions/1")
        assert refused.status_code == 409 and "production" in refused.json()["detail"]
        assert client.delete("/v1/models/doomed/versions/1?force=true").status_code == 204
        assert sorted(p.name for p in weights.iterdir()) == ["v2.safetensors"]
        assert client.get("/v1/models/doomed").json()["aliases"] == {}
        assert client.delete(f"/v1/jobs/{first['id']}").status_code == 204

        assert client.delete("/v1/models/doomed").status_code == 204
        assert client.get("/v1/models/doomed").status_code == 404
        # the local store removes the folders that deletions leave empty
        assert not weights.exists() or list(weights.iterdir()) == []
