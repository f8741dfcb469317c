"""The ONNX Runtime predict backend, over real HTTP to uvicorn: its export is made by a child
process (never by torch.export in the API process, where forwards run in other threads), once,
and kept in the artifact store, where downloads and later API processes find it; a stored
export that does not answer as its weights do (stale or tampered) is refused, and eager keeps
answering."""

from __future__ import annotations

import copy
import logging

import httpx
import numpy as np
import pytest
import torch

from app.api.main import create_app
from app.core import exports as core_exports
from app.core.artifacts import export_key
from models.export_process import export_in_child
from models.onnx_predictor import OnnxPredictor
from models.predictor import Predictor
from models.training import TrainingResult
from models.weights_file import serialize_model
from tests.app.api.test_batching import served_of, settings_for, train
from tests.app.conftest import AUTH, publish
from tests.security.server import serve

PATH = "/v1/models/m/predict"
ROWS = np.linspace(-2.0, 3.0, 4 * 13, dtype=np.float32).reshape(4, 13).tolist()


@pytest.fixture(scope="module")
def house() -> TrainingResult:
    return train("house_prices_mlp")


@pytest.fixture
def tripwire(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """torch.export and the ONNX exporter made to fail, and be recorded, in this process (the
    API's); a child process is a new interpreter and exports as usual."""
    calls: list[str] = []

    def trip(name: str):
        def tripped(*args, **kwargs):
            calls.append(name)
            raise AssertionError(f"{name} ran in the API process")

        return tripped

    monkeypatch.setattr(torch.export, "export", trip("torch.export.export"))
    monkeypatch.setattr(torch.onnx, "export", trip("torch.onnx.export"))
    return calls


@pytest.fixture
def children(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The formats of the exports the API asked a child process for (each one still made)."""
    made: list[str] = []
    real = core_exports.export_in_child

    def counted(weights: bytes, fmt: str, **kwargs) -> bytes:
        made.append(fmt)
        return real(weights, fmt, **kwargs)

    monkeypatch.setattr(core_exports, "export_in_child", counted)
    return made


def _predict_until_ready(app, url: str) -> tuple[list[httpx.Response], object]:
    """A prediction (which loads the version; eager answers it), the switch awaited, and one
    more prediction (answered by the backend the switch left)."""
    with httpx.Client(base_url=url, headers=AUTH, timeout=60) as client:
        first = client.post(PATH, json={"inputs": ROWS})
        served = served_of(app, "m")
        assert served.ready.wait(180)
        second = client.post(PATH, json={"inputs": ROWS})
    return [first, second], served


def test_onnx_backend_uses_the_stored_export_made_by_a_child(tmp_path, house, tripwire, children):
    settings = settings_for(tmp_path, predict_backend="onnx")
    app = create_app(settings)
    with serve(app) as url:
        services = app.state.services
        publish(services, "m", house)
        answers, served = _predict_until_ready(app, url)
        with httpx.Client(base_url=url, headers=AUTH, timeout=60) as client:
            download = client.get("/v1/models/m/versions/1/weights?format=onnx")
    assert type(served.predictor) is OnnxPredictor
    assert tripwire == []  # no torch.export, no ONNX exporter in this process
    assert children == ["onnx"]
    stored = services.artifacts.get(export_key("m", 1, "onnx"))
    assert download.status_code == 200 and download.content == stored  # one export for both
    assert [a.status_code for a in answers] == [200, 200]
    eager, onnx = (a.json()["predictions"] for a in answers)
    np.testing.assert_allclose(onnx, eager, rtol=1e-5, atol=1e-5)

    # Another API process (a restart, a second replica) answers from the stored export.
    again = create_app(settings)
    with serve(again) as url:
        answers, served = _predict_until_ready(again, url)
    assert type(served.predictor) is OnnxPredictor
    assert [a.status_code for a in answers] == [200, 200]
    assert children == ["onnx"]  # no second export
    assert services.artifacts.get(export_key("m", 1, "onnx")) == stored


@pytest.fixture(scope="module")
def other_onnx(house: TrainingResult) -> bytes:
    """A valid ONNX export of the same architecture and card, with other weights."""
    model = copy.deepcopy(house.model)
    with torch.no_grad():
        model.fc2.bias.add_(0.5)
    return export_in_child(serialize_model(model, house.card), "onnx", timeout_s=120)


@pytest.mark.parametrize("tampered", ["other_weights", "not_onnx"])
def test_a_stored_export_that_does_not_match_its_weights_is_refused(
    tmp_path, house, other_onnx, tampered, children, caplog
):
    app = create_app(settings_for(tmp_path, predict_backend="onnx"))
    key = export_key("m", 1, "onnx")
    with serve(app) as url:
        services = app.state.services
        publish(services, "m", house)
        services.artifacts.put(key, other_onnx if tampered == "other_weights" else b"not onnx")
        with caplog.at_level(logging.WARNING, logger="app.api.inference"):
            answers, served = _predict_until_ready(app, url)
    assert type(served.predictor) is Predictor  # eager kept
    assert children == []  # the stored export was read (and refused), not made again
    assert "its stored ONNX export is refused" in caplog.text
    reason = "differs from the eager module" if tampered == "other_weights" else "does not open"
    assert reason in caplog.text
    assert not services.artifacts.exists(key)  # removed: the next load or download remakes it
    assert [a.status_code for a in answers] == [200, 200]
    expected = Predictor(house.model, house.card).predict(np.asarray(ROWS, dtype=np.float32))
    assert answers[1].json()["predictions"] == expected.predictions
