"""The artifact store: model weights, uploaded datasets and training checkpoints, by key.

`ArtifactStore` is the interface the service uses (put, get, open, exists, delete, list by prefix;
a put is atomic: readers see the old object or the new one, never half). `LocalArtifactStore`
keeps objects as files under the data dir. Keys are built here only, from validated slugs,
integer versions, job ids and sha256 digests, and checked to stay inside the root:

    weights/{model}/v{version}.safetensors     the published weights of one model version
    weights/{model}/v{version}.{onnx,pt2}      its exports, made on first download (a cache)
    datasets/{sha256}.npz                      an uploaded dataset, by the hash of its content
    checkpoints/{job_id}/epoch-{NNNNNN}.ckpt   a running job's training checkpoints

`S3ArtifactStore` (app/core/s3.py) keeps the same keys in an S3-compatible bucket, for workers
on other hosts; `open_artifact_store` (app/core/services.py) picks one from
TRAINSERVE_ARTIFACTS_URL.
"""

from __future__ import annotations

import errno
import re
from pathlib import Path
from typing import BinaryIO, Protocol

from app.core.errors import NoSpace, Unavailable
from app.core.names import check_slug
from models.files import sha256_hex, write_atomically

SHA256 = re.compile(r"[0-9a-f]{64}")
KEY_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class ArtifactMissing(FileNotFoundError):
    """No object under the key."""


class StoreUnavailable(Unavailable):
    """The artifact store does not answer (after retries), or refuses our credentials. Its
    message names the store (never a credential); a caller may retry later."""


class ArtifactStore(Protocol):
    name: str  # what the store is, for messages: a path or s3://bucket/prefix, no credentials
    retry_seconds: float  # how long transient errors are retried before StoreUnavailable

    def put(self, key: str, data: bytes) -> str:
        """Store `data` atomically under `key`; returns its sha256 (hex)."""

    def get(self, key: str) -> bytes:
        """The object's bytes; ArtifactMissing when there is none."""

    def open(self, key: str) -> BinaryIO:
        """The object opened for binary reading, seekable (the caller closes it); ArtifactMissing
        when there is none. A put while it is open does not change what it reads."""

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None:
        """Remove the object (nothing happens when it is absent)."""

    def list(self, prefix: str) -> list[str]:
        """Keys that start with `prefix`, sorted."""

    def where(self, key: str) -> str:
        """Where the object of `key` is, for logs: a path or an s3:// URL."""

    def check(self) -> None:
        """Raise StoreUnavailable unless the store answers (readiness)."""


def weights_key(model_name: str, version: int) -> str:
    check_slug(model_name, "model name")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"version must be a positive integer, got {version!r}")
    return f"weights/{model_name}/v{version}.safetensors"


EXPORT_FORMATS = ("onnx", "pt2")
WEIGHTS_FILE = re.compile(r"weights/([A-Za-z0-9][A-Za-z0-9._-]*)/v([0-9]+)\.(safetensors|onnx|pt2)")


def export_key(model_name: str, version: int, fmt: str) -> str:
    """Where the export of a version in `fmt` (onnx, pt2) is cached, next to its weights."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}")
    return weights_key(model_name, version).removesuffix(".safetensors") + f".{fmt}"


def version_keys(model_name: str, version: int) -> list[str]:
    """Every object of one model version: its weights, then its cached exports."""
    return [weights_key(model_name, version)] + [
        export_key(model_name, version, fmt) for fmt in EXPORT_FORMATS
    ]


def parse_version_key(key: str) -> tuple[str, int] | None:
    """(model, version) of a key under weights/, else None."""
    match = WEIGHTS_FILE.fullmatch(key)
    return (match.group(1), int(match.group(2))) if match else None


def dataset_key(sha256: str) -> str:
    if not SHA256.fullmatch(sha256):
        raise ValueError(f"not a sha256 digest: {sha256!r}")
    return f"datasets/{sha256}.npz"


def checkpoint_key(job_id: str, epoch: int) -> str:
    return f"{checkpoints_prefix(job_id)}epoch-{int(epoch):06d}.ckpt"


def checkpoints_prefix(job_id: str) -> str:
    """The keys of one job's checkpoints start with this."""
    return f"checkpoints/{check_key(job_id)}/"


def legacy_dataset_key(name: str) -> str:
    """Where datasets were kept by name before they were kept by content."""
    return f"datasets/{check_slug(name, 'dataset name')}.npz"


def check_key(key: str) -> str:
    """A key is '/'-separated parts of letters, digits, '.', '_' and '-', none starting with a
    dot (so no '..', no hidden temp files); anything else is refused."""
    parts = key.split("/")
    if not key or not all(KEY_PART.fullmatch(part) for part in parts):
        raise ValueError(f"invalid artifact key {key!r}")
    return key


class LocalArtifactStore:
    """Objects as files under `root` (the data dir); puts are atomic renames."""

    retry_seconds = 0.0  # a local disk does not come back by waiting

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.name = str(self.root)

    def where(self, key: str) -> str:
        return str(self.path(key))

    def check(self) -> None:
        if not self.root.is_dir():
            raise StoreUnavailable(f"the artifact store {self.name} is not a directory")

    def path(self, key: str) -> Path:
        path = (self.root / check_key(key)).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(f"artifact key {key!r} leaves the store")
        return path

    def put(self, key: str, data: bytes) -> str:
        try:
            write_atomically(self.path(key), data)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise NoSpace(
                    f"no space left on the artifact store for {key.split('/', 1)[0]}: free "
                    "space or grow the volume"
                ) from None
            raise
        return sha256_hex(data)

    def get(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError:
            raise ArtifactMissing(key) from None

    def open(self, key: str) -> BinaryIO:
        try:
            return self.path(key).open("rb")  # puts rename a new file over: this one stays
        except FileNotFoundError:
            raise ArtifactMissing(key) from None

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def delete(self, key: str) -> None:
        """Remove the file, and folders it leaves empty (below the top-level ones)."""
        path = self.path(key)
        path.unlink(missing_ok=True)
        folder = path.parent
        while folder.parent != self.root and folder != self.root:
            try:
                folder.rmdir()
            except OSError:  # not empty (or gone): stop here
                break
            folder = folder.parent

    def list(self, prefix: str) -> list[str]:
        folder, _, start = prefix.rpartition("/")
        base = self.path(folder) if folder else self.root
        if not base.is_dir():
            return []
        found = []
        for path in base.rglob("*"):
            key = path.relative_to(self.root).as_posix()
            if path.is_file() and key.startswith(prefix) and not path.name.startswith("."):
                found.append(key)
        return sorted(found)
