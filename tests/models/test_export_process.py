"""Exports made in a child process (models/export_process.py): the same exports as in-process,
clear errors when the child fails or runs too long, nothing left behind."""

from __future__ import annotations

import dataclasses
import io
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import onnxruntime
import pytest
import torch

import models
from models.export import ExportError
from models.export_process import _child_env, export_in_child
from models.weights_file import serialize_model
from tests.models.test_export import CASES, _close, _expected, _trained_like


@pytest.fixture(autouse=True)
def _own_tempdir(tmp_path, monkeypatch):
    """The exports' temporary folders go under this test's tmp_path, to be counted."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    yield
    assert list(folder.iterdir()) == []  # every temporary folder was removed


def _weights(case) -> tuple[bytes, torch.nn.Module, object, torch.Tensor]:
    model, card, X = _trained_like(*case)
    return serialize_model(model, card), model, card, X


def test_onnx_made_by_the_child_runs_in_onnxruntime_as_the_predictor():
    data, model, card, X = _weights(CASES[0])  # house_prices_mlp, regression
    onnx_bytes = export_in_child(data, "onnx", timeout_s=120)
    session = onnxruntime.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    for batch in (1, 7):
        x = X[:batch].numpy()
        (got,) = session.run(["output"], {"input": x})
        _close(got, _expected(model, card, x))


def test_pt2_made_by_the_child_loads_and_answers_as_the_predictor():
    data, model, card, X = _weights(CASES[4])  # mnist_convnet, classification
    pt2_bytes = export_in_child(data, "pt2", timeout_s=120)
    program = torch.export.load(io.BytesIO(pt2_bytes)).module()
    x = X[:5].numpy()
    with torch.inference_mode():
        got = program(torch.from_numpy(x)).numpy()
    _close(got, _expected(model, card, x))


def test_a_corrupt_weights_file_gives_an_export_error_naming_the_cause():
    data, *_ = _weights(CASES[0])
    with pytest.raises(ExportError, match="exit 1.*not a safetensors file: bad header length"):
        export_in_child(data[:40], "onnx", timeout_s=120)


def test_weights_that_do_not_fit_their_architecture_are_named_as_such():
    model, card, _ = _trained_like(*CASES[0])  # hidden_size 13; the card says 12
    data = serialize_model(
        model, dataclasses.replace(card, architecture_params={"hidden_size": 12})
    )
    with pytest.raises(ExportError, match="do not match architecture 'house_prices_mlp'"):
        export_in_child(data, "pt2", timeout_s=120)


def test_a_child_that_runs_too_long_is_killed():
    data, *_ = _weights(CASES[0])
    with pytest.raises(ExportError, match=r"longer than 0.5 s; its process \(pid (\d+)\)") as info:
        export_in_child(data, "onnx", timeout_s=0.5)  # it is still importing torch by then
    pid = int(re.search(r"pid (\d+)", str(info.value)).group(1))
    with pytest.raises(ProcessLookupError):  # killed and reaped: no such process any more
        os.kill(pid, 0)


_EXIT_WHILE_EXPORTING = """
import sys, threading, time
from pathlib import Path
from models.export_process import export_in_child
data = Path(sys.argv[1]).read_bytes()
threading.Thread(target=export_in_child, args=(data, "onnx"), daemon=True).start()
folder = Path(sys.argv[2])
while not any(folder.glob("trainserve-export-*/child.log")):  # the child is started
    time.sleep(0.05)
print("exporting", flush=True)
"""  # then the main thread ends: the interpreter exits, the daemon thread is stopped


def _processes_naming(text: str) -> list[int]:
    """Pids of the processes whose command line holds `text` (Linux /proc)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as handle:
                    if text.encode() in handle.read():
                        pids.append(int(entry))
            except OSError:  # gone meanwhile
                continue
    return pids


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_parent_that_exits_mid_export_kills_its_child_and_removes_its_folder(tmp_path):
    """A server stopped while an export runs in a daemon thread: at exit the child is killed
    and the temporary folder removed (the thread itself never gets to its `finally`)."""
    data, *_ = _weights(CASES[0])
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(data)
    folder = Path(tempfile.gettempdir())  # this test's own (the fixture above)
    parent = subprocess.run(
        [sys.executable, "-c", _EXIT_WHILE_EXPORTING, str(weights), str(folder)],
        env=os.environ | {"TMPDIR": str(folder)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert parent.returncode == 0 and parent.stdout == "exporting\n", parent.stderr
    assert list(folder.iterdir()) == []
    assert _processes_naming(str(folder)) == []  # no child left exporting


def test_an_unknown_format_is_refused_before_any_process():
    with pytest.raises(ValueError, match="unknown export format"):
        export_in_child(b"", "torchscript")


def test_the_child_imports_this_models_package_without_pythonpath(monkeypatch):
    """Whatever PYTHONPATH the parent had (none here), the child finds the `models` the parent
    runs (installed editable or not), through the parent's sys.path."""
    monkeypatch.delenv("PYTHONPATH", raising=False)
    env = _child_env(1)
    found = subprocess.run(
        [
            sys.executable,
            "-c",
            "import models, torch; print(models.__file__, torch.get_num_threads())",
        ],
        env=env,
        cwd=tempfile.gettempdir(),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout.split()
    assert found == [models.__file__, "1"]
