"""Serving predictions: a bounded cache of loaded models, and predict off the event loop.

Like TorchServe's handler: a model version is loaded once per process (bytes -> sha256 check
against its row -> module in eval mode), then each call is validate -> inference -> response.
The cache is an LRU bounded by the number of models and their weight bytes; a per-key lock
makes concurrent first requests for one version load it once.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, BinaryIO

import anyio
import anyio.to_thread

from app.core.artifacts import ArtifactMissing, weights_key
from app.core.db import ModelVersion
from app.core.errors import Unavailable
from app.core.services import Services
from models.errors import CheckpointError
from models.files import sha256_hex, sha256_of_file
from models.predictor import Abandoned, InputError, Predictor, check_inputs
from models.weights_file import read_card, read_card_from

log = logging.getLogger(__name__)

DISCONNECT_POLL_S = 0.05  # how often a running prediction asks whether its client is there

Key = tuple[str, int]


class ModelCache:
    """Thread-safe LRU of loaded predictors, bounded by count and by weight bytes."""

    def __init__(self, max_models: int, max_bytes: int) -> None:
        self.max_models = max_models
        self.max_bytes = max_bytes
        self._entries: OrderedDict[Key, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()
        self._key_locks: dict[Key, threading.Lock] = {}
        self.loads = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def total_bytes(self) -> int:
        with self._lock:
            return sum(size for _, size in self._entries.values())

    def get(self, key: Key, load: Callable[[], tuple[Any, int]]) -> Any:
        """The cached value for `key`, else `load()` -> (value, size) once, then cached."""
        hit = self._lookup(key)
        if hit is not None:
            return hit
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            hit = self._lookup(key)  # loaded by another thread while we waited
            if hit is not None:
                return hit
            value, size = load()
            self.loads += 1
            self._insert(key, value, size)
        with self._lock:
            self._key_locks.pop(key, None)
        return value

    def _lookup(self, key: Key) -> Any:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            return entry[0]

    def _insert(self, key: Key, value: Any, size: int) -> None:
        with self._lock:
            self._entries[key] = (value, size)
            total = sum(s for _, s in self._entries.values())
            while len(self._entries) > 1 and (
                len(self._entries) > self.max_models or total > self.max_bytes
            ):
                evicted, (_, evicted_size) = self._entries.popitem(last=False)
                total -= evicted_size
                log.info("model cache: evicted %s version %d", *evicted)

    def discard(self, key: Key) -> None:
        with self._lock:
            self._entries.pop(key, None)


def load_predictor(services: Services, row: ModelVersion) -> tuple[Predictor, int]:
    """Read a version's weights, verify them against the row, and build the predictor."""
    what = f"model '{row.model_name}' version {row.version}"
    data = verified_weights(services, row)
    try:
        predictor = Predictor.from_bytes(data)
    except CheckpointError as exc:
        raise Unavailable(f"the weights of {what} cannot be loaded: {exc}") from None
    log.info("loaded %s (%d bytes)", what, len(data))
    return predictor, len(data)


def verified_weights(services: Services, row: ModelVersion) -> bytes:
    """The stored bytes of a version, checked against its sha256 and checked to be a trainserve
    safetensors file (its header only: nothing is unpickled, ever)."""
    _refuse_if_marked(row)
    try:
        data = services.artifacts.get(weights_key(row.model_name, row.version))
    except ArtifactMissing:
        raise _missing(row) from None
    _check_weights(services, row, sha256_hex(data), lambda: read_card(data))
    return data


def open_verified_weights(services: Services, row: ModelVersion) -> BinaryIO:
    """The stored file of a version, open at its start, after the checks of `verified_weights`
    made by reading through it in chunks: for downloads, which stream it from this handle (so
    the bytes sent are the bytes checked, even if the file is replaced meanwhile)."""
    _refuse_if_marked(row)
    try:
        handle = services.artifacts.open(weights_key(row.model_name, row.version))
    except ArtifactMissing:
        raise _missing(row) from None
    try:
        digest = sha256_of_file(handle)
        handle.seek(0)
        _check_weights(services, row, digest, lambda: read_card_from(handle))
        handle.seek(0)
    except BaseException:
        handle.close()
        raise
    return handle


def _what(row: ModelVersion) -> str:
    return f"model '{row.model_name}' version {row.version}"


def _refuse_if_marked(row: ModelVersion) -> None:
    if row.corrupt:
        raise Unavailable(f"{_what(row)} is marked corrupt; retrain it or use another version")


def _missing(row: ModelVersion) -> Unavailable:
    return Unavailable(f"the weights of {_what(row)} are missing from the artifact store")


def _check_weights(
    services: Services, row: ModelVersion, digest: str, read_header: Callable[[], Any]
) -> None:
    """Refuse (and mark corrupt) weights whose sha256 is not the row's, or whose header
    (`read_header()`) is not a trainserve safetensors header."""
    what = _what(row)
    if digest != row.sha256:
        log.error("%s: weights fail their sha256 check; marking the version corrupt", what)
        services.store.mark_corrupt(row.model_name, row.version)
        raise Unavailable(f"the weights of {what} are corrupt (sha256 mismatch); retrain it")
    try:
        read_header()
    except CheckpointError as exc:
        log.error("%s: stored weights are not safetensors (%s); marking it corrupt", what, exc)
        services.store.mark_corrupt(row.model_name, row.version)
        raise Unavailable(
            f"the weights of {what} are not a trainserve safetensors file ({exc}); they are "
            "refused, never unpickled: retrain it"
        ) from None


async def predict(
    services: Services,
    cache: ModelCache,
    limiter: anyio.CapacityLimiter,
    row: ModelVersion,
    inputs: list[Any],
    client_gone: Callable[[], Awaitable[bool]] | None = None,
) -> dict[str, Any]:
    """Validate `inputs`, run the model in a worker thread (bounded by `limiter`), answer.

    A request is budgeted by samples x the model's activation bytes per sample (known when the
    model is loaded), runs in chunks that bound one forward's memory, and stops between chunks
    once `client_gone()` says its client left (also while it waits for the limiter)."""
    settings = services.settings
    max_samples = settings.max_predict_samples
    if len(inputs) > max_samples:
        raise InputError(
            f"too many samples: {len(inputs)} > the limit of {max_samples} "
            "(TRAINSERVE_MAX_PREDICT_SAMPLES); send them in several requests"
        )
    key = (row.model_name, row.version)
    predictor = await anyio.to_thread.run_sync(
        cache.get, key, lambda: load_predictor(services, row)
    )

    check_budget(predictor, len(inputs), settings.max_predict_work_bytes, row)
    gone = threading.Event()

    def run() -> Any:
        if gone.is_set():
            raise Abandoned("the client left while the request waited")
        samples = check_inputs(inputs, predictor.input_shape, max_samples)
        chunk = predictor.chunk_size(settings.predict_chunk_bytes)
        return predictor.predict(samples, chunk=chunk, stop=gone.is_set)

    result = await _unless_abandoned(run, limiter, client_gone, gone)
    out: dict[str, Any] = {
        "model_name": row.model_name,
        "version": row.version,
        "predictions": _finite_or_none(result.predictions),
    }
    if result.probabilities is not None:
        out["probabilities"] = _finite_or_none(result.probabilities)
        out["classes"] = predictor.card.classes
    return out


def check_budget(predictor: Predictor, n_samples: int, budget: int, row: ModelVersion) -> None:
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


async def _unless_abandoned(
    run: Callable[[], Any],
    limiter: anyio.CapacityLimiter,
    client_gone: Callable[[], Awaitable[bool]] | None,
    gone: threading.Event,
) -> Any:
    """`run()` in a worker thread while a task watches the client; when the client leaves,
    `gone` is set and `run` stops at its next chunk (a thread cannot be interrupted)."""
    if client_gone is None:
        return await anyio.to_thread.run_sync(run, limiter=limiter)

    async def watch() -> None:
        while not await client_gone():
            await anyio.sleep(DISCONNECT_POLL_S)
        gone.set()

    error: Exception | None = None
    async with anyio.create_task_group() as tasks:  # (it would wrap an error in a group)
        tasks.start_soon(watch)
        try:
            result = await anyio.to_thread.run_sync(run, limiter=limiter)
        except Exception as exc:
            error = exc
        tasks.cancel_scope.cancel()
    if error is not None:
        raise error
    return result


def _finite_or_none(values: Any) -> Any:
    """JSON has no NaN or infinity: a diverged model's non-finite outputs become null."""
    if isinstance(values, list):
        return [_finite_or_none(v) for v in values]
    if isinstance(values, float) and not math.isfinite(values):
        return None
    return values
