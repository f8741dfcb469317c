"""Workers on other hosts, as processes on this machine: the API with one data dir, two workers
each with its own, nothing shared but Redis, PostgreSQL and S3 (moto's server over HTTP, run
by this test so that it can be stopped and started again with its objects kept).

An upload trains on a worker and predicts from the API; a worker killed mid-epoch hands its
job to the other through its checkpoint in S3 and the weights equal an uninterrupted run's;
S3 stopped while a job runs and while a prediction loads weights gives clear errors, loses
nothing, and the job finishes once S3 is back; a tampered object is refused on read.
"""

from __future__ import annotations

import signal
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load as load_tensors

from app.core.artifacts import weights_key
from tests.e2e.processes import Service, postgres_database, wait_for_job, wait_until
from tests.e2e.s3 import CREDENTIALS
from tests.faults.conftest import FAST_RECOVERY
from tests.faults.test_faults import QUICK_JOB, SLOW_JOB, assert_complete_history, wait_for_epoch

pytestmark = [pytest.mark.e2e, pytest.mark.fault, pytest.mark.timeout(900)]

DONE = {"succeeded", "failed", "cancelled"}
PREFIX = "artifacts"
LOADED = 180  # s: generous waits, for a shared 2-core machine under other work
LONG = 300


class Hosts:
    """The API and its workers, each with a data dir of its own."""

    def __init__(self, service: Service, s3, bucket: str) -> None:
        self.service, self.s3, self.bucket = service, s3, bucket
        self.workers: dict[str, object] = {}

    def start(self, *workers: str) -> None:
        """The API host, then a worker host for each name."""
        self.service.start_api()
        for name in workers:
            self.start_worker(name)

    def start_worker(self, name: str):
        data = self.service.tmp / name
        env = {
            "TRAINSERVE_DATA_DIR": str(data),
            "TRAINSERVE_WORKER_LIVENESS_FILE": str(data / "alive"),
        }
        self.workers[name] = self.service.start_worker(name, env)
        return self.workers[name]

    def busy_worker(self, marker: str) -> str:
        """The name of the worker whose log shows `marker` (which one took a job)."""

        def find():
            return next((n for n, w in self.workers.items() if marker in w.output()), None)

        return wait_until(find, 60, f"a worker to log {marker!r}")

    def objects(self) -> list[str]:
        listed = self.s3.client().list_objects_v2(Bucket=self.bucket).get("Contents", [])
        return sorted(item["Key"][len(PREFIX) + 1 :] for item in listed)

    def files(self, name: str, folder: str) -> list[str]:
        root = self.service.tmp / name / folder
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.fixture
def hosts(tmp_path, redis, s3):
    if not s3.running:
        s3.start()
    bucket = s3.new_bucket()
    with postgres_database() as database_url:
        env = {
            "TRAINSERVE_DATABASE_URL": database_url,
            "TRAINSERVE_BROKER_URL": redis.url,
            **FAST_RECOVERY,
            **s3.env(bucket, PREFIX),
            "TRAINSERVE_DATA_DIR": str(tmp_path / "api"),
            "TRAINSERVE_ARTIFACTS_RETRY_SECONDS": "1",
            "TRAINSERVE_WORKER_ARTIFACTS_RETRY_SECONDS": "90",
        }
        service = Service(tmp_path, env)
        try:
            yield Hosts(service, s3, bucket)
        finally:
            service.stop()
            if not s3.running:
                s3.start()


def csv_upload() -> bytes:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    y = x @ np.array([1.5, -2.0, 0.5]) + 0.1
    rows = "\n".join(",".join(f"{v:.6f}" for v in (*xi, yi)) for xi, yi in zip(x, y, strict=True))
    return ("a,b,c,y\n" + rows + "\n").encode()


def weights_of(client, model_name):
    response = client.get(f"/v1/models/{model_name}/versions/1/weights")
    assert response.status_code == 200, response.text
    return load_tensors(response.content)


def test_an_upload_trains_on_a_worker_host_and_predicts_from_the_api_host(hosts):
    service = hosts.service
    hosts.start("w1", "w2")
    with service.client() as client:
        uploaded = client.post(
            "/v1/datasets",
            data={"name": "linear", "target": "y"},
            files={"file": ("linear.csv", csv_upload())},
        )
        assert uploaded.status_code == 201, uploaded.text
        job = client.post(
            "/v1/jobs",
            json={
                "model_name": "linear",
                "architecture": "mlp",
                "dataset": "linear",
                "epochs": 30,
                "optimizer": {"name": "adam", "lr": 0.01},
                "device": "cpu",
            },
        )
        assert job.status_code == 202, job.text
        done = wait_for_job(client, job.json()["id"], DONE, timeout=LONG)
        assert done["status"] == "succeeded", (done["error"], service.logs())
        predicted = client.post("/v1/models/linear/predict", json={"inputs": [[1.0, 0.0, 0.0]]})
        assert predicted.status_code == 200, predicted.text
        assert abs(predicted.json()["predictions"][0] - 1.6) < 0.5

    trained_on = hosts.busy_worker("training mlp on linear")
    objects = hosts.objects()
    assert weights_key("linear", 1) in objects
    assert [k for k in objects if k.startswith("datasets/")]  # the upload, by its sha256
    assert not [k for k in objects if k.startswith("checkpoints/")]  # gone with the job
    for host in ("api", "w1", "w2"):  # nothing kept on any host's disk but the cache
        for folder in ("weights", "datasets", "checkpoints"):
            assert hosts.files(host, folder) == [], (host, folder)
    assert len(hosts.files(trained_on, "cache")) == 1


def test_a_worker_killed_mid_epoch_hands_its_job_over_through_s3(hosts):
    service = hosts.service
    hosts.start("w1", "w2")
    with service.client() as client:
        response = client.post("/v1/jobs", json=SLOW_JOB)
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        wait_for_epoch(client, job_id, 4, timeout=LOADED)
        first = hosts.busy_worker("training mlp on synthetic_regression")
        hosts.workers[first].signal(signal.SIGKILL)
        other = hosts.workers["w2" if first == "w1" else "w1"]
        wait_until(lambda: "resuming from s3://" in other.output(), LOADED, "a resume from S3")
        job = wait_for_job(client, job_id, DONE, timeout=LONG)
        assert job["status"] == "succeeded", (job["error"], service.logs())
        assert f"resuming from s3://{hosts.bucket}/{PREFIX}/checkpoints/{job_id}/" in (
            other.output()
        )
        assert_complete_history(client, job_id)
        assert hosts.files(first, "checkpoints") == []  # it never wrote one to its disk

        reference = client.post("/v1/jobs", json={**SLOW_JOB, "model_name": "slow-reference"})
        ended = wait_for_job(client, reference.json()["id"], DONE, timeout=LONG)
        assert ended["status"] == "succeeded"
        resumed, uninterrupted = weights_of(client, "slow"), weights_of(client, "slow-reference")
        assert resumed.keys() == uninterrupted.keys()
        for name in resumed:
            assert torch.equal(resumed[name], uninterrupted[name]), name


def test_s3_down_while_a_job_runs_and_a_prediction_loads_weights(hosts):
    service, s3 = hosts.service, hosts.s3
    service.start_api()
    worker = hosts.start_worker("w1")
    with service.client() as client:
        quick = client.post("/v1/jobs", json=QUICK_JOB).json()["id"]
        assert wait_for_job(client, quick, DONE, timeout=LONG)["status"] == "succeeded"
        slow = client.post("/v1/jobs", json=SLOW_JOB).json()["id"]
        wait_for_epoch(client, slow, 3, timeout=LOADED)

        s3.stop()
        try:
            ready = client.get("/readyz")
            assert ready.status_code == 503
            assert f"artifact store s3://{hosts.bucket}/{PREFIX}/ does not answer" in ready.text
            predicted = client.post("/v1/models/quick/predict", json={"inputs": [[0.0] * 13]})
            assert predicted.status_code == 503, predicted.text
            detail = predicted.json()["detail"]
            assert f"the artifact store s3://{hosts.bucket}/{PREFIX}/ does not answer" in detail
            assert CREDENTIALS["AWS_SECRET_ACCESS_KEY"] not in predicted.text
            wait_until(
                lambda: (
                    "artifact store s3://" in worker.output() and "retrying in" in worker.output()
                ),
                60,
                "the worker to retry a checkpoint while S3 is down",
            )
            assert client.get(f"/v1/jobs/{slow}").json()["status"] == "running"
        finally:
            s3.start()

        job = wait_for_job(client, slow, DONE, timeout=LONG)
        assert job["status"] == "succeeded", (job["error"], service.logs())
        assert_complete_history(client, slow)
        assert client.get("/readyz").status_code == 200
        predicted = client.post("/v1/models/quick/predict", json={"inputs": [[0.0] * 13]})
        assert predicted.status_code == 200, predicted.text
        versions = client.get("/v1/models/quick").json()["versions"]
        assert [v["corrupt"] for v in versions] == [False]  # an outage is not corruption
        assert weights_of(client, "slow")  # published, and readable
    logs = worker.output() + service.api.output()
    assert not [
        value for value in CREDENTIALS.values() if value.startswith("trainserve") and value in logs
    ]


def test_a_tampered_object_in_s3_is_refused_on_read(hosts):
    service = hosts.service
    hosts.start("w1")
    with service.client() as client:
        quick = client.post("/v1/jobs", json=QUICK_JOB).json()["id"]
        assert wait_for_job(client, quick, DONE, timeout=LONG)["status"] == "succeeded"
        key = f"{PREFIX}/{weights_key('quick', 1)}"
        s3 = hosts.s3.client()
        data = s3.get_object(Bucket=hosts.bucket, Key=key)["Body"].read()
        s3.put_object(Bucket=hosts.bucket, Key=key, Body=data[:-4] + b"\x00\x00\x00\x01")
        time.sleep(0.1)
        predicted = client.post("/v1/models/quick/predict", json={"inputs": [[0.0] * 13]})
        assert predicted.status_code == 503
        assert "corrupt (sha256 mismatch)" in predicted.json()["detail"]
        download = client.get("/v1/models/quick/versions/1/weights")
        assert download.status_code == 503
        versions = client.get("/v1/models/quick").json()["versions"]
        assert [v["corrupt"] for v in versions] == [True]
