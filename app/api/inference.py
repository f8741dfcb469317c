"""Serving predictions: loaded model versions (app/api/model_cache.py), each with its batcher.

Like TorchServe's handler: a model version is loaded once per process (bytes -> sha256 check
against its row -> module in eval mode), then each call is validate -> inference -> response.

The hot path (a loaded version) runs on the event loop up to the forward: the cache is read
without a thread, samples are validated and budgeted before they are queued, and the batch's
forward in the inference executor is the request's one thread hop (app/api/batcher.py).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread
import numpy as np

from app.api import exports
from app.api.batcher import Batcher
from app.api.model_cache import ModelCache, cache_key
from app.api.stored_weights import verified_weights, version_name
from app.core.artifacts import export_key
from app.core.db import ModelVersion
from app.core.errors import Unavailable
from app.core.exports import uses_onnx
from app.core.services import Services
from models.errors import CheckpointError
from models.export import ExportError
from models.onnx_predictor import OnnxPredictor
from models.predictor import InputError, Prediction, Predictor, check_inputs

log = logging.getLogger(__name__)

INLINE_CHECK_NUMBERS = 65_536  # up to this many numbers, samples are checked on the loop
DISCONNECT_POLL_S = 0.05  # how often a running prediction asks whether its client is there


@dataclass
class ServedModel:
    """A loaded version: its predictor and the batcher that feeds it. `ready` is set once the
    predictor is the one the settings chose (an ONNX Runtime export runs in the background
    after the load, and eager PyTorch answers meanwhile)."""

    predictor: Predictor | OnnxPredictor
    batcher: Batcher | None = None
    ready: threading.Event = field(default_factory=threading.Event)


def load_predictor(services: Services, row: ModelVersion) -> tuple[Predictor, int]:
    """Read a version's weights, verify them against the row, and build the predictor."""
    what = version_name(row)
    data = verified_weights(services, row)
    try:
        predictor = Predictor.from_bytes(data)
    except CheckpointError as exc:
        raise Unavailable(f"the weights of {what} cannot be loaded: {exc}") from None
    log.info("loaded %s (%d bytes)", what, len(data))
    return predictor, len(data)


def load_served(
    services: Services, row: ModelVersion, executor: Executor
) -> tuple[ServedModel, int]:
    """`load_predictor`, with a batcher configured from settings; when the settings choose
    ONNX Runtime for it, a thread of its own fetches the version's ONNX export (made once by a
    child process and kept in the artifact store: seconds the first time), and the eager
    predictor answers until it is checked and ready."""
    settings = services.settings
    predictor, size = load_predictor(services, row)
    served = ServedModel(predictor)
    served.batcher = Batcher(
        forward(served, predictor.chunk_size(settings.predict_chunk_bytes)),
        executor,
        max_batch=settings.predict_max_batch,
        max_wait_s=settings.predict_max_wait_ms / 1000,
        max_queue=settings.predict_max_queue,
        max_in_flight=settings.inference_threads,
        name=version_name(row),
        model=row.model_name,
    )
    if uses_onnx(settings, predictor.card.architecture):
        switch = threading.Thread(target=_switch_to_onnx, args=(served, services, row), daemon=True)
        switch.start()
    else:
        served.ready.set()
    return served, size


def _switch_to_onnx(served: ServedModel, services: Services, row: ModelVersion) -> None:
    """Answer with ONNX Runtime from the next batch on: the version's ONNX export, the one its
    downloads give (`exports.open_export`: made by a child process, never in this one, and
    kept in the artifact store for every API process and restart), opened once its answers
    match eager's. An export that cannot be made, opened or matched leaves eager, with a
    warning; a stored one that does not match its weights (stale or tampered) is removed, so
    that the next load or download makes it again from the verified weights."""
    eager = served.predictor
    what = version_name(row)
    threads = services.settings.inference_intra_op_threads or os.cpu_count() or 1
    try:
        with exports.open_export(services, row, "onnx") as handle:
            data = handle.read()
        served.predictor = OnnxPredictor.from_bytes(data, eager, threads=threads)
        log.info("%s: answering with ONNX Runtime (%d intra-op threads)", what, threads)
    except ExportError as exc:  # the stored export does not open, run or match eager
        log.warning(
            "%s: its stored ONNX export is refused (%s); removing it; answering with eager PyTorch",
            what,
            exc,
        )
        _remove_stored_export(services, row)
    except Unavailable as exc:  # the export could not be made, or the store did not answer
        log.warning("%s: no ONNX export (%s); answering with eager PyTorch", what, exc)
    except Exception:  # a thread of its own: whatever happens, eager keeps answering
        log.exception("%s: switching to ONNX Runtime failed; answering with eager PyTorch", what)
    finally:
        served.ready.set()


def _remove_stored_export(services: Services, row: ModelVersion) -> None:
    try:
        services.artifacts.delete(export_key(row.model_name, row.version, "onnx"))
    except (OSError, Unavailable) as exc:
        log.warning("%s: its refused ONNX export could not be removed: %s", version_name(row), exc)


def forward(served: ServedModel, chunk: int) -> Callable[..., Prediction]:
    """One batch's forward, run in the inference executor, by the served model's predictor of
    the moment: chunks of at most `chunk` samples, stopping between them when `stop()` says
    every client left; JSON-safe outputs."""

    def run(samples: np.ndarray, stop: Callable[[], bool]) -> Prediction:
        result = served.predictor.predict(samples, chunk=chunk, stop=stop)
        probabilities = result.probabilities
        return Prediction(
            _finite_or_none(result.predictions),
            None if probabilities is None else _finite_or_none(probabilities),
        )

    return run


async def predict(
    services: Services,
    cache: ModelCache,
    executor: Executor,
    row: ModelVersion,
    inputs: list[Any],
    client_gone: Callable[[], Awaitable[bool]] | None = None,
) -> dict[str, Any]:
    """Validate `inputs`, queue them on the version's batcher, answer.

    A request is budgeted by samples x the model's activation bytes per sample (known when the
    model is loaded) and refused alone when its samples are bad (422), before it is queued.
    Forwards run in chunks that bound their memory; a request whose client left (asked every
    DISCONNECT_POLL_S) is dropped before its forward, and a forward stops between chunks once
    every client of its batch left (Abandoned). A full queue raises batcher.QueueFull."""
    settings = services.settings
    max_samples = settings.max_predict_samples
    if len(inputs) > max_samples:
        raise InputError(
            f"too many samples: {len(inputs)} > the limit of {max_samples} "
            "(TRAINSERVE_MAX_PREDICT_SAMPLES); send them in several requests"
        )
    key = cache_key(row)
    served = cache.peek(key)
    if served is None:
        served = await anyio.to_thread.run_sync(
            cache.get, key, lambda: load_served(services, row, executor)
        )
    predictor = served.predictor
    check_budget(predictor, len(inputs), settings.max_predict_work_bytes, row)
    shape = predictor.input_shape
    if len(inputs) * math.prod(shape) <= INLINE_CHECK_NUMBERS:
        samples = check_inputs(inputs, shape, max_samples)
    else:  # a large request is checked in a thread (one more hop), not on the event loop
        samples = await anyio.to_thread.run_sync(check_inputs, inputs, shape, max_samples)
    gone = threading.Event()
    watcher = None
    if client_gone is not None:
        watcher = asyncio.get_running_loop().create_task(_watch(client_gone, gone))
    try:
        result = await served.batcher.submit(samples, gone)
    finally:
        if watcher is not None:
            watcher.cancel()
    out: dict[str, Any] = {
        "model_name": row.model_name,
        "version": row.version,
        "predictions": result.predictions,
    }
    if result.probabilities is not None:
        out["probabilities"] = result.probabilities
        out["classes"] = predictor.card.classes
    return out


async def _watch(client_gone: Callable[[], Awaitable[bool]], gone: threading.Event) -> None:
    """Set `gone` once the client left (asked every DISCONNECT_POLL_S, first after one)."""
    while True:
        await asyncio.sleep(DISCONNECT_POLL_S)
        if await client_gone():
            gone.set()
            return


def check_budget(
    predictor: Predictor | OnnxPredictor, n_samples: int, budget: int, row: ModelVersion
) -> None:
    need = n_samples * predictor.bytes_per_sample
    if need > budget:
        fits = max(1, budget // predictor.bytes_per_sample)
        raise InputError(
            f"{n_samples} samples would take about {need / 1024**2:.0f} MiB of activations on "
            f"model '{row.model_name}' version {row.version} "
            f"({predictor.bytes_per_sample / 1024**2:.2f} MiB per sample), over the budget of "
            f"{budget / 1024**2:.0f} MiB (TRAINSERVE_MAX_PREDICT_WORK_BYTES); send at most "
            f"{fits} samples per request"
        )


def _finite_or_none(values: Any) -> Any:
    """JSON has no NaN or infinity: a diverged model's non-finite outputs become null."""
    if isinstance(values, list):
        return [_finite_or_none(v) for v in values]
    if isinstance(values, float) and not math.isfinite(values):
        return None
    return values
