"""A deletion killed (kill -9) between its rows and its files: the rows are gone, the files
no row names are removed by the sweep when the API starts again; the stores never disagree
in a way a client can see (no version whose weights are missing)."""

import signal
import threading

import httpx
import pytest

from tests.e2e.processes import wait_for_job, wait_until
from tests.faults.test_faults import QUICK_JOB

pytestmark = pytest.mark.fault


def test_kill_9_between_a_deletions_rows_and_files(service):
    service.env["TRAINSERVE_DELETE_PAUSE_SECONDS"] = "120"  # the API pauses between the steps
    api = service.start_api()
    service.start_worker()
    weights = service.tmp / "data" / "weights" / "crash"
    with service.client() as client:
        for _ in range(2):
            job = client.post("/v1/jobs", json={**QUICK_JOB, "model_name": "crash"}).json()
            assert wait_for_job(client, job["id"], {"succeeded", "failed"})["status"] == (
                "succeeded"
            ), service.logs()
        assert client.get("/v1/models/crash/versions/1/weights?format=onnx").status_code == 200
        assert sorted(p.name for p in weights.iterdir()) == [
            "v1.onnx",
            "v1.safetensors",
            "v2.safetensors",
        ]

        answers: list = []

        def delete() -> None:
            try:
                answers.append(client.delete("/v1/models/crash/versions/1", timeout=150))
            except httpx.HTTPError as exc:  # the API is killed while it answers
                answers.append(exc)

        deleting = threading.Thread(target=delete)
        deleting.start()
        wait_until(lambda: "rows removed; pausing" in api.output(), 30, "the deletion's pause")
        # between the steps: the row is gone (another request sees it), the files are there
        detail = client.get("/v1/models/crash").json()
        assert [v["version"] for v in detail["versions"]] == [2]
        assert (weights / "v1.safetensors").exists() and (weights / "v1.onnx").exists()

        api.signal(signal.SIGKILL)
        api.popen.wait(10)
        deleting.join(30)
        assert isinstance(answers[0], httpx.HTTPError)

        del service.env["TRAINSERVE_DELETE_PAUSE_SECONDS"]
        service.start_api()  # its reaper sweeps at start
        wait_until(
            lambda: sorted(p.name for p in weights.iterdir()) == ["v2.safetensors"],
            30,
            "the sweep to remove version 1's files",
        )
        assert client.get("/v1/models/crash/versions/1/weights").status_code == 404
        assert client.get("/v1/models/crash").json()["latest_version"] == 2
        predicted = client.post("/v1/models/crash/predict", json={"inputs": [[0.1] * 13]})
        assert predicted.status_code == 200 and predicted.json()["version"] == 2
