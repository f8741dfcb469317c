"""ONNX and torch.export downloads of a model version, made on demand and cached.

The first request for a format exports from the stored weights (verified against their row
first, as for predictions), checks the export against the eager model (models/export.py) and
keeps it in the artifact store next to the weights; later requests read that file. Deleting
the version removes it with the weights.
"""

from __future__ import annotations

import logging
import threading
from typing import BinaryIO

from app.api.inference import verified_weights
from app.core.artifacts import ArtifactMissing, export_key
from app.core.db import ModelVersion
from app.core.errors import Unavailable
from app.core.services import Services
from models.errors import CheckpointError
from models.export import to_onnx, to_pt2
from models.weights_file import deserialize_model

log = logging.getLogger(__name__)

EXPORTERS = {"onnx": to_onnx, "pt2": to_pt2}
_export_lock = threading.Lock()  # one export at a time per process: each takes a CPU and memory


def open_export(services: Services, row: ModelVersion, fmt: str) -> BinaryIO:
    """The export of `row` in `fmt` (onnx, pt2), open at its start (the caller closes it)."""
    if row.corrupt:  # its weights failed their check: nothing made from them is served
        raise Unavailable(
            f"model '{row.model_name}' version {row.version} is marked corrupt; retrain it or "
            "use another version"
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
        data = _export(services, row, fmt)
        services.artifacts.put(key, data)
    log.info("exported %s v%d as %s (%d bytes)", row.model_name, row.version, fmt, len(data))
    return services.artifacts.open(key)


def _export(services: Services, row: ModelVersion, fmt: str) -> bytes:
    what = f"model '{row.model_name}' version {row.version}"
    try:
        model, card = deserialize_model(verified_weights(services, row))
    except CheckpointError as exc:
        raise Unavailable(f"the weights of {what} cannot be loaded: {exc}") from None
    try:
        return EXPORTERS[fmt](model, card)
    except CheckpointError as exc:  # ExportError: the exporter failed or disagreed with eager
        log.error("%s: %s export failed: %s", what, fmt, exc)
        raise Unavailable(f"{what} cannot be exported as {fmt}: {exc}") from None
