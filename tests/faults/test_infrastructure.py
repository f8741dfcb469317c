"""No job failed or stranded by infrastructure: a cancelled job whose worker is killed, the
database dropping every connection while jobs train, a full disk. Real processes where the
fault lives between processes; a real full filesystem (tmpfs) for the disk."""

from __future__ import annotations

import signal
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient

from app.api.main import create_app
from app.core.services import build_services
from app.core.settings import Settings
from tests.app.conftest import AUTH, make_settings
from tests.e2e.processes import wait_for_job
from tests.faults.test_faults import DONE, QUICK_JOB, submit, wait_for_epoch
from workers.runner import run_job

pytestmark = pytest.mark.fault


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_a_cancelled_job_whose_worker_is_killed_ends_cancelled(service):
    service.start_api()
    worker = service.start_worker("doomed")
    with service.client() as client:
        job_id = submit(client, epochs=200)
        wait_for_epoch(client, job_id, 2)
        worker.signal(signal.SIGSTOP)  # it cannot see the cancel before it dies
        assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
        worker.signal(signal.SIGKILL)
        job = wait_for_job(client, job_id, DONE, timeout=30)
        assert job["status"] == "cancelled", job
        with client.stream("GET", f"/v1/jobs/{job_id}/events", timeout=10) as events:
            body = "".join(events.iter_text())  # the stream ends: the job has ended
        assert '"status":"cancelled"' in body
        assert client.get("/v1/jobs", params={"status": "queued"}).json()["total"] == 0
        checkpoints = service.tmp / "data" / "checkpoints" / job_id
        assert not checkpoints.exists()
        time.sleep(3)  # and nothing re-sends it
        assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "cancelled"
        assert "stopped beating; now cancelled" in service.api.output()


def terminate_connections(database_url: str) -> int:
    """What a PostgreSQL restart or failover does to the service: every connection dropped."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    return len(rows)


def test_dropped_database_connections_fail_no_job(service):
    service.start_api()
    workers = [service.start_worker(f"w{i}") for i in range(2)]
    url = service.env["TRAINSERVE_DATABASE_URL"]
    with service.client() as client:
        ids = [submit(client, model_name=f"pg{i}", epochs=12) for i in range(3)]
        wait_for_epoch(client, ids[0], 2)
        dropped = 0
        for _ in range(100):  # a flapping database for 5 s while two jobs train
            dropped += terminate_connections(url)
            time.sleep(0.05)
        assert dropped >= 20
        jobs = [wait_for_job(client, job_id, DONE, timeout=240) for job_id in ids]
    assert [j["status"] for j in jobs] == ["succeeded"] * 3, (
        [j["error"] for j in jobs],
        service.logs(),
    )
    logs = "".join(w.output() for w in workers) + service.api.output()
    assert "; retrying in " in logs, logs[-4000:]  # the store retried, no job noticed


@contextmanager
def full_disk(path: Path, size: str):
    """A real filesystem of `size` mounted at `path` (tmpfs), unmounted afterwards."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs (needs root): {mounted.stderr.decode()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_full_weights_volume_fails_the_job_saying_so(tmp_path):
    settings = Settings(data_dir=tmp_path, broker_url="memory://", auto_migrate=True)
    services = build_services(settings)
    with full_disk(settings.weights_dir, "16k"):  # the weights are about 30 KB
        job, _ = services.store.create_job(
            {
                **QUICK_JOB,
                "architecture": "mlp",
                "architecture_params": {"hidden_size": 512},
                "epochs": 1,
            }
        )
        assert run_job(job.id, services) == "failed"
        ended = services.store.get_job(job.id)
        assert "no space left on the artifact store (model weights)" in ended.error
        assert ended.model_version is None
        assert files_under(settings.weights_dir) == []  # no half-written temporary file
    assert not (settings.checkpoints_dir / job.id).exists()


def test_a_full_datasets_volume_answers_507(tmp_path):
    settings = make_settings(tmp_path, max_upload_bytes=4 * 1024 * 1024)
    with full_disk(settings.uploads_dir, "32k"), TestClient(create_app(settings)) as client:
        rows = "".join(f"{i},{i * 7 % 1000}.25,{i % 3}\n" for i in range(20_000))
        response = client.post(
            "/v1/datasets",
            headers=AUTH,
            data={"name": "big", "target": "y"},
            files={"file": ("big.csv", f"a,b,y\n{rows}".encode())},
        )
        assert response.status_code == 507, response.text
        assert "no space left on the artifact store" in response.json()["detail"]
        assert files_under(settings.uploads_dir) == []
        assert client.get("/v1/datasets", headers=AUTH).status_code == 200
        assert "big" not in {d["name"] for d in client.get("/v1/datasets", headers=AUTH).json()}
