"""Exports of a model version (ONNX, torch.export) and which versions are served by ONNX Runtime.

An export is made from the version's weights by a child process (models/export_process.py:
torch.export and the ONNX exporter change process-wide state, and a child can be timed out) and
kept in the artifact store next to the weights, where every API process finds it. Workers make
the ONNX export of a version they publish when the API will serve it with ONNX Runtime
(`export_on_publish`), so its first predictions do not wait and API hosts never run the
exporter: it is stored with the weights, before the version can be seen. The API makes any
other export on first use (app/api/exports.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from app.core.artifacts import export_key
from app.core.services import Services
from app.core.settings import Settings
from models.export import ExportError
from models.export_process import export_in_child

log = logging.getLogger(__name__)

# Where ONNX Runtime answered at least 1.3x faster than eager PyTorch on the service's 2-core
# machine, at the batch sizes the batcher makes (bench/backends.py, docs/benchmarks.md).
ONNX_BY_DEFAULT = frozenset({"mnist_convnet", "house_prices_mlp"})


def uses_onnx(settings: Settings, architecture: str) -> bool:
    """Whether the API serves versions of `architecture` with ONNX Runtime."""
    if settings.predict_backend == "auto":
        return architecture in ONNX_BY_DEFAULT
    return settings.predict_backend == "onnx"


def make_export(
    services: Services, model_name: str, version: int, weights: bytes, fmt: str
) -> bytes:
    """Export `weights` (the version's, already verified) in `fmt` in a child process and keep
    the result in the artifact store. ExportError when the child fails or times out."""
    data, seconds = _export(services.settings, weights, fmt)
    services.artifacts.put(export_key(model_name, version, fmt), data)
    log.info(
        "exported %s v%d as %s (%d bytes) in %.1f s, in a child process",
        model_name,
        version,
        fmt,
        len(data),
        seconds,
    )
    return data


def serving_exports(
    settings: Settings, architecture: str, weights: Callable[[], bytes]
) -> dict[str, bytes]:
    """What a worker stores with a version it publishes, by format: its ONNX export where the
    API serves `architecture` with ONNX Runtime (and `export_on_publish` is on), so that the
    version is answered by it from its first prediction (`weights()`: the weights file, made
    only then). Empty when not wanted, or when the export fails (logged: the API then makes it
    on first use); never fails the job."""
    if not (settings.export_on_publish and uses_onnx(settings, architecture)):
        return {}
    try:
        data, seconds = _export(settings, weights(), "onnx")
    except (ExportError, OSError) as exc:  # the child failed, or its temporary folder did
        log.warning("no ONNX export made to publish with (%s); the API makes it on first use", exc)
        return {}
    log.info("made the ONNX export (%d bytes) in %.1f s, in a child process", len(data), seconds)
    return {"onnx": data}


def _export(settings: Settings, weights: bytes, fmt: str) -> tuple[bytes, float]:
    """The export, made by a child process within the configured time; and the seconds taken."""
    started = time.monotonic()
    data = export_in_child(weights, fmt, timeout_s=settings.export_timeout_seconds)
    return data, time.monotonic() - started
