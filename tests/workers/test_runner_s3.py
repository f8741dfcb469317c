"""The job runner with its artifacts in S3 (moto's server over HTTP): uploaded datasets through
the worker's cache, checkpoints recorded with their sha256, tampered objects refused, and a
store that is down making the job wait instead of failing."""

from __future__ import annotations

import logging

import pytest

from app.core.artifacts import checkpoint_key, dataset_key, export_key, weights_key
from app.core.datasets import save_upload
from app.core.services import build_services
from app.core.settings import Settings
from models.catalogue import load_dataset
from models.files import sha256_hex
from models.weights_file import read_card
from workers.progress import StoreProgress, shutdown_requested
from workers.runner import run_job

JOB = {
    "model_name": "house",
    "architecture": "house_prices_mlp",
    "dataset": "mine",
    "optimizer": {"name": "adam", "lr": 0.01},
    "epochs": 6,
    "eval_every": 2,
    "device": "cpu",
}


@pytest.fixture
def services(tmp_path, s3, aws_env):
    if not s3.running:
        s3.start()
    bucket = s3.new_bucket()
    settings = Settings(
        data_dir=tmp_path / "worker",
        broker_url="memory://",
        database_url=f"sqlite:///{tmp_path}/j.db",
        artifacts_url=f"s3://{bucket}/ts",
        s3_endpoint_url=s3.endpoint,
        artifacts_retry_seconds=0.5,
        export_on_publish=False,  # a child process per job: on only where a test looks at it
    )
    services = build_services(settings, upgrade=True)
    services.bucket = bucket
    save_upload(services, "mine", load_dataset("boston_housing"))
    return services


def objects(s3, bucket):
    listed = s3.client().list_objects_v2(Bucket=bucket).get("Contents", [])
    return sorted(item["Key"] for item in listed)


def test_a_job_trains_from_s3_caches_its_dataset_and_leaves_only_its_weights(services, s3):
    services.settings.export_on_publish = True  # the default: an ONNX export published with it
    job, _ = services.store.create_job(JOB)
    assert run_job(job.id, services, worker="w1") == "succeeded"
    services.settings.export_on_publish = False
    version = services.store.get_version("house", 1)
    data = services.artifacts.get(weights_key("house", 1))
    assert (
        sha256_hex(data) == version.sha256 and read_card(data).architecture == JOB["architecture"]
    )
    row = services.store.get_dataset("mine")
    assert objects(s3, services.bucket) == [
        f"ts/{dataset_key(row.sha256)}",
        f"ts/{export_key('house', 1, 'onnx')}",
        f"ts/{weights_key('house', 1)}",
    ]
    assert services.store.checkpoints(job.id) == []
    assert not (services.settings.data_dir / "weights" / "house").exists()  # nothing local
    assert (services.cache.hits, services.cache.misses) == (0, 1)

    second, _ = services.store.create_job(JOB)
    assert run_job(second.id, services) == "succeeded"
    assert (services.cache.hits, services.cache.misses) == (1, 1)  # not downloaded again


def stop_at_epoch(monkeypatch, stop_epoch):
    original = StoreProgress.on_epoch_end

    def on_epoch_end(self, trainer, epoch, train_loss):
        if epoch == stop_epoch:
            shutdown_requested.set()
        try:
            original(self, trainer, epoch, train_loss)
        finally:
            shutdown_requested.clear()

    monkeypatch.setattr(StoreProgress, "on_epoch_end", on_epoch_end)


def test_checkpoints_keep_the_newest_two_and_a_tampered_one_is_skipped(
    services, s3, monkeypatch, caplog
):
    job, _ = services.store.create_job(JOB)
    monkeypatch.setattr(services, "enqueue", lambda job_id: None)
    stop_at_epoch(monkeypatch, 3)
    assert run_job(job.id, services) == "requeued"
    monkeypatch.undo()
    assert [c.epoch for c in services.store.checkpoints(job.id)] == [3, 2]
    keys = [k for k in objects(s3, services.bucket) if "/checkpoints/" in k]
    assert keys == [f"ts/{checkpoint_key(job.id, e)}" for e in (2, 3)]
    for row in services.store.checkpoints(job.id):
        stored = services.artifacts.get(checkpoint_key(job.id, row.epoch))
        assert sha256_hex(stored) == row.sha256

    client = s3.client()
    latest = f"ts/{checkpoint_key(job.id, 3)}"
    body = client.get_object(Bucket=services.bucket, Key=latest)["Body"].read()
    client.put_object(Bucket=services.bucket, Key=latest, Body=body[:-10] + b"0123456789")
    caplog.set_level(logging.INFO)
    assert run_job(job.id, services) == "succeeded"
    assert "epoch-000003.ckpt fails its sha256 check" in caplog.text
    assert f"resuming from {services.artifacts.where(checkpoint_key(job.id, 2))}" in caplog.text
    assert [row["epoch"] for row in services.store.history(job.id)] == [2, 4, 6]
    assert not [k for k in objects(s3, services.bucket) if "/checkpoints/" in k]


def test_a_tampered_dataset_fails_the_job_naming_it(services, s3):
    row = services.store.get_dataset("mine")
    s3.client().put_object(
        Bucket=services.bucket, Key=f"ts/{dataset_key(row.sha256)}", Body=b"changed bytes"
    )
    job, _ = services.store.create_job(JOB)
    assert run_job(job.id, services) == "failed"
    error = services.store.get_job(job.id).error
    assert "uploaded dataset 'mine' is corrupt (sha256 mismatch)" in error
    assert not list(services.cache.directory.glob("*"))  # never cached


def test_a_store_that_is_down_sends_the_job_back_with_a_note_then_it_trains(services, s3):
    job, _ = services.store.create_job(JOB)
    s3.stop()
    try:
        assert run_job(job.id, services) == "artifacts-unavailable"
    finally:
        s3.start()
    waiting = services.store.get_job(job.id)
    assert waiting.status == "queued"
    assert f"waiting for the artifact store: the artifact store {services.artifacts.name}" in (
        waiting.error
    )
    assert "resumes from its last checkpoint once the store answers" in waiting.error
    assert run_job(job.id, services) == "succeeded"
    done = services.store.get_job(job.id)
    assert done.error is None and done.model_version == 1
