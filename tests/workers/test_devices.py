"""A worker announces its devices on Celery's `worker_ready`, keeps its row fresh from a thread,
announces again when its row was removed, and takes it away on `worker_shutdown`."""

from __future__ import annotations

import os
import socket
from datetime import timedelta

import pytest
from celery.signals import worker_ready, worker_shutdown

from app.core.settings import get_settings
from tests.e2e.processes import wait_until
from workers import tasks
from workers.devices import DeviceAnnouncer, local_devices

LIVE = timedelta(seconds=60)


class Consumer:
    """What Celery sends `worker_ready` from: its node name is `hostname`."""

    hostname = "celery@test"


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAINSERVE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TRAINSERVE_WORKER_LIVENESS_FILE", str(tmp_path / "alive"))
    monkeypatch.setenv("TRAINSERVE_HEARTBEAT_SECONDS", "0.05")
    for cached in (get_settings, tasks.worker_services, tasks.worker_liveness):
        cached.cache_clear()
    yield tasks.worker_services().store
    for cached in (get_settings, tasks.worker_services, tasks.worker_liveness):
        cached.cache_clear()


def test_local_devices_on_this_machine():
    kind, count, names = local_devices()
    assert (kind, count, names) == ("cpu", 1, ["cpu"]) or (kind == "cuda" and count == len(names))


def test_worker_ready_announces_and_shutdown_removes(store):
    worker_ready.send(sender=Consumer())
    try:
        (row,) = store.live_workers(LIVE)
        assert row.name == f"celery@test/{os.getpid()}"
        assert (row.device, row.device_count, row.device_names) == local_devices()
        first_beat = row.heartbeat_at
        wait_until(lambda: store.live_workers(LIVE)[0].heartbeat_at > first_beat, 10, "a heartbeat")
    finally:
        worker_shutdown.send(sender=None)
    assert store.live_workers(LIVE) == []


def test_a_removed_row_is_announced_again(store):
    announcer = DeviceAnnouncer(store, f"{socket.gethostname()}/x", 0.05, 60)
    announcer.start()
    try:
        store.remove_worker(announcer.name)
        wait_until(lambda: store.live_workers(LIVE), 10, "the row to come back")
    finally:
        announcer.stop()
    assert store.live_workers(LIVE) == []


def test_stale_rows_stop_counting_and_are_forgotten(store):
    store.announce_worker("old", "cuda", 1, ["gpu"])
    assert [w.name for w in store.live_workers(LIVE)] == ["old"]
    assert store.live_workers(timedelta(0)) == []
    assert store.forget_workers(timedelta(0)) == 1
    assert store.live_workers(LIVE) == []
