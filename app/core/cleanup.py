"""What jobs and interrupted writes leave behind, and its removal.

Every end state of a job removes its training checkpoints (the worker on success, failure and
cancel; the reaper when it fails or cancels a job whose worker is gone; the API when it cancels
a queued job that had run before). `sweep` catches the rest, at start-up and then now and then:
checkpoint folders of jobs that have ended or do not exist (a paused worker that wrote one after
another worker finished the job), temporary files of writes cut short by kill -9, and the
files of deleted rows.

Deletion removes rows first (one transaction), then files: a process killed in between leaves
files that no row names, never a row without its file. The sweep removes such files: weights
and exports of a version that no row holds (only numbers already given: a version being
published has its file written before its row commits, under a number not yet given), and
uploaded datasets no row holds once older than `temp_max_age_s` (an upload writes its file
before its row).
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from app.core.artifacts import StoreUnavailable, dataset_key, parse_version_key
from app.core.checkpoints import delete_checkpoints
from app.core.db import TERMINAL
from app.core.services import Services
from app.core.settings import Settings
from models.files import TEMP_SUFFIX

log = logging.getLogger(__name__)

TEMP_MAX_AGE_S = 3600.0  # a write still in flight is younger than this


def checkpoint_dir(settings: Settings, job_id: str) -> Path:
    """Where a job's training checkpoints are kept while it runs."""
    return settings.checkpoints_dir / job_id


def remove_checkpoints(services: Services, job_id: str) -> None:
    """A job's checkpoints in the artifact store (and their rows), and its local folder."""
    delete_checkpoints(services, job_id)
    shutil.rmtree(checkpoint_dir(services.settings, job_id), ignore_errors=True)


def sweep(services: Services, temp_max_age_s: float = TEMP_MAX_AGE_S) -> dict[str, int]:
    """Remove the checkpoints of ended or unknown jobs (in the artifact store, and folders in
    the data dir), and stale temporary files."""
    settings = services.settings
    removed = {"checkpoint_folders": 0, "temp_files": 0}
    removed["version_files"] = remove_orphan_version_files(services)
    removed["dataset_files"] = remove_orphan_dataset_files(services, temp_max_age_s)
    root = settings.checkpoints_dir
    jobs = {p.name for p in root.iterdir() if p.is_dir()} if root.is_dir() else set()
    try:
        jobs |= {key.split("/")[1] for key in services.artifacts.list("checkpoints/")}
    except StoreUnavailable as exc:
        log.warning("sweep: %s", exc)
    if jobs:
        statuses = services.store.statuses(sorted(jobs))
        for job_id in sorted(jobs):
            if statuses.get(job_id) in (None, *TERMINAL):
                remove_checkpoints(services, job_id)
                removed["checkpoint_folders"] += 1
    cutoff = time.time() - temp_max_age_s
    for directory in (settings.weights_dir, settings.uploads_dir, root):
        if not directory.is_dir():
            continue
        for temp in directory.rglob(f".*{TEMP_SUFFIX}"):
            try:
                if temp.stat().st_mtime < cutoff:
                    temp.unlink()
                    removed["temp_files"] += 1
            except FileNotFoundError:
                continue  # removed by its own writer meanwhile
    if any(removed.values()):
        log.info("sweep removed %s", removed)
    return removed


def remove_orphan_version_files(services: Services) -> int:
    """Remove weights and exports under weights/ that no model version row holds."""
    state = services.store.version_files_state()
    removed = 0
    for key in services.artifacts.list("weights/"):
        parsed = parse_version_key(key)
        if parsed is None:
            continue
        name, version = parsed
        assigned, existing = state.get(name, (0, set()))
        if version <= assigned and version not in existing:
            services.artifacts.delete(key)
            removed += 1
    return removed


def remove_orphan_dataset_files(services: Services, min_age_s: float) -> int:
    """Remove uploaded dataset files that no dataset row holds, once older than `min_age_s`."""
    hashes = services.store.dataset_hashes()
    cutoff = time.time() - min_age_s
    removed = 0
    for key in services.artifacts.list("datasets/"):
        sha256 = key.removeprefix("datasets/").removesuffix(".npz")
        if sha256 in hashes or key != _dataset_key_or_none(sha256):
            continue
        path = services.settings.data_dir / key
        try:
            if path.stat().st_mtime < cutoff:
                services.artifacts.delete(key)
                removed += 1
        except FileNotFoundError:
            continue
    return removed


def _dataset_key_or_none(sha256: str) -> str | None:
    try:
        return dataset_key(sha256)
    except ValueError:  # a legacy file kept by name: its row names it, leave it
        return None
