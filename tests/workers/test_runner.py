"""The worker's job runner, in-process against a real SQLite store and weight store."""

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sqlalchemy import update

from app.core import exports as core_exports
from app.core.artifacts import export_key, weights_key
from app.core.cleanup import checkpoint_dir
from app.core.db import Job
from app.core.services import build_services
from app.core.settings import Settings
from models.export import ExportError
from models.onnx_predictor import OnnxPredictor
from models.predictor import Predictor
from models.weights_file import read_card
from workers.progress import StoreProgress, shutdown_requested
from workers.runner import run_job

BOSTON = {
    "model_name": "house",
    "architecture": "house_prices_mlp",
    "dataset": "boston_housing",
    "optimizer": {"name": "adam", "lr": 0.01},
    "epochs": 6,
    "eval_every": 2,
    "device": "cpu",
}


@pytest.fixture
def services(tmp_path):
    settings = Settings(
        data_dir=tmp_path,
        broker_url="memory://",
        database_url=f"sqlite:///{tmp_path}/j.db",
        export_on_publish=False,  # a child process per job: on only where a test looks at it
    )
    return build_services(settings, upgrade=True)


def test_a_job_trains_publishes_and_cleans_up(services):
    job, _ = services.store.create_job(BOSTON)
    assert run_job(job.id, services, worker="w1") == "succeeded"
    done = services.store.get_job(job.id)
    assert (done.status, done.model_version, done.worker) == ("succeeded", 1, "w1")
    assert [row["epoch"] for row in services.store.history(job.id)] == [2, 4, 6]
    version = services.store.get_version("house", 1)
    card = read_card(services.artifacts.get(weights_key("house", 1)))
    assert card.architecture == "house_prices_mlp" and version.input_shape == [13]
    assert not checkpoint_dir(services.settings, job.id).exists()


def test_a_version_served_by_onnx_runtime_is_published_with_its_onnx_export(services):
    """The default (export_on_publish, predict_backend auto): the worker makes the ONNX export
    of a house_prices_mlp version and stores it with the weights, so the API never makes it;
    an architecture the API serves eagerly gets none."""
    services.settings.export_on_publish = True
    job, _ = services.store.create_job(BOSTON)
    assert run_job(job.id, services) == "succeeded"
    eager = Predictor.from_bytes(services.artifacts.get(weights_key("house", 1)))
    onnx = OnnxPredictor.from_bytes(services.artifacts.get(export_key("house", 1, "onnx")), eager)
    samples = np.random.default_rng(0).normal(size=(5, 13)).astype(np.float32)
    expected = eager.predict(samples).predictions
    assert np.allclose(onnx.predict(samples).predictions, expected, atol=1e-4)

    job, _ = services.store.create_job({**BOSTON, "model_name": "plain", "architecture": "mlp"})
    assert run_job(job.id, services) == "succeeded"
    assert not services.artifacts.exists(export_key("plain", 1, "onnx"))


def test_an_export_that_fails_at_publish_leaves_the_job_to_succeed_without_it(
    services, monkeypatch, caplog
):
    services.settings.export_on_publish = True

    failures = [ExportError("the exporter crashed"), OSError(28, "No space left on device")]

    def broken(weights, fmt, **kwargs):
        raise failures.pop(0)

    monkeypatch.setattr(core_exports, "export_in_child", broken)
    for version in (1, 2):
        job, _ = services.store.create_job(BOSTON)
        assert run_job(job.id, services) == "succeeded"
        assert services.store.get_version("house", version).sha256
        assert not services.artifacts.exists(export_key("house", version, "onnx"))
    assert "no ONNX export made to publish with (the exporter crashed)" in caplog.text
    assert "No space left on device" in caplog.text


def test_a_cancel_while_the_export_is_made_ends_the_job_cancelled(services, monkeypatch):
    services.settings.export_on_publish = True
    job, _ = services.store.create_job(BOSTON)

    def cancelled_meanwhile(weights, fmt, **kwargs):
        services.store.cancel(job.id)
        return b"an export"

    monkeypatch.setattr(core_exports, "export_in_child", cancelled_meanwhile)
    assert run_job(job.id, services) == "cancelled"
    assert services.store.get_job(job.id).model_version is None
    assert services.store.list_models() == []
    assert not services.artifacts.exists(export_key("house", 1, "onnx"))


def test_a_published_version_keeps_no_export_left_by_a_rolled_back_publish(services):
    """A publish that wrote its files and was then rolled back gave up its version number: the
    next version with that number is not served (or downloaded) from those files."""
    for fmt in ("onnx", "pt2"):
        services.artifacts.put(export_key("house", 1, fmt), b"another model's export")
    job, _ = services.store.create_job(BOSTON)
    assert run_job(job.id, services) == "succeeded"
    assert services.store.get_version("house", 1)
    assert not services.artifacts.exists(export_key("house", 1, "onnx"))
    assert not services.artifacts.exists(export_key("house", 1, "pt2"))


def test_a_second_delivery_does_nothing(services):
    job, _ = services.store.create_job(BOSTON)
    run_job(job.id, services)
    assert run_job(job.id, services) == "skipped"
    assert services.store.get_job(job.id).attempts == 1


def test_a_user_error_fails_the_job_with_a_message(services):
    job, _ = services.store.create_job({**BOSTON, "dataset": "mnist"})
    assert run_job(job.id, services) == "failed"
    error = services.store.get_job(job.id).error
    assert "downloads are disabled" in error and "Traceback" not in error


def test_the_run_time_limit_stops_the_job(services):
    services.settings.max_job_seconds = 0
    job, _ = services.store.create_job(BOSTON)
    assert run_job(job.id, services) == "failed"
    error = services.store.get_job(job.id).error
    assert "limit of 0 s (TRAINSERVE_MAX_JOB_SECONDS, counted from its first start)" in error
    assert "epoch 0" in error


def test_the_run_time_limit_counts_earlier_attempts(services):
    """A job that already ran 100 s before its worker died, with a 60 s limit, is not given
    another 60 s when it resumes: it ends at once."""
    services.settings.max_job_seconds = 60
    job, _ = services.store.create_job({**BOSTON, "epochs": 5})
    earlier = datetime.now(UTC) - timedelta(seconds=100)
    with services.store._sessions.begin() as session:
        session.execute(update(Job).where(Job.id == job.id).values(started_at=earlier, epoch=3))
    assert services.store.running_seconds(job.id) == pytest.approx(100, abs=5)
    assert run_job(job.id, services) == "failed"
    ended = services.store.get_job(job.id)
    assert "counted from its first start" in ended.error and "epoch 3" in ended.error
    assert ended.attempts == 1


def test_a_cancel_stops_the_running_job(services, monkeypatch):
    job, _ = services.store.create_job({**BOSTON, "epochs": 500})
    original = StoreProgress.on_epoch_end

    def cancel_at_epoch_3(self, trainer, epoch, loss):
        if epoch == 3:
            services.store.cancel(job.id)
            self._last_write = 0.0  # the next write reads the cancel flag
        original(self, trainer, epoch, loss)

    monkeypatch.setattr(StoreProgress, "on_epoch_end", cancel_at_epoch_3)
    assert run_job(job.id, services) == "cancelled"
    ended = services.store.get_job(job.id)
    assert ended.status == "cancelled" and ended.model_version is None
    assert ended.epoch < 10


def test_shutdown_checkpoints_and_requeues(services, monkeypatch):
    job, _ = services.store.create_job(BOSTON)
    sent = []
    monkeypatch.setattr(services, "enqueue", sent.append)
    shutdown_requested.set()
    try:
        assert run_job(job.id, services) == "requeued"
    finally:
        shutdown_requested.clear()
    assert services.store.get_job(job.id).status == "queued"
    assert sent == [job.id]
    assert list(checkpoint_dir(services.settings, job.id).glob("*.ckpt"))
    assert run_job(job.id, services) == "succeeded"  # resumes from the checkpoint
    assert [row["epoch"] for row in services.store.history(job.id)] == [2, 4, 6]


def test_a_missing_upload_fails_the_job_naming_the_dataset_not_a_path(services):
    from app.core.artifacts import dataset_key
    from app.core.datasets import save_upload
    from models.catalogue import load_dataset

    row = save_upload(services, "mine", load_dataset("boston_housing"))
    services.artifacts.delete(dataset_key(row.sha256))
    job, _ = services.store.create_job({**BOSTON, "dataset": "mine"})
    assert run_job(job.id, services) == "failed"
    error = services.store.get_job(job.id).error
    assert "uploaded dataset 'mine' is missing" in error
    assert str(services.settings.data_dir) not in error


def test_a_diverging_job_fails_and_publishes_no_version(services):
    """sgd at lr 10: the loss is infinite after epoch 1. The job fails with the epoch and what
    to change, no version of the model exists, and no NaN evaluation was recorded."""
    diverging = {**BOSTON, "optimizer": {"name": "sgd", "lr": 10}, "epochs": 20}
    job, _ = services.store.create_job(diverging)
    assert run_job(job.id, services) == "failed"
    ended = services.store.get_job(job.id)
    assert ended.error == (
        "diverged at epoch 1: the loss became infinite; lower lr or enable grad_clip_norm"
    )
    assert ended.model_version is None and services.store.list_models() == []
    assert services.store.history(job.id) == []
    assert not checkpoint_dir(services.settings, job.id).exists()
