"""ONNX and torch.export exports: self-contained, and answering as the Predictor does."""

import io
import threading

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from torch import nn

from models.export import (
    ExportError,
    ServingModule,
    sample_inputs,
    serving_module,
    to_onnx,
    to_pt2,
)
from models.predictor import Predictor
from models.preprocessing import Standardizer
from models.weights_file import ModelCard, deserialize_model, serialize_model

# (architecture, params, input shape, outputs, task, loss)
CE = "cross_entropy"
CASES = [
    ("house_prices_mlp", {"hidden_size": 13}, (13,), 1, "regression", "mse"),
    ("mlp", {"hidden_size": 16, "hidden_layers": 2, "dropout": 0.3}, (5,), 2, "regression", "l1"),
    ("mlp", {"hidden_size": 16}, (6,), 3, "classification", "cross_entropy"),
    ("mlp", {"hidden_size": 16}, (6,), 4, "classification", "bce_with_logits"),
    ("mnist_convnet", {"dropout": 0.2}, (1, 28, 28), 10, "classification", "cross_entropy"),
    ("mnist_convnet", {}, (1, 28, 28), 1, "regression", "mse"),
    ("cnn", {"channels": [4, 8], "hidden_size": 9}, (3, 9, 9), 5, "classification", CE),
    ("cnn", {"channels": [4], "hidden_size": 8, "dropout": 0.1}, (2, 8, 8), 1, "regression", "mse"),
    ("resnet18", {}, (3, 16, 16), 4, "classification", "cross_entropy"),
]


def _ids(case):
    return f"{case[0]}-{case[4]}-{case[5]}"


def _trained_like(arch, params, shape, k, task, loss):
    """A module with random weights and batch-norm statistics, as the stored bytes give it."""
    generator = torch.Generator().manual_seed(len(shape) * 31 + k)
    X = torch.randn(40, *shape, generator=generator) * 4.0 + 7.0
    y = torch.randn(40, k, generator=generator) * 12.0 + 30.0
    card = ModelCard(
        architecture=arch,
        architecture_params=params,
        input_shape=list(shape),
        output_size=k,
        task=task,
        loss=loss,
        dataset="synthetic",
        input_stats=Standardizer().fit(X).to_dict(),
        target_stats=Standardizer().fit(y).to_dict() if task == "regression" else None,
    )
    torch.manual_seed(k)
    module = card.build_module()
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):  # eval must use these, not the batch's statistics
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    model, card = deserialize_model(serialize_model(module, card))
    return model, card, X


def _expected(model, card, x: np.ndarray) -> np.ndarray:
    answer = Predictor(model, card).predict(x)
    if card.task == "classification":
        return np.asarray(answer.probabilities, dtype=np.float32)
    return np.asarray(answer.predictions, dtype=np.float32).reshape(len(x), -1)


def _close(got: np.ndarray, expected: np.ndarray) -> None:
    assert got.shape == expected.shape
    assert np.all(np.abs(got - expected) <= 1e-5 * np.maximum(1.0, np.abs(expected)))


@pytest.fixture(scope="module", params=CASES, ids=_ids)
def exported(request):
    model, card, X = _trained_like(*request.param)
    return model, card, X, to_onnx(model, card), to_pt2(model, card)


@pytest.mark.parametrize("batch", [1, 7])
def test_onnx_answers_as_the_predictor(exported, batch):
    model, card, X, onnx_bytes, _ = exported
    x = X[:batch].numpy()
    session = onnxruntime.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x})
    _close(got, _expected(model, card, x))


@pytest.mark.parametrize("batch", [1, 7])
def test_pt2_answers_as_the_predictor(exported, batch):
    model, card, X, _, pt2_bytes = exported
    x = X[:batch].numpy()
    program = torch.export.load(io.BytesIO(pt2_bytes)).module()
    with torch.inference_mode():
        got = program(torch.from_numpy(x)).numpy()
    _close(got, _expected(model, card, x))


def test_onnx_batch_dimension_is_dynamic(exported):
    _, card, _, onnx_bytes, _ = exported
    graph = onnx.load_from_string(onnx_bytes).graph
    (inp,) = graph.input
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param and not dims[0].dim_value  # a symbol, not a number
    assert [d.dim_value for d in dims[1:]] == card.input_shape
    assert len(graph.output) == 1


def test_standardisation_lives_in_the_graph(exported):
    """The exports hold the statistics themselves: no other input than the raw samples."""
    _, card, _, onnx_bytes, pt2_bytes = exported
    assert len(onnx.load_from_string(onnx_bytes).graph.input) == 1
    program = torch.export.load(io.BytesIO(pt2_bytes))
    buffers = dict(program.named_buffers())
    mean = torch.tensor(card.input_stats["mean"]).reshape(card.input_stats["shape"])
    assert torch.equal(buffers["input_mean"], mean)


def test_serving_module_is_in_eval_mode_and_on_cpu():
    model, card, _ = _trained_like(*CASES[4])
    module = serving_module(model.train(), card)
    assert isinstance(module, ServingModule)
    assert not module.training and not module.model.training
    assert module.input_mean.device.type == "cpu"


def test_classification_rows_are_probabilities():
    model, card, X = _trained_like(*CASES[3])  # bce_with_logits: normalised sigmoids
    with torch.inference_mode():
        probs = serving_module(model, card)(X[:5])
    assert probs.shape == (5, 4)
    assert torch.allclose(probs.sum(dim=1), torch.ones(5), atol=1e-6)


class _Drifting(nn.Module):
    """A module whose exported graph differs from eager: a Python-side counter changes the
    eager output on every call, so the check at export must catch it."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 1)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.fc(x) + float(self.calls)


def test_export_that_disagrees_with_eager_is_refused():
    card = ModelCard(
        architecture="mlp",
        architecture_params={},
        input_shape=[3],
        output_size=1,
        task="regression",
        loss="mse",
        dataset="synthetic",
        input_stats=Standardizer().fit(torch.randn(10, 3)).to_dict(),
    )
    with pytest.raises(ExportError, match="differs from the eager module"):
        to_onnx(_Drifting(), card)


def test_exports_trace_a_copy_so_the_served_module_keeps_answering():
    """Tracing swaps parameters for fake tensors while it runs; the module a predictor holds
    must never see that (it answers requests in other threads during an export)."""
    model, card, _ = _trained_like(*CASES[0])
    module = serving_module(model, card)
    assert module.model is not model
    assert all(a is not b for a, b in zip(module.parameters(), model.parameters(), strict=False))
    x = sample_inputs(card, 3)
    with torch.inference_mode():
        before = model(x)
    answers, failures, done = [], [], threading.Event()

    def predict_meanwhile():
        while not done.is_set():
            try:
                with torch.inference_mode():
                    answers.append(model(x))
            except Exception as exc:  # what a prediction during an export used to hit
                failures.append(exc)

    thread = threading.Thread(target=predict_meanwhile)
    thread.start()
    try:
        to_pt2(model, card)
    finally:
        done.set()
        thread.join()
    assert not failures and answers
    assert all(torch.equal(a, before) for a in answers)
