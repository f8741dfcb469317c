"""The job store: every read and write of jobs, evaluations, models and uploaded datasets.

The store is the source of truth. State changes are conditional UPDATEs, and a worker's writes
are fenced by the lease token it got when it claimed the job, so a worker that lost its claim
(a second delivery, a reaped job) can no longer change the job.

One object, `JobStore`, composed of one part per resource; each part is a mixin over
`StoreBase` (base.py: the session factory, `_run` (one transaction, retried), `_now`, `_ago`,
the registry's listeners):

    jobs.py         jobs as the API sees them: submit, read, list, cancel, count, delete
    leases.py       jobs as a worker and the reaper see them: claim, lease-fenced writes,
                    heartbeats, outcome, requeue, reap, re-send
    checkpoints.py  training checkpoints' rows
    publishing.py   a finished job's weights become a model version (and maybe promoted)
    models.py       models and versions: read, mark corrupt, delete
    aliases.py      aliases of versions: set, delete, resolve
    datasets.py     uploaded datasets' rows
    workers.py      workers and their devices

Deletions remove rows, in one transaction; the files go after (app/core/deletion.py, and
cleanup.sweep finishes).
"""

from __future__ import annotations

from app.core.store.aliases import DEFAULT_ALIAS, AliasesMixin
from app.core.store.checkpoints import CheckpointsMixin
from app.core.store.datasets import DatasetsMixin
from app.core.store.jobs import JobsMixin
from app.core.store.leases import LeasesMixin
from app.core.store.models import ModelsMixin
from app.core.store.publishing import PublishingMixin
from app.core.store.workers import WorkersMixin

__all__ = ["DEFAULT_ALIAS", "JobStore"]


class JobStore(
    JobsMixin,
    LeasesMixin,
    CheckpointsMixin,
    PublishingMixin,
    ModelsMixin,
    AliasesMixin,
    DatasetsMixin,
    WorkersMixin,
):
    """The job store; `JobStore(session_factory, retry_seconds=2.0)`. `retry_seconds`: how
    long a transaction is retried (with backoff) when the database drops or refuses the
    connection (a restart, a failover); workers wait longer than the API, so that an outage
    never fails a job."""
