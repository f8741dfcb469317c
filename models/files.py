"""Files written so that a crash never leaves half of one: the one atomic write, and sha256."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO

TEMP_SUFFIX = ".tmp"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_of_file(handle: BinaryIO) -> str:
    """The sha256 of an open binary file from its position to its end, read in chunks (so a
    large file is never held in memory)."""
    return hashlib.file_digest(handle, "sha256").hexdigest()


def write_atomically(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to a temporary file beside `path`, fsync it, rename it over `path`, and fsync
    the directory, so that after a crash `path` holds the old bytes or the new ones, never half.
    Temporary files are named `.<name>.<random>.tmp` (start-up sweeps may remove them)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable (POSIX)
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return path
