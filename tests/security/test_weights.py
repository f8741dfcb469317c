"""Stored weights are never unpickled (torch.load CVE-2025-32434, ShellTorch): a pickle put in the
weight store in place of, or next to, a version's safetensors file is refused with a 503 naming
the version, even when the database's sha256 was forged to match it. The pickles here would
create a file if anything unpickled them; `pickle` and `torch.load` fail the test if called.

(A flipped byte in a real safetensors file: tests/app/test_models.py.)
"""

from __future__ import annotations

import hashlib
import io
import pickle
import struct

import pytest
import torch
from fastapi.testclient import TestClient
from sqlalchemy import update

from app.core.artifacts import weights_key
from app.core.db import ModelVersion, make_engine
from app.core.services import Services
from tests.app.api.test_models import BOSTON_ROW
from tests.app.conftest import publish

NAME = "house-prices"


class Planted:
    """Unpickling this creates `path` (harmless stand-in for code execution)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture
def house(services: Services, house_model) -> str:
    publish(services, NAME, house_model)
    return NAME


@pytest.fixture
def marker(tmp_path):
    return tmp_path / "unpickled-a-planted-file"


@pytest.fixture
def no_unpickling(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("stored weights were unpickled")

    for module, name in [(pickle, "loads"), (pickle, "load"), (torch, "load")]:
        monkeypatch.setattr(module, name, refuse)


def torch_pickle(marker, *, zipfile: bool) -> bytes:
    buffer = io.BytesIO()
    payload = {"state_dict": {"w": torch.zeros(2)}, "evil": Planted(str(marker))}
    torch.save(payload, buffer, _use_new_zipfile_serialization=zipfile)
    return buffer.getvalue()


def forge_sha256(services: Services, data: bytes) -> None:
    """Set the version's recorded sha256 to that of `data` (as an attacker with the database)."""
    engine = make_engine(services.settings.effective_database_url)
    with engine.begin() as connection:
        connection.execute(
            update(ModelVersion)
            .where(ModelVersion.model_name == NAME, ModelVersion.version == 1)
            .values(sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data))
        )
    engine.dispose()


def fake_safetensors(header: bytes, body: bytes) -> bytes:
    return struct.pack("<Q", len(header)) + header + body


def assert_refused(client: TestClient, services: Services, *, reason: str) -> None:
    predict = client.post(f"/v1/models/{NAME}/predict", json={"inputs": [BOSTON_ROW]})
    assert predict.status_code == 503, predict.text
    detail = predict.json()["detail"]
    assert f"model '{NAME}' version 1" in detail and reason in detail, detail
    download = client.get(f"/v1/models/{NAME}/versions/1/weights")
    assert download.status_code == 503 and "version 1" in download.json()["detail"]
    assert services.store.get_version(NAME, 1).corrupt
    listed = client.get(f"/v1/models/{NAME}").json()["versions"][0]
    assert listed["corrupt"] is True


@pytest.mark.parametrize("zipfile", [True, False], ids=["zip", "legacy"])
def test_the_planted_pickle_would_run(marker, zipfile):
    """The harness: unpickling the planted file (as torch.load without weights_only does) creates
    the marker, so its absence in the other tests means nothing unpickled it."""
    data = torch_pickle(marker, zipfile=zipfile)
    with pytest.raises(pickle.UnpicklingError):  # what weights_only=True says about it
        torch.load(io.BytesIO(data), weights_only=True)
    assert not marker.exists()
    torch.load(io.BytesIO(data), weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("zipfile", [True, False], ids=["zip", "legacy"])
def test_a_pickle_in_place_of_the_weights_is_refused(
    client, services, house, marker, zipfile, no_unpickling
):
    path = services.artifacts.path(weights_key(NAME, 1))
    path.write_bytes(torch_pickle(marker, zipfile=zipfile))
    assert_refused(client, services, reason="sha256 mismatch")
    assert not marker.exists()


@pytest.mark.parametrize(
    "forged",
    [
        "zip-pickle",
        "legacy-pickle",
        "pickle-behind-a-header",
        "other-safetensors",
    ],
)
def test_a_pickle_with_a_forged_sha256_is_refused_unread(
    client, services, house, marker, forged, no_unpickling
):
    data = {
        "zip-pickle": lambda: torch_pickle(marker, zipfile=True),
        "legacy-pickle": lambda: torch_pickle(marker, zipfile=False),
        # A valid length and JSON that is no safetensors header, then a pickle.
        "pickle-behind-a-header": lambda: fake_safetensors(
            b'{"w": 1}', pickle.dumps(Planted(str(marker)))
        ),
        # A safetensors header that is not a trainserve file.
        "other-safetensors": lambda: fake_safetensors(
            b'{"__metadata__": {"format": "pt"}}', pickle.dumps(Planted(str(marker)))
        ),
    }[forged]()
    services.artifacts.path(weights_key(NAME, 1)).write_bytes(data)
    forge_sha256(services, data)
    assert_refused(client, services, reason="not a trainserve safetensors file")
    assert not marker.exists()


def test_a_pt_file_next_to_the_weights_is_never_read(
    client, services, house, marker, no_unpickling
):
    directory = services.artifacts.path(weights_key(NAME, 1)).parent
    for name in ("v1.pt", "v1.pth", "v1.bin", "v2.pt", "model.pkl"):
        (directory / name).write_bytes(torch_pickle(marker, zipfile=True))
    predict = client.post(f"/v1/models/{NAME}/predict", json={"inputs": [BOSTON_ROW]})
    assert predict.status_code == 200, predict.text
    download = client.get(f"/v1/models/{NAME}/versions/1/weights")
    assert download.status_code == 200
    assert download.content == services.artifacts.get(weights_key(NAME, 1))
    assert download.content[8:].lstrip().startswith(b"{")  # safetensors, not the pickle
    assert client.get(f"/v1/models/{NAME}/versions/2/weights").status_code == 404
    assert not marker.exists()


def test_a_download_checks_the_header_of_the_file_it_streams(
    client, services, house, marker, no_unpickling
):
    """Downloaded before anything loaded it: the streamed file's own checks refuse it."""
    data = fake_safetensors(b'{"w": 1}', pickle.dumps(Planted(str(marker))))
    services.artifacts.path(weights_key(NAME, 1)).write_bytes(data)
    forge_sha256(services, data)
    download = client.get(f"/v1/models/{NAME}/versions/1/weights")
    assert download.status_code == 503, download.text
    detail = download.json()["detail"]
    assert f"model '{NAME}' version 1" in detail and "not a trainserve safetensors" in detail
    assert services.store.get_version(NAME, 1).corrupt
    assert not marker.exists()
