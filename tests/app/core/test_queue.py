"""The queue client on the embedded broker: every file kombu writes stays in the data dir."""

from __future__ import annotations

import os

from kombu.transport.filesystem import Transport

from app.core.queue import JobQueue
from app.core.settings import Settings


def test_the_embedded_broker_writes_only_under_the_data_dir(tmp_path, monkeypatch):
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # kombu's default control folder is ./control
    Transport.global_state.clear()  # process-wide: bindings made by an earlier test's queue
    settings = Settings(data_dir=tmp_path / "data")
    settings.make_dirs()
    queue = JobQueue(settings)
    queue.send("job-1")
    queue.send("job-2")
    assert queue.waiting() == 2
    assert os.listdir(elsewhere) == []
    assert list(settings.broker_control_dir.glob("*.exchange"))
    assert len(list(settings.broker_queue_dir.iterdir())) == 2
