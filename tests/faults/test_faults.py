"""No job lost: workers killed or stopped, Redis restarted, the API restarted, a job
delivered twice, a truncated checkpoint, a pickle message, predictions during a publish."""

import signal
import threading
import time

import numpy as np
import pytest
import torch
from kombu import Connection, Exchange, Producer
from safetensors.torch import load as load_tensors

from tests.e2e.processes import wait_for_job, wait_until

pytestmark = pytest.mark.fault

EPOCHS = 20
SLOW_JOB = {
    "model_name": "slow",
    "architecture": "mlp",
    "dataset": "synthetic_regression",
    "dataset_params": {"n_samples": 10000, "n_features": 32},
    "epochs": EPOCHS,
    "eval_every": 1,
    "device": "cpu",
}
QUICK_JOB = {
    "model_name": "quick",
    "architecture": "house_prices_mlp",
    "dataset": "boston_housing",
    "dataset_params": {},
    "epochs": 5,
    "device": "cpu",
}
DONE = {"succeeded", "failed", "cancelled"}


def submit(client, **overrides):
    response = client.post("/v1/jobs", json={**SLOW_JOB, **overrides})
    assert response.status_code == 202, response.text
    return response.json()["id"]


def wait_for_epoch(client, job_id, epoch, timeout=60):
    def reached():
        job = client.get(f"/v1/jobs/{job_id}").json()
        return job if job["status"] == "running" and job["progress"]["epoch"] >= epoch else None

    return wait_until(reached, timeout, f"job {job_id} to reach epoch {epoch}", 0.1)


def weights(client, model_name):
    response = client.get(f"/v1/models/{model_name}/versions/1/weights")
    assert response.status_code == 200
    return load_tensors(response.content)


def assert_complete_history(client, job_id, epochs=EPOCHS):
    history = client.get(f"/v1/jobs/{job_id}/metrics").json()["history"]
    assert [row["epoch"] for row in history] == list(range(1, epochs + 1))


def test_killed_worker_job_resumes_from_checkpoint_on_another_worker(service):
    service.start_api()
    first = service.start_worker("first")
    with service.client() as client:
        job_id = submit(client)
        wait_for_epoch(client, job_id, 4)
        first.signal(signal.SIGKILL)
        killed_at = time.monotonic()
        second = service.start_worker("second")
        wait_until(lambda: "resuming from" in second.output(), 60, "a resume on the second worker")
        assert time.monotonic() - killed_at < 60
        job = wait_for_job(client, job_id, DONE, timeout=120)
        assert job["status"] == "succeeded", (job["error"], service.logs())
        assert "resuming from" in second.output()
        assert_complete_history(client, job_id)
        assert client.get("/v1/models/slow").json()["latest_version"] == 1

        # The same request, never interrupted, ends with exactly the same weights.
        reference = submit(client, model_name="slow-reference")
        assert wait_for_job(client, reference, DONE, timeout=120)["status"] == "succeeded"
        resumed = weights(client, "slow")
        uninterrupted = weights(client, "slow-reference")
        assert resumed.keys() == uninterrupted.keys()
        for name in resumed:
            assert torch.equal(resumed[name], uninterrupted[name]), name


def test_a_job_that_kills_every_worker_ends_failed_with_a_message(service):
    service.env["TRAINSERVE_MAX_ATTEMPTS"] = "2"
    service.start_api()
    with service.client() as client:
        job_id = submit(client)
        for attempt in range(2):
            worker = service.start_worker(f"doomed-{attempt}")
            wait_for_epoch(client, job_id, 1)
            worker.signal(signal.SIGKILL)
            worker.popen.wait(10)
            if attempt == 0:
                wait_until(
                    lambda: client.get(f"/v1/jobs/{job_id}").json()["status"] == "queued",
                    30,
                    "the reaper to send the job back",
                )
        job = wait_for_job(client, job_id, DONE, timeout=30)
        assert job["status"] == "failed"
        assert "stopped answering 2 times" in job["error"]
        assert job["model_version"] is None


def test_sigterm_sends_the_job_back_to_the_queue(service):
    service.start_api()
    first = service.start_worker("first")
    with service.client() as client:
        job_id = submit(client)
        wait_for_epoch(client, job_id, 3)
        first.signal(signal.SIGTERM)
        first.popen.wait(30)
        assert first.popen.returncode == 0, first.output()[-3000:]
        job = client.get(f"/v1/jobs/{job_id}").json()
        assert job["status"] == "queued", job
        assert "sent back to the queue" in first.output()
        second = service.start_worker("second")
        job = wait_for_job(client, job_id, DONE, timeout=120)
        assert job["status"] == "succeeded", (job["error"], service.logs())
        assert "resuming from" in second.output()
        assert_complete_history(client, job_id)


def test_redis_restart_loses_no_queued_job(service, redis):
    service.start_api()
    with service.client() as client:
        ids = [submit(client, **{**QUICK_JOB, "model_name": f"q{i}"}) for i in range(3)]
        redis.stop()  # it keeps nothing on disk: the queued messages are gone
        redis.start()
        service.start_worker()
        jobs = [wait_for_job(client, job_id, DONE, timeout=120) for job_id in ids]
        assert [j["status"] for j in jobs] == ["succeeded"] * 3, service.logs()
        for i in range(3):  # each trained exactly once
            assert [v["version"] for v in client.get(f"/v1/models/q{i}").json()["versions"]] == [1]


def test_api_restart_keeps_every_job_and_answer(service):
    api = service.start_api()
    service.start_worker()
    with service.client() as client:
        finished = submit(client, **QUICK_JOB)
        wait_for_job(client, finished, DONE)
        running = submit(client, epochs=12)
        wait_for_epoch(client, running, 2)
        before = client.get(f"/v1/jobs/{finished}").json()
        history = client.get(f"/v1/jobs/{finished}/metrics").json()
        api.signal(signal.SIGKILL)
        api.popen.wait(10)
        service.start_api()
        assert client.get(f"/v1/jobs/{finished}").json() == before
        assert client.get(f"/v1/jobs/{finished}/metrics").json() == history
        job = wait_for_job(client, running, DONE, timeout=120)
        assert job["status"] == "succeeded", service.logs()
        assert client.get("/v1/jobs").json()["total"] == 2


def test_a_job_delivered_twice_trains_once(service):
    service.start_api()
    workers = [service.start_worker("a"), service.start_worker("b")]
    with service.client() as client:
        job_id = submit(client, **{**QUICK_JOB, "epochs": 30})
        # A second message for the same job, as a redelivery or a racing reconciler would send.
        from app.core.queue import TRAIN_TASK, TRAINING_QUEUE, make_celery
        from app.core.settings import Settings

        celery = make_celery(Settings(broker_url=service.env["TRAINSERVE_BROKER_URL"]))
        celery.send_task(TRAIN_TASK, args=[job_id], queue=TRAINING_QUEUE)
        celery.send_task(TRAIN_TASK, args=[job_id], queue=TRAINING_QUEUE)
        job = wait_for_job(client, job_id, DONE, timeout=120)
        assert job["status"] == "succeeded"
        wait_until(
            lambda: sum("not queued" in w.output() for w in workers) >= 1,
            30,
            "a worker to skip the duplicate delivery",
        )
        versions = client.get("/v1/models/quick").json()["versions"]
        assert [v["version"] for v in versions] == [1]
        assert sum("training house_prices_mlp" in w.output() for w in workers) == 1


def test_truncated_checkpoint_is_skipped_for_the_previous_good_one(service):
    service.start_api()
    first = service.start_worker("first")
    with service.client() as client:
        job_id = submit(client)
        wait_for_epoch(client, job_id, 5)
        first.signal(signal.SIGKILL)
        first.popen.wait(10)
        checkpoints = sorted((service.tmp / "data" / "checkpoints" / job_id).glob("*.ckpt"))
        assert len(checkpoints) == 2
        latest = checkpoints[-1]
        latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])
        second = service.start_worker("second")
        job = wait_for_job(client, job_id, DONE, timeout=120)
        assert job["status"] == "succeeded", (job["error"], service.logs())
        assert "skipping unusable checkpoint" in second.output()
        assert f"resuming from {checkpoints[0]}" in second.output()
        assert_complete_history(client, job_id)


class Exploit:
    """Unpickling this would create a marker file: the worker must never do it."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_pickle_message_is_refused_without_running(service):
    import pickle

    service.start_api()
    worker = service.start_worker()
    marker = service.tmp / "unpickled"
    body = pickle.dumps(((Exploit(marker),), {}, {}))
    with Connection(service.env["TRAINSERVE_BROKER_URL"]) as connection:
        producer = Producer(connection)
        producer.publish(
            body,
            exchange=Exchange("training", type="direct"),
            routing_key="training",
            serializer=None,
            content_type="application/x-python-serialize",
            content_encoding="binary",
            headers={"task": "trainserve.train_job", "id": "evil", "argsrepr": "()"},
        )
    wait_until(lambda: "disallowed" in worker.output().lower(), 30, "the refusal in the log")
    assert not marker.exists()
    assert worker.alive()
    with service.client() as client:  # and it still trains
        job = wait_for_job(client, submit(client, **QUICK_JOB), DONE, timeout=120)
        assert job["status"] == "succeeded"


def test_predictions_never_fail_while_new_versions_are_published(service):
    """Predictions run without a pause while three new versions are published and loaded.
    With the default backend (auto: ONNX Runtime for house_prices_mlp) each version answers
    from eager PyTorch first and switches to ONNX Runtime once its export (made by a child
    process) is checked; the hammering goes on until version 4 answers from ONNX Runtime."""
    api = service.start_api()
    service.start_worker()
    rows = np.ones((4, 13)).tolist()
    with service.client() as client:
        wait_for_job(client, submit(client, **QUICK_JOB), DONE)
        statuses, stop = [], threading.Event()

        def hammer():
            with service.client() as own:
                while not stop.is_set():
                    response = own.post("/v1/models/quick/predict", json={"inputs": rows})
                    statuses.append((response.status_code, response.json().get("version")))

        thread = threading.Thread(target=hammer)
        thread.start()
        try:
            for _ in range(3):
                job = wait_for_job(client, submit(client, **QUICK_JOB), DONE)
                assert job["status"] == "succeeded"
            wait_until(lambda: any(v == 4 for _, v in statuses), 30, "answers from version 4")
            switched = "model 'quick' version 4: answering with ONNX Runtime"
            wait_until(lambda: switched in api.output(), 180, "version 4 in ONNX Runtime")
            answered = len(statuses)
            wait_until(lambda: len(statuses) > answered + 50, 30, "answers from ONNX Runtime")
        finally:
            stop.set()
            thread.join()
    assert {code for code, _ in statuses} == {200}, statuses
    assert {version for _, version in statuses} >= {1, 4}
