"""The embedded broker's poll interval: a setting, carried to kombu, and a worker still picks up.

How fast a job is picked up is measured by bench/dispatch.py (docs/benchmarks.md). That real
workers pick jobs up on the embedded broker at this interval is what tests/e2e/test_embedded.py
and tests/e2e/test_recipes.py show (`trainserve serve` trains every job they submit); here, the
setting, what kombu gets, and that a message file appears whole.
"""

from __future__ import annotations

import json
import os

import pytest
from kombu.transport.filesystem import Transport
from pydantic import ValidationError

from app.core.queue import FileTransport, JobQueue, make_celery
from app.core.settings import Settings


@pytest.fixture(autouse=True)
def _fresh_bindings():
    """kombu's filesystem transport keeps its declared bindings in one process-wide state, so
    a queue bound here would not be bound (no .exchange file) in another data dir later."""
    Transport.global_state.clear()
    yield
    Transport.global_state.clear()


def test_the_interval_is_bounded(tmp_path, monkeypatch):
    assert Settings(data_dir=tmp_path).broker_poll_seconds == 0.02
    for value in (0.005, 10):
        assert Settings(data_dir=tmp_path, broker_poll_seconds=value).broker_poll_seconds == value
    for value in (0, 0.004, -1, 10.5):
        with pytest.raises(ValidationError, match="broker_poll_seconds"):
            Settings(data_dir=tmp_path, broker_poll_seconds=value)
    monkeypatch.setenv("TRAINSERVE_BROKER_POLL_SECONDS", "1")
    assert Settings(data_dir=tmp_path).broker_poll_seconds == 1.0


def test_only_the_file_broker_gets_the_interval(tmp_path):
    embedded = make_celery(Settings(data_dir=tmp_path, broker_poll_seconds=0.05))
    assert embedded.conf.broker_transport_options["polling_interval"] == 0.05
    with embedded.connection_for_read() as connection:
        assert isinstance(connection.transport, FileTransport)
        assert connection.transport.polling_interval == 0.05  # what kombu sleeps between polls

    redis = make_celery(Settings(data_dir=tmp_path, broker_url="redis://127.0.0.1:1/0"))
    assert "polling_interval" not in redis.conf.broker_transport_options


def test_a_message_file_appears_whole(tmp_path, monkeypatch):
    """Written under a name no queue matches, then renamed: a worker polling every few ms never
    lists a message file before its content is there (kombu writes it in place)."""
    settings = Settings(data_dir=tmp_path / "data")
    settings.make_dirs()
    seen: list[list[str]] = []
    real_replace = os.replace

    def replace(src, dst):
        seen.append(sorted(os.listdir(settings.broker_queue_dir)))  # just before the rename
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    JobQueue(settings).send("job-1")
    assert len(seen) == 1 and len(seen[0]) == 1
    assert seen[0][0].startswith(".") and not seen[0][0].endswith(".training.msg")
    [message] = os.listdir(settings.broker_queue_dir)
    assert message.endswith(".training.msg")
    assert json.loads((settings.broker_queue_dir / message).read_bytes())["body"]
