"""A model version's stored weights, read back for serving: checked before anything uses them.

Predictions (app/api/inference.py), downloads (app/api/routes/registry.py) and exports
(app/api/exports.py) read a version's safetensors file through these: refused when the row is
marked corrupt; checked against the row's sha256 and to be a trainserve safetensors file (its
header only: nothing is unpickled, ever); a file that fails marks the version corrupt.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, BinaryIO

from app.core.artifacts import ArtifactMissing, weights_key
from app.core.db import ModelVersion
from app.core.errors import Unavailable
from app.core.services import Services
from models.errors import CheckpointError
from models.files import sha256_hex, sha256_of_file
from models.weights_file import read_card, read_card_from

log = logging.getLogger(__name__)


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


def version_name(row: ModelVersion) -> str:
    """How messages name a version: model 'name' version N."""
    return f"model '{row.model_name}' version {row.version}"


def _refuse_if_marked(row: ModelVersion) -> None:
    if row.corrupt:
        raise Unavailable(
            f"{version_name(row)} is marked corrupt; retrain it or use another version"
        )


def _missing(row: ModelVersion) -> Unavailable:
    return Unavailable(f"the weights of {version_name(row)} are missing from the artifact store")


def _check_weights(
    services: Services, row: ModelVersion, digest: str, read_header: Callable[[], Any]
) -> None:
    """Refuse (and mark corrupt) weights whose sha256 is not the row's, or whose header
    (`read_header()`) is not a trainserve safetensors header."""
    what = version_name(row)
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
