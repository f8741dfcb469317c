"""Uploaded datasets: kept as NPZ in the artifact store under the sha256 of their content, and
checked against that hash whenever they are read.

Two uploads under one name may race: each stores its own bytes under its own hash, and only
one row wins (the other gets 409), so a row never points at the other upload's file.
"""

from __future__ import annotations

import logging

from app.core.artifacts import ArtifactMissing, dataset_key, legacy_dataset_key
from app.core.db import UploadedDataset
from app.core.errors import Conflict, Unavailable
from app.core.services import Services
from models.datasets import Dataset
from models.files import sha256_hex
from models.uploads import dataset_to_npz, parse_npz

log = logging.getLogger(__name__)


def save_upload(services: Services, name: str, dataset: Dataset) -> UploadedDataset:
    """Store `dataset` under `name`: the bytes first, then the row (Conflict if the name is
    taken, in which case bytes no other row uses are removed again)."""
    npz = dataset_to_npz(dataset)
    sha256 = services.artifacts.put(dataset_key(sha256_hex(npz)), npz)
    row = UploadedDataset(
        name=name,
        task=dataset.task,
        n_samples=len(dataset),
        input_shape=list(dataset.input_shape),
        n_classes=dataset.n_classes,
        classes=dataset.classes if dataset.task == "classification" else None,
        feature_names=dataset.feature_names,
        sha256=sha256,
        size_bytes=len(npz),
    )
    try:
        return services.store.add_dataset(row)
    except Conflict:
        if not services.store.dataset_uses(sha256):
            services.artifacts.delete(dataset_key(sha256))
        raise


def load_upload(services: Services, row: UploadedDataset) -> Dataset:
    """The dataset of `row`, its bytes checked against the row's sha256 (through the worker's
    cache when the store is remote; StoreUnavailable when it does not answer)."""
    if services.cache is not None:
        data = services.cache.get(row.sha256, lambda: _read_upload(services, row))
    else:
        data = _read_upload(services, row)
    if data is None:
        raise Unavailable(f"the file of uploaded dataset '{row.name}' is missing; upload it again")
    if sha256_hex(data) != row.sha256:
        log.error("dataset %s: stored bytes fail their sha256 check", row.name)
        raise Unavailable(
            f"the file of uploaded dataset '{row.name}' is corrupt (sha256 mismatch); "
            "upload it again under a new name"
        )
    return parse_npz(data, max_bytes=services.settings.max_dataset_bytes)


def _read_upload(services: Services, row: UploadedDataset) -> bytes | None:
    for key in (dataset_key(row.sha256), legacy_dataset_key(row.name)):
        try:
            return services.artifacts.get(key)
        except ArtifactMissing:
            continue
    return None
