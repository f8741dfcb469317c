"""A worker's bounded local cache of objects it downloaded from the artifact store, by sha256.

Objects whose sha256 the job store knows (uploaded datasets) are kept as `{sha256}` files in
one folder, so a second job on the same dataset reads it from disk instead of the network.
A hit is checked against its name before it is used (a damaged file is dropped and fetched
again); the least recently used files go once the total passes `max_bytes`.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from models.files import TEMP_SUFFIX, sha256_hex, write_atomically

log = logging.getLogger(__name__)


class ArtifactCache:
    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, sha256: str, fetch: Callable[[], bytes | None]) -> bytes | None:
        """The bytes whose sha256 is `sha256`: from the cache, else `fetch()` (kept only when
        they match, so the caller still sees, and refuses, a mismatch)."""
        path = self.directory / sha256
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            data = None
        if data is not None:
            if sha256_hex(data) == sha256:
                self.hits += 1
                os.utime(path)  # recently used
                return data
            log.warning("artifact cache: %s is damaged; fetching it again", sha256)
            path.unlink(missing_ok=True)
        self.misses += 1
        data = fetch()
        if data is not None and sha256_hex(data) == sha256 and len(data) <= self.max_bytes:
            with self._lock:
                write_atomically(path, data)
                self._evict()
        return data

    def _evict(self) -> None:
        files = []
        for path in self.directory.iterdir():
            if path.name.endswith(TEMP_SUFFIX):
                continue
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            files.append((stat.st_mtime, stat.st_size, path))
        total = sum(size for _, size, _ in files)
        for _, size, path in sorted(files):
            if total <= self.max_bytes:
                break
            path.unlink(missing_ok=True)
            total -= size
            log.info("artifact cache: evicted %s (%d bytes)", path.name, size)
