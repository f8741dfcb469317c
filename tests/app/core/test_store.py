"""The job store on SQLite and on PostgreSQL: transitions, fencing, versions, idempotency."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta

import pytest
from sqlalchemy import text

from app.core import db
from app.core.db import make_engine, make_session_factory
from app.core.errors import Conflict, LeaseLost, NotFound, TooLarge
from app.core.migrate import upgrade
from app.core.store import JobStore
from tests.e2e.processes import postgres_database

REQUEST = {
    "model_name": "m",
    "architecture": "mlp",
    "dataset": "diabetes",
    "epochs": 3,
}
VERSION_FIELDS = {
    "model_name": "m",
    "task": "regression",
    "architecture": "mlp",
    "input_shape": [10],
    "classes": None,
    "metrics": {"val_loss": 2.0},
}


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path}/t.db")
        upgrade(engine)
        yield JobStore(make_session_factory(engine))
        return
    with postgres_store() as store:
        yield store


@contextmanager
def postgres_store():
    with postgres_database() as url:
        engine = make_engine(url)
        upgrade(engine)
        yield JobStore(make_session_factory(engine))
        engine.dispose()


def test_job_lifecycle(store):
    job, created = store.create_job(REQUEST)
    assert created and job.status == "queued"
    lease = store.claim(job.id, "host-a")
    assert lease == 1
    assert store.claim(job.id, "host-b") is None  # a second delivery does nothing
    running = store.get_job(job.id)
    assert (running.status, running.worker, running.attempts) == ("running", "host-a", 1)
    assert store.heartbeat(job.id, lease, epoch=1) is False
    store.record_evaluation(job.id, lease, {"epoch": 1, "train_loss": 2.0, "val_loss": 3.0})
    store.record_evaluation(job.id, lease, {"epoch": 1, "train_loss": 1.5, "val_loss": 2.5})
    store.record_evaluation(job.id, lease, {"epoch": 2, "train_loss": 1.0, "val_loss": 2.0})
    assert store.history(job.id) == [
        {"epoch": 1, "train_loss": 1.5, "val_loss": 2.5},
        {"epoch": 2, "train_loss": 1.0, "val_loss": 2.0},
    ]
    version = store.publish_version(job.id, lease, VERSION_FIELDS, lambda v: ("ab" * 32, 10))
    assert version == 1
    done = store.get_job(job.id)
    assert (done.status, done.model_version, done.epoch) == ("succeeded", 1, 2)
    assert done.finished_at is not None
    with pytest.raises(Conflict, match="succeeded"):
        store.cancel(job.id)


def test_versions_count_up_per_model(store):
    versions = []
    for _ in range(3):
        job, _ = store.create_job(REQUEST)
        lease = store.claim(job.id, "w")
        fake_write = lambda v: ("0" * 64, 1)  # noqa: E731 - the file itself is not under test
        versions.append(store.publish_version(job.id, lease, VERSION_FIELDS, fake_write))
    assert versions == [1, 2, 3]
    model, rows = store.get_model("m")
    assert model.latest_version == 3 and [r.version for r in rows] == [1, 2, 3]
    assert store.get_version("m", None).version == 3
    with pytest.raises(NotFound, match="versions: 1, 2, 3"):
        store.get_version("m", 7)


def test_a_model_takes_the_task_and_architecture_of_its_newest_version(store):
    classifier = {**VERSION_FIELDS, "task": "classification", "architecture": "cnn"}
    for fields in (VERSION_FIELDS, classifier):
        job, _ = store.create_job(REQUEST)
        lease = store.claim(job.id, "w")
        store.publish_version(job.id, lease, fields, lambda v: ("0" * 64, 1))
    (listed,) = store.list_models()
    model, rows = store.get_model("m")
    for row in (listed, model):
        assert (row.latest_version, row.task, row.architecture) == (2, "classification", "cnn")
    assert [(r.task, r.architecture) for r in rows] == [
        ("regression", "mlp"),
        ("classification", "cnn"),
    ]


def test_a_stale_lease_cannot_write(store):
    job, _ = store.create_job(REQUEST)
    old = store.claim(job.id, "w1")
    assert store.requeue(job.id, old)
    new = store.claim(job.id, "w2")
    assert new == old + 1
    with pytest.raises(LeaseLost):
        store.heartbeat(job.id, old)
    with pytest.raises(LeaseLost):
        store.record_evaluation(job.id, old, {"epoch": 1, "val_loss": 1.0})
    store.finish(job.id, old, "failed", error="stale")
    assert store.get_job(job.id).status == "running"
    assert store.get_job(job.id).attempts == 2


def test_cancel_queued_and_running(store):
    queued, _ = store.create_job(REQUEST)
    assert store.cancel(queued.id).status == "cancelled"
    assert store.claim(queued.id, "w") is None  # never started
    running, _ = store.create_job(REQUEST)
    lease = store.claim(running.id, "w")
    assert store.cancel(running.id).cancel_requested
    assert store.heartbeat(running.id, lease) is True
    with pytest.raises(NotFound):
        store.cancel("nope")


@pytest.fixture
def pg_store(monkeypatch):
    """A PostgreSQL store whose sessions idle in a transaction are ended after 1 s."""
    monkeypatch.setattr(db, "PG_IDLE_IN_TRANSACTION_S", 1.0)
    with postgres_store() as store:
        yield store


def test_a_worker_frozen_inside_its_transaction_blocks_a_cancel_only_briefly(pg_store):
    """A worker stopped inside its transaction (SIGSTOP, a paused host) holds the job's row
    lock: PostgreSQL ends that session, the API's cancel goes through, and the worker, once
    it wakes, runs its transaction again on a new connection."""
    store = pg_store
    job, _ = store.create_job(REQUEST)
    store.claim(job.id, "w")
    frozen = threading.Event()
    attempts = []

    def beat(session):
        attempts.append(1)
        session.execute(text("UPDATE jobs SET worker = 'w2' WHERE id = :id"), {"id": job.id})
        if len(attempts) == 1:
            frozen.set()
            time.sleep(2.5)
        stmt = text("SELECT cancel_requested FROM jobs WHERE id = :id")
        return session.scalar(stmt, {"id": job.id})

    with ThreadPoolExecutor(1) as pool:
        worker = pool.submit(store._run, beat)
        frozen.wait(5)
        started = time.monotonic()
        assert store.cancel(job.id).cancel_requested
        waited = time.monotonic() - started
        assert worker.result(timeout=30) is True  # its second try sees the cancel
    assert 0.5 < waited < 2.2  # ended after 1 s idle, well before the worker woke (2.5 s)
    assert len(attempts) == 2
    assert store.get_job(job.id).worker == "w2"


def test_a_publish_may_wait_on_a_slow_upload(pg_store):
    """Publishing holds its transaction open while the weights upload (the file exists before
    the version does): an upload longer than the idle limit publishes once, not again."""
    store = pg_store
    job, _ = store.create_job(REQUEST)
    lease = store.claim(job.id, "w")
    uploads = []

    def slow_upload(version: int) -> tuple[str, int]:
        uploads.append(version)
        time.sleep(2.0)
        return "ab" * 32, 10

    assert store.publish_version(job.id, lease, VERSION_FIELDS, slow_upload) == 1
    assert uploads == [1]
    assert store.get_job(job.id).status == "succeeded"
    assert [v.version for v in store.get_model("m")[1]] == [1]


def test_list_filters_and_pages_newest_first(store):
    ids = [store.create_job({**REQUEST, "model_name": f"m{i % 2}"})[0].id for i in range(5)]
    items, total = store.list_jobs(status=None, model_name=None, limit=2, offset=0)
    assert total == 5 and [j.id for j in items] == ids[::-1][:2]
    items, total = store.list_jobs(status="queued", model_name="m0", limit=10, offset=1)
    assert total == 3 and len(items) == 2


def test_idempotency_key_makes_one_job_under_concurrency(store):
    def post(_):
        return store.create_job(REQUEST, owner="k", idempotency_key="same")

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(post, range(20)))
    assert len({job.id for job, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    other, created = store.create_job(REQUEST, owner="other-key", idempotency_key="same")
    assert created and other.id != results[0][0].id


def test_queue_limit_is_per_key(store):
    store.create_job(REQUEST, owner="a", max_queued=2)
    store.create_job(REQUEST, owner="a", max_queued=2)
    with pytest.raises(TooLarge, match="limit is 2"):
        store.create_job(REQUEST, owner="a", max_queued=2)
    assert store.create_job(REQUEST, owner="b", max_queued=2)[1]


def test_stale_running_jobs_are_found(store):
    job, _ = store.create_job(REQUEST)
    store.claim(job.id, "w")
    assert store.stale_running(timedelta(seconds=60)) == []
    assert [j.id for j in store.stale_running(timedelta(seconds=-1))] == [job.id]


def test_aliases_are_set_moved_resolved_and_deleted(store):
    """On both databases: the upsert that moves an alias, and `production` as the default."""
    for _ in range(3):
        job, _ = store.create_job(REQUEST)
        lease = store.claim(job.id, "w")
        store.publish_version(job.id, lease, VERSION_FIELDS, lambda v: ("0" * 64, 1))
    assert store.resolve_version("m", None).version == 3  # no production alias: the latest
    store.set_alias("m", "production", 1)
    store.set_alias("m", "staging", 2)
    assert store.aliases("m") == {"production": 1, "staging": 2}
    assert store.resolve_version("m", None).version == 1
    store.set_alias("m", "production", 2)  # moved, not added
    assert store.aliases("m") == {"production": 2, "staging": 2}
    assert store.resolve_version("m", "staging").version == 2
    assert store.resolve_version("m", 3).version == 3
    with pytest.raises(NotFound):
        store.set_alias("m", "production", 9)
    store.delete_alias("m", "production")
    assert store.resolve_version("m", None).version == 3
    with pytest.raises(NotFound, match="staging"):
        store.resolve_version("m", "production")


def test_the_registry_revision_moves_with_every_change_of_models_versions_and_aliases(store):
    """Bumped by the database's triggers (migration 0005): by the store's own writes, by
    any other SQL (another process, a deletion), never by reads or by jobs."""
    seen = [store.registry_revision()]

    def moved() -> bool:
        seen.append(store.registry_revision())
        return seen[-1] != seen[-2]

    job, _ = store.create_job(REQUEST)
    lease = store.claim(job.id, "w")
    assert not moved()  # jobs are not the registry
    store.publish_version(job.id, lease, VERSION_FIELDS, lambda v: ("0" * 64, 1))
    assert moved()
    store.resolve_version("m", None)
    store.get_version("m", 1)
    assert not moved()
    store.set_alias("m", "production", 1)
    assert moved()
    store.set_alias("m", "production", 1)  # the same value again: still a write
    assert moved()
    store.delete_alias("m", "production")
    assert moved()
    store.mark_corrupt("m", 1)
    assert moved()
    with store._sessions.begin() as session:  # what a deletion elsewhere would do
        session.execute(text("DELETE FROM model_versions WHERE model_name = 'm'"))
    assert moved()
    with pytest.raises(NotFound, match="no version 1"):
        store.get_version("m", 1)


# -- the registry's lifecycle: deletion, numbering, promotion (SQLite and PostgreSQL) --------


def _publish(store, metrics=None, promote=None) -> int:
    job, _ = store.create_job(REQUEST)
    lease = store.claim(job.id, "w")
    fields = {**VERSION_FIELDS, "metrics": metrics or VERSION_FIELDS["metrics"]}
    return store.publish_version(job.id, lease, fields, lambda v: ("0" * 64, 1), promote=promote)


def test_deleted_numbers_are_never_given_again(store):
    assert [_publish(store) for _ in range(3)] == [1, 2, 3]
    store.set_alias("m", "production", 3)
    with pytest.raises(Conflict, match="named by alias\\(es\\) production"):
        store.delete_version("m", 3)
    assert store.delete_version("m", 3, force=True) == ["production"]
    assert store.aliases("m") == {}
    model, rows = store.get_model("m")
    assert model.latest_version == 2 and [r.version for r in rows] == [1, 2]
    assert store.resolve_version("m", None).version == 2
    assert _publish(store) == 4
    assert store.version_files_state()["m"] == (4, {1, 2, 4})

    assert store.delete_model("m") == [1, 2, 4]
    with pytest.raises(NotFound):
        store.get_model("m")
    assert store.list_models() == []
    assert _publish(store) == 5


def test_promotion_is_decided_with_the_publish(store):
    rule = {"alias": "production", "if_better": "val_loss"}
    _publish(store, {"val_loss": 2.0}, rule)
    _publish(store, {"val_loss": 3.0}, rule)
    assert store.aliases("m") == {"production": 1}
    _publish(store, {"val_loss": 1.0}, rule)
    assert store.aliases("m") == {"production": 3}
    jobs, _ = store.list_jobs(status="succeeded", model_name="m", limit=10, offset=0)
    decisions = [j.promotion["moved"] for j in sorted(jobs, key=lambda j: j.model_version)]
    assert decisions == [True, False, True]


def test_concurrent_promotions_leave_the_best_version(store):
    """Publishes serialise on the model's row: each rule compares with the alias as the one
    before it left it, so the best of the versions ends up with the alias."""
    rule = {"alias": "production", "if_better": "val_loss"}
    losses = [5.0, 3.0, 4.0, 1.0, 2.0, 6.0]
    jobs = []
    for _ in losses:
        job, _ = store.create_job(REQUEST)
        jobs.append((job.id, store.claim(job.id, "w")))

    def publish(i: int) -> int:
        job_id, lease = jobs[i]
        fields = {**VERSION_FIELDS, "metrics": {"val_loss": losses[i]}}
        return store.publish_version(job_id, lease, fields, lambda v: ("0" * 64, 1), rule)

    with ThreadPoolExecutor(len(losses)) as pool:
        versions = list(pool.map(publish, range(len(losses))))
    best = versions[losses.index(min(losses))]
    assert store.aliases("m") == {"production": best}


def test_delete_job_and_dataset_refused_while_in_use(store):
    from app.core.db import UploadedDataset

    job, _ = store.create_job({**REQUEST, "dataset": "mine"})
    store.add_dataset(
        UploadedDataset(
            name="mine",
            task="regression",
            n_samples=3,
            input_shape=[1],
            n_classes=None,
            classes=None,
            feature_names=None,
            sha256="a" * 64,
            size_bytes=1,
        )
    )
    with pytest.raises(Conflict, match="is queued"):
        store.delete_job(job.id)
    with pytest.raises(Conflict, match=job.id):
        store.delete_dataset("mine")
    store.cancel(job.id)
    row, shared = store.delete_dataset("mine")
    assert row.sha256 == "a" * 64 and shared is False
    store.delete_job(job.id)
    with pytest.raises(NotFound):
        store.get_job(job.id)
