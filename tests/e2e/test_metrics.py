"""GET /metrics of a real `trainserve serve` after real jobs: the worker's process writes to the
multiprocess directory and the API's /metrics sums it; a worker's own --metrics-port."""

import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.processes import (
    TRAINSERVE,
    Process,
    Service,
    embedded_serve,
    free_port,
    wait_until,
)

pytestmark = pytest.mark.e2e

HOUSE = {"architecture": "house_prices_mlp", "dataset": "boston_housing", "device": "cpu"}


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found, name: str, **labels) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_after_real_jobs(tmp_path):
    with embedded_serve(tmp_path) as (_proc, url):
        key = (tmp_path / ".trainserve" / "api_key").read_text().strip()
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as client:
            good = client.post("/v1/jobs", json={"model_name": "m", "epochs": 4, **HOUSE}).json()
            bad = {"model_name": "b", "epochs": 3, "optimizer": {"name": "sgd", "lr": 10}, **HOUSE}
            bad = client.post("/v1/jobs", json=bad).json()
            for job in (good, bad):
                wait_until(
                    lambda job=job: (
                        client.get(f"/v1/jobs/{job['id']}").json()["status"]
                        in ("succeeded", "failed")
                    ),
                    120,
                    "the job to end",
                )
            assert client.get(f"/v1/jobs/{good['id']}").json()["status"] == "succeeded"
            time.sleep(0.5)  # the worker records the end after the store
            text = httpx.get(f"{url}/metrics", timeout=10).text  # no key
        found = samples(text)
        assert value(found, "trainserve_jobs", status="succeeded") == 1
        assert value(found, "trainserve_jobs", status="failed") == 1
        assert value(found, "trainserve_queue_depth") == 0
        # from the worker process, through the multiprocess directory (the diverged job's first
        # epoch ends in the divergence check, so it is not counted)
        assert (
            value(found, "trainserve_training_epochs_total", architecture="house_prices_mlp") == 4
        )
        assert value(found, "trainserve_job_run_seconds_count", status="succeeded") == 1
        assert value(found, "trainserve_job_queue_wait_seconds_count") == 2
        assert value(found, "trainserve_job_failures_total", reason="diverged") == 1
        assert value(found, "trainserve_worker_slots", state="idle") == 1
        assert value(found, "trainserve_worker_slots", state="busy") == 0
        assert value(found, "trainserve_worker_devices", device="cpu") == 1
        # from the API process
        assert value(found, "trainserve_jobs_submitted_total") == 2
        posts = value(
            found, "trainserve_http_requests_total", route="/v1/jobs", method="POST", status="202"
        )
        assert posts == 2
        assert (
            value(
                found,
                "trainserve_http_requests_total",
                route="/v1/jobs/{job_id}",
                method="GET",
                status="200",
            )
            >= 2
        )


def test_a_worker_serves_its_own_metrics(tmp_path):
    """A worker on another host: `trainserve worker --metrics-port`."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRAINSERVE_", "PROMETHEUS"))}
    env |= {"TRAINSERVE_DATA_DIR": str(tmp_path / "data"), "TRAINSERVE_AUTO_MIGRATE": "true"}
    subprocess.run([TRAINSERVE, "db", "upgrade"], env=env, check=True, timeout=120)
    worker = Process(
        [TRAINSERVE, "worker", "--metrics-port", str(port), "--metrics-host", "127.0.0.1"],
        env,
        tmp_path / "worker.log",
    )
    try:

        def scraped():
            assert worker.alive(), worker.output()
            try:
                return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
            except httpx.HTTPError:
                return None

        found = samples(wait_until(scraped, 60, "the worker's metrics port"))
        assert value(found, "trainserve_worker_slots", state="idle") == 1
        assert value(found, "trainserve_worker_devices", device="cpu") == 1
    finally:
        worker.stop()


def test_several_api_processes_answer_with_one_sum(tmp_path):
    """`trainserve api --processes 3`: whichever process answers GET /metrics counts the
    requests every process served (multiprocess mode in <data dir>/prometheus)."""
    service = Service(tmp_path, {})
    service.api = service._start([TRAINSERVE, "api", "--processes", "3"], "api")
    try:
        wait_until(service._ready, 90, f"the API to be ready ({service.api.log})")
        with ThreadPoolExecutor(8) as pool:  # new connections, at once: spread over processes
            codes = list(
                pool.map(lambda _: httpx.get(f"{service.url}/healthz").status_code, range(60))
            )
        assert codes == [200] * 60
        metrics_dir = tmp_path / "data" / "prometheus"
        pids = {p.stem.rsplit("_", 1)[1] for p in metrics_dir.glob("counter_*.db")}
        assert len(pids) >= 3, pids  # every process writes its own file there
        for _ in range(6):  # each scrape may be answered by another process: the same sum
            found = samples(httpx.get(f"{service.url}/metrics", timeout=10).text)
            labels = {"route": "/healthz", "method": "GET", "status": "200"}
            assert value(found, "trainserve_http_requests_total", **labels) == 60
    finally:
        service.stop()
