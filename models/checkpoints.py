"""The training-checkpoint format: everything needed to continue a run where it stopped.

A checkpoint is `Trainer.state_dict()` (tensors, dicts, lists, numbers and strings only) saved
with torch.save, written atomically as `epoch-NNNNNN.ckpt`, and read back with
`torch.load(weights_only=True)`, so nothing in it can run code. (The weights of a finished model
are another format: models/weights_file.py.)
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

import torch

from models.errors import CheckpointError
from models.files import write_atomically

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "trainserve.trainer/1"
_CHECKPOINT_NAME = re.compile(r"epoch-(\d+)\.ckpt")


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """torch.save `state` to `path` atomically (models/files.py)."""
    return write_atomically(path, checkpoint_bytes(state))


def checkpoint_bytes(state: dict[str, Any]) -> bytes:
    """The bytes of a checkpoint of `state` (what `save_checkpoint` writes)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def checkpoint_from_bytes(data: bytes, where: str) -> dict[str, Any]:
    """`load_checkpoint` of bytes read from elsewhere (an object store); `where` names them."""
    return load_checkpoint(io.BytesIO(data), where)


def load_checkpoint(path: str | os.PathLike | BinaryIO, where: str | None = None) -> dict[str, Any]:
    """Read a checkpoint onto the CPU without unpickling objects; CheckpointError if unusable."""
    where = where or str(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, EOFError, RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"cannot read checkpoint {where}: {exc}") from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{where} is not a trainserve trainer checkpoint")
    return state


def checkpoint_paths(directory: str | os.PathLike) -> list[Path]:
    """The checkpoint files in `directory`, oldest epoch first."""
    found = []
    for path in Path(directory).glob("epoch-*.ckpt"):
        match = _CHECKPOINT_NAME.fullmatch(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def load_latest_checkpoint(directory: str | os.PathLike) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint in `directory` that loads, with its state; None if there is none."""
    for path in reversed(checkpoint_paths(directory)):
        try:
            return path, load_checkpoint(path)
        except CheckpointError as exc:
            log.warning("skipping unusable checkpoint: %s", exc)
    return None


def latest_checkpoint(directory: str | os.PathLike) -> Path | None:
    """The path of the newest checkpoint that loads, skipping truncated or corrupt ones."""
    found = load_latest_checkpoint(directory)
    return found[0] if found else None


def load_resume_state(
    source: str | os.PathLike | Mapping[str, Any] | None,
) -> Mapping[str, Any] | None:
    """A trainer state from a loaded dict, a checkpoint file or a checkpoint directory.

    A directory without a usable checkpoint gives None (start afresh); a bad file raises.
    """
    if source is None or isinstance(source, Mapping):
        return source
    if Path(source).is_dir():
        found = load_latest_checkpoint(source)
        if found is None:
            log.info("no usable checkpoint in %s; starting afresh", source)
            return None
        log.info("resuming from %s", found[0])
        return found[1]
    return load_checkpoint(source)
