"""ONNX and torch.export exports of a model version, as the API reads them: the stored one,
else made on demand (app/core/exports.py) and kept.

A worker makes the ONNX export of a version the API serves with ONNX Runtime when it publishes
it. Otherwise the first request for a format (a download, or the ONNX Runtime predict backend
loading the version) exports from the stored weights (verified against their row first, as for
predictions) in a child process (models/export_process.py: torch.export and the ONNX exporter
change process-wide state, so they never run in the API process, where forwards run in other
threads), which checks the export against the eager model (models/export.py); the export is
kept in the artifact store next to the weights, and later requests, of any API process, read
that file. Deleting the version removes it with the weights.
"""

from __future__ import annotations

import logging
import threading
from typing import BinaryIO

from app.api.stored_weights import verified_weights, version_name
from app.core.artifacts import ArtifactMissing, export_key
from app.core.db import ModelVersion
from app.core.errors import Unavailable
from app.core.exports import make_export
from app.core.services import Services
from models.export import ExportError

log = logging.getLogger(__name__)

# One export at a time per process: each child takes a CPU core and memory for seconds.
_export_lock = threading.Lock()


def open_export(services: Services, row: ModelVersion, fmt: str) -> BinaryIO:
    """The export of `row` in `fmt` (onnx, pt2), open at its start (the caller closes it)."""
    if row.corrupt:  # its weights failed their check: nothing made from them is served
        raise Unavailable(
            f"{version_name(row)} is marked corrupt; retrain it or use another version"
        )
    key = export_key(row.model_name, row.version, fmt)
    try:
        return services.artifacts.open(key)
    except ArtifactMissing:
        pass
    with _export_lock:
        try:  # made by another request while this one waited
            return services.artifacts.open(key)
        except ArtifactMissing:
            pass
        _export(services, row, fmt)
    return services.artifacts.open(key)


def _export(services: Services, row: ModelVersion, fmt: str) -> bytes:
    what = version_name(row)
    weights = verified_weights(services, row)
    try:
        return make_export(services, row.model_name, row.version, weights, fmt)
    except ExportError as exc:  # the child failed, timed out, or its export disagreed with eager
        log.error("%s: %s export failed: %s", what, fmt, exc)
        raise Unavailable(f"{what} cannot be exported as {fmt}: {exc}") from None
