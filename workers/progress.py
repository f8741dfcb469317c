"""Trainer callbacks that connect a running job to the job store."""

from __future__ import annotations

import logging
import threading
import time

from app.core import metrics
from app.core.checkpoints import store_checkpoint
from app.core.errors import LeaseLost
from app.core.services import Services
from app.core.store import JobStore
from models.callbacks import Callback, Checkpointing
from models.checkpoints import checkpoint_bytes

log = logging.getLogger(__name__)


# Set when the worker process is asked to stop (SIGTERM, Ctrl-C): running jobs checkpoint and
# go back to the queue instead of holding the shutdown until they finish.
shutdown_requested = threading.Event()


class Interrupted(Exception):
    """The worker is shutting down; the job's latest state is in its checkpoint."""


class StoreCheckpointing(Checkpointing):
    """Checkpoints into the artifact store, recorded with their sha256 in the job store
    (app/core/checkpoints.py), so that a worker on any host can resume the job."""

    def __init__(self, services: Services, job_id: str, lease: int, every: int = 1) -> None:
        super().__init__(services.settings.checkpoints_dir / job_id, every=every, keep=2)
        self.services, self.job_id, self.lease = services, job_id, lease

    def save(self, trainer) -> str:
        key = store_checkpoint(
            self.services,
            self.job_id,
            self.lease,
            trainer.epoch,
            checkpoint_bytes(trainer.state_dict()),
            keep=self.keep,
        )
        self._saved = (trainer.epoch, len(trainer.history))
        return key


class StoreProgress(Callback):
    """Writes progress and every evaluation to the store; stops the fit on a cancel.

    Progress is written at most every `min_interval` seconds (each write also answers whether
    a cancel was asked), and always on an evaluation, so tiny epochs do not hammer the store.
    On a worker shutdown it checkpoints and raises `Interrupted` at the end of the epoch.
    """

    def __init__(
        self,
        store: JobStore,
        job_id: str,
        lease: int,
        checkpointing: Checkpointing,
        min_interval: float = 0.5,
    ) -> None:
        self.store, self.job_id, self.lease = store, job_id, lease
        self.checkpointing = checkpointing
        self.min_interval = min_interval
        self.cancelled = False
        self._last_write = 0.0

    def on_epoch_end(self, trainer, epoch: int, train_loss: float) -> None:
        if shutdown_requested.is_set():
            self.checkpointing.save(trainer)
            raise Interrupted(self.job_id)
        now = time.monotonic()
        if now - self._last_write >= self.min_interval:
            self._last_write = now
            if self.store.heartbeat(self.job_id, self.lease, epoch=epoch):
                self.cancelled = True
                trainer.should_stop = True

    def on_evaluate(self, trainer, row: dict) -> None:
        self.store.record_evaluation(self.job_id, self.lease, row)


class EpochCounter(Callback):
    """Counts epochs by architecture (trainserve_training_epochs_total: its rate is epochs/s)."""

    def __init__(self, architecture: str) -> None:
        self.architecture = architecture

    def on_epoch_end(self, trainer, epoch: int, train_loss: float) -> None:
        metrics.epoch_done(self.architecture)


class JobTimeout(Exception):
    """The job ran past the configured limit (TRAINSERVE_MAX_JOB_SECONDS)."""


class Deadline(Callback):
    """Stops a run once `seconds` have passed since the job first started (checked at each
    epoch's end); `already` is what earlier attempts used, so a resume does not reset it."""

    def __init__(self, seconds: float, already: float = 0.0) -> None:
        self.seconds = seconds
        self._start = time.monotonic() - already

    def remaining(self) -> float:
        return self.seconds - self.elapsed()

    def elapsed(self) -> float:
        """Seconds since the job first started (over all its attempts)."""
        return time.monotonic() - self._start

    def message(self, epoch: int) -> str:
        return (
            f"the job ran longer than the limit of {self.seconds:.0f} s "
            f"(TRAINSERVE_MAX_JOB_SECONDS, counted from its first start) and was stopped at "
            f"epoch {epoch}; ask for fewer epochs or a smaller model"
        )

    def on_epoch_end(self, trainer, epoch: int, train_loss: float) -> None:
        if self.remaining() < 0:
            raise JobTimeout(self.message(epoch))


class Heartbeat:
    """Refreshes the job's heartbeat from a thread, so a long epoch does not look like a crash."""

    def __init__(self, store: JobStore, job_id: str, lease: int, interval: float) -> None:
        self.store, self.job_id, self.lease, self.interval = store, job_id, lease, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{job_id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        """Beats until the job ends: a failed write (the store down for a moment) is retried
        at the next beat; only a lost lease (another worker has the job) stops it."""
        while not self._stop.wait(self.interval):
            try:
                self.store.heartbeat(self.job_id, self.lease)
            except LeaseLost:
                log.warning("heartbeat for job %s: lease lost; stopping", self.job_id)
                return
            except Exception as exc:  # the store is down: beat again next time
                log.warning("heartbeat for job %s failed (retrying): %s", self.job_id, exc)
