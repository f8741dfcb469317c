"""ONNX and torch.export exports of a model version, made on demand and cached.

The first request for a format (a download, or the ONNX Runtime predict backend loading the
version) exports from the stored weights (verified against their row first, as for
predictions) in a child process (models/export_process.py: torch.export and the ONNX exporter
change process-wide state, so they never run in the API process, where forwards run in other
threads), which checks the export against the eager model (models/export.py); the export is
kept in the artifact store next to the weights, and later requests, of any API process, read
that file. Deleting the version removes it with the weights.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import BinaryIO

from app.api.stored_weights import verified_weights, version_name
from app.core.artifacts import ArtifactMissing, export_key
from app.core.db import ModelVersion
from app.core.errors import Unavailable
from app.core.services import Services
from models.export import ExportError
from models.export_process import export_in_child

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
        started = time.monotonic()
        data = _export(services, row, fmt)
        services.artifacts.put(key, data)
    log.info(
        "exported %s v%d as %s (%d bytes) in %.1f s, in a child process",
        row.model_name,
        row.version,
        fmt,
        len(data),
        time.monotonic() - started,
    )
    return services.artifacts.open(key)


def _export(services: Services, row: ModelVersion, fmt: str) -> bytes:
    what = version_name(row)
    weights = verified_weights(services, row)
    timeout_s = services.settings.export_timeout_seconds
    try:
        return export_in_child(weights, fmt, timeout_s=timeout_s)
    except ExportError as exc:  # the child failed, timed out, or its export disagreed with eager
        log.error("%s: %s export failed: %s", what, fmt, exc)
        raise Unavailable(f"{what} cannot be exported as {fmt}: {exc}") from None
