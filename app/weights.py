"""Where finished weights live: one safetensors file per model version.

`WeightStore` is the interface the service uses; `LocalWeightStore` keeps files in a directory
(shared by API and workers). Paths are built by the store from validated slugs and integer
versions only, and checked to stay inside the root.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Protocol

from app.names import check_slug


class WeightStore(Protocol):
    def put(self, model_name: str, version: int, data: bytes) -> tuple[str, int]:
        """Store the bytes; return (sha256 hex, size)."""

    def get(self, model_name: str, version: int) -> bytes:
        """The stored bytes; FileNotFoundError when absent."""

    def delete(self, model_name: str, version: int) -> None: ...


class LocalWeightStore:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def path(self, model_name: str, version: int) -> Path:
        check_slug(model_name, "model name")
        if not isinstance(version, int) or version < 1:
            raise ValueError(f"version must be a positive integer, got {version!r}")
        path = (self.root / model_name / f"v{version}.safetensors").resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(f"model name {model_name!r} leaves the weight store")
        return path

    def put(self, model_name: str, version: int, data: bytes) -> tuple[str, int]:
        path = self.path(model_name, version)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, data)
        return hashlib.sha256(data).hexdigest(), len(data)

    def get(self, model_name: str, version: int) -> bytes:
        return self.path(model_name, version).read_bytes()

    def delete(self, model_name: str, version: int) -> None:
        self.path(model_name, version).unlink(missing_ok=True)


def write_atomically(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, fsync, then rename over it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
