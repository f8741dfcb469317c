"""Deleting jobs, model versions, models and uploaded datasets: rows, then files.

Each deletion commits its rows in one transaction first, then removes the files those rows
named. A process killed between the two leaves files that no row names, which nobody can reach
and `cleanup.sweep` removes (at the API's start and now and then); never a row whose file is
gone. `TRAINSERVE_DELETE_PAUSE_SECONDS` (fault tests only) pauses between the two steps.
"""

from __future__ import annotations

import logging
import time

from app.core.artifacts import dataset_key, version_keys
from app.core.cleanup import remove_checkpoints
from app.core.services import Services

log = logging.getLogger(__name__)


def _between_steps(services: Services, what: str) -> None:
    pause = services.settings.delete_pause_seconds
    if pause:
        log.warning("deleting %s: rows removed; pausing %.1f s before the files", what, pause)
        time.sleep(pause)


def delete_job(services: Services, job_id: str) -> None:
    """An ended job, its evaluations and its checkpoints (its model version stays)."""
    services.store.delete_job(job_id)
    _between_steps(services, f"job {job_id}")
    remove_checkpoints(services, job_id)
    log.info("deleted job %s", job_id)


def _remove_version_files(services: Services, name: str, versions: list[int]) -> None:
    for version in versions:
        for key in version_keys(name, version):
            services.artifacts.delete(key)


def delete_version(services: Services, name: str, version: int, force: bool) -> list[str]:
    """One model version with its weights and exports; returns the aliases removed (force)."""
    aliases = services.store.delete_version(name, version, force=force)
    _between_steps(services, f"model {name} version {version}")
    _remove_version_files(services, name, [version])
    log.info("deleted model %s version %d (aliases removed: %s)", name, version, aliases)
    return aliases


def delete_model(services: Services, name: str) -> list[int]:
    """Every version of a model, with their files and aliases; returns the version numbers."""
    versions = services.store.delete_model(name)
    _between_steps(services, f"model {name}")
    _remove_version_files(services, name, versions)
    log.info("deleted model %s (versions %s)", name, versions)
    return versions


def delete_dataset(services: Services, name: str) -> None:
    """An uploaded dataset; its file goes unless another dataset holds the same content."""
    row, shared = services.store.delete_dataset(name)
    _between_steps(services, f"dataset {name}")
    if not shared:
        services.artifacts.delete(dataset_key(row.sha256))
    log.info("deleted dataset %s", name)
