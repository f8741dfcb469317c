"""The reaper and the store's clock: a cancelled job whose worker died ends cancelled, heartbeats
are judged by the database's clock, a heartbeat outlives a failed write, leftovers are swept."""

from __future__ import annotations

import os
import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from app.core.cleanup import checkpoint_dir, sweep
from app.core.db import JobStatus
from app.core.reaper import Reaper
from app.core.services import build_services
from app.core.settings import Settings
from app.core.store import base as store_module  # where the store reads its clock
from tests.e2e.processes import postgres_database
from workers.progress import Heartbeat

REQUEST = {"model_name": "m", "architecture": "mlp", "dataset": "diabetes", "epochs": 3}


def settings_for(tmp_path, **values) -> Settings:
    return Settings(
        data_dir=tmp_path,
        broker_url="memory://",
        heartbeat_timeout_seconds=1.0,
        auto_migrate=True,
        **values,
    )


@pytest.fixture
def pg_services(tmp_path):
    """PostgreSQL only: what a database shared by several hosts must do."""
    with postgres_database() as url:
        services = build_services(settings_for(tmp_path, database_url=url))
        yield services
        services.store._sessions.kw["bind"].dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def services(request, tmp_path):
    if request.param == "sqlite":
        yield build_services(settings_for(tmp_path))
        return
    with postgres_database() as url:
        services = build_services(settings_for(tmp_path, database_url=url))
        yield services
        services.store._sessions.kw["bind"].dispose()


def running_job(services, **request):
    job, _ = services.store.create_job({**REQUEST, **request})
    lease = services.store.claim(job.id, "w1")
    return services.store.get_job(job.id), lease


def test_a_cancelled_job_whose_worker_died_ends_cancelled(services, monkeypatch):
    job, lease = running_job(services)
    folder = checkpoint_dir(services.settings, job.id)
    folder.mkdir(parents=True)
    (folder / "epoch-000001.ckpt").write_bytes(b"x")
    services.store.cancel(job.id)  # asked while running; then the worker is killed
    sent: list[str] = []
    monkeypatch.setattr(services, "enqueue", sent.append)
    time.sleep(1.2)
    counts = Reaper(services).run_once()
    ended = services.store.get_job(job.id)
    assert ended.status == JobStatus.cancelled and ended.finished_at is not None
    assert counts["requeued"] == 0 and sent == []
    assert not folder.exists()
    assert services.store.count_jobs(JobStatus.queued) == 0


def test_shutdown_of_a_cancelled_job_ends_it_cancelled(services):
    job, lease = running_job(services)
    services.store.cancel(job.id)
    assert services.store.requeue(job.id, lease) == JobStatus.cancelled
    assert services.store.get_job(job.id).status == JobStatus.cancelled
    other, other_lease = running_job(services)
    assert services.store.requeue(other.id, other_lease) == JobStatus.queued
    assert services.store.requeue(other.id, other_lease) is None  # not running any more


def test_heartbeats_use_the_database_clock(pg_services, monkeypatch):
    """A worker whose clock is 8 s behind (timeout 1 s) keeps its job alive on PostgreSQL,
    where the database stamps the heartbeat. (SQLite serves one machine, with one clock.)"""
    services = pg_services
    job, lease = running_job(services)
    behind = store_module.utcnow() - timedelta(seconds=8)
    monkeypatch.setattr(store_module, "utcnow", lambda: behind)
    services.store.heartbeat(job.id, lease)
    assert services.store.stale_running(timedelta(seconds=1)) == []
    time.sleep(1.2)
    assert [j.id for j in services.store.stale_running(timedelta(seconds=1))] == [job.id]


def test_a_heartbeat_survives_a_failed_write(services, monkeypatch):
    job, lease = running_job(services)
    beats, real = [], services.store.heartbeat

    def flaky(job_id, lease, epoch=None):
        beats.append(time.monotonic())
        if len(beats) <= 3:  # the store is down for the first three beats
            raise OperationalError("UPDATE jobs", {}, Exception("server closed the connection"))
        return real(job_id, lease, epoch)

    monkeypatch.setattr(services.store, "heartbeat", flaky)
    with Heartbeat(services.store, job.id, lease, interval=0.05):
        deadline = time.monotonic() + 5
        while len(beats) < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert len(beats) >= 6


def test_the_store_retries_a_connection_dropped_mid_transaction(pg_services):
    """As `pg_terminate_backend` (a restart, a failover) does to a worker's transaction."""
    calls: list[int] = []

    def work(session):
        calls.append(1)
        if len(calls) == 1:
            session.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))
        return session.scalar(text("SELECT 42"))

    assert pg_services.store._run(work) == 42
    assert len(calls) == 2
    pg_services.store.retry_seconds = 0  # and with no retries the error reaches the caller
    calls.clear()
    with pytest.raises(OperationalError):
        pg_services.store._run(work)


def test_sweep_removes_what_ended_jobs_and_crashed_writes_left(services):
    settings = services.settings
    settings.make_dirs()
    ended, _ = running_job(services)
    services.store.finish(ended.id, ended.lease, JobStatus.failed, "x")
    alive, _ = running_job(services)
    for job_id in (ended.id, alive.id, "no-such-job"):
        folder = checkpoint_dir(settings, job_id)
        folder.mkdir(parents=True)
        (folder / "epoch-000001.ckpt").write_bytes(b"x")
    old = settings.weights_dir / "m" / ".v1.safetensors.abc.tmp"
    old.parent.mkdir(parents=True)
    old.write_bytes(b"half")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    young = settings.uploads_dir / ".x.npz.def.tmp"
    young.write_bytes(b"in flight")
    before = sorted(p.name for p in settings.checkpoints_dir.iterdir())
    assert len(before) == 3
    assert sweep(services) == {
        "checkpoint_folders": 2,
        "temp_files": 1,
        "version_files": 0,
        "dataset_files": 0,
    }
    assert [p.name for p in settings.checkpoints_dir.iterdir()] == [alive.id]
    assert not old.exists() and young.exists()


def test_the_reaper_sweeps_when_it_starts(services):
    folder = checkpoint_dir(services.settings, "gone")
    folder.mkdir(parents=True)
    reaper = Reaper(services)
    reaper.start()
    try:
        deadline = time.monotonic() + 5
        while folder.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        reaper.stop()
    assert not folder.exists()
    assert not any(t.name == "reaper" for t in threading.enumerate())
