"""The loaded model versions of an API process: an LRU bounded by their number and weight bytes.

A per-key lock makes concurrent first requests for one version load it once. The key holds the
weights' sha256, so a version number given again to other weights (a model deleted and trained
anew) is never answered by the old ones.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from app.core import metrics
from app.core.db import ModelVersion

log = logging.getLogger(__name__)

Key = tuple[str, int, str]  # model name, version, sha256 of its weights


def cache_key(row: ModelVersion) -> Key:
    return (row.model_name, row.version, row.sha256)


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

    def peek(self, key: Key) -> Any:
        """The cached value for `key` or None, never loading (cheap: for the event loop)."""
        return self._lookup(key)

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
            metrics.model_loaded(key[0], total)
            while len(self._entries) > 1 and (
                len(self._entries) > self.max_models or total > self.max_bytes
            ):
                evicted, (_, evicted_size) = self._entries.popitem(last=False)
                total -= evicted_size
                metrics.model_evicted(evicted[0], total)
                log.info("model cache: evicted %s version %d", *evicted[:2])

    def discard(self, name: str, versions: Iterable[int] | None = None) -> None:
        """Drop the loaded versions of model `name` (all of them when `versions` is None)."""
        wanted = None if versions is None else set(versions)
        with self._lock:
            for key in [k for k in self._entries if k[0] == name]:
                if wanted is None or key[1] in wanted:
                    del self._entries[key]
                    metrics.model_evicted(name, sum(size for _, size in self._entries.values()))
