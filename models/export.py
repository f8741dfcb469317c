"""Self-contained exports of a trained model: ONNX and torch.export (`.pt2`).

Both wrap the module in a `ServingModule` that takes raw inputs exactly as `predict` does and
gives what it gives, so a user needs nothing of this project to run them:

    raw (B, *input_shape) float32 -> standardise (training statistics, held as buffers)
        -> the trained module -> regression: inverse target standardisation (original units)
                                 classification: class probabilities, (B, n_classes)

The probabilities are computed as models/predictor.py computes them: softmax, or for a model
trained with `bce_with_logits` the sigmoids normalised to sum to 1. Neither format involves
TorchScript or pickle: ONNX is a protobuf, `.pt2` is `torch.export.save`'s archive (a JSON
graph plus raw tensor bytes).

torch.export and the dynamo ONNX exporter change process-wide state while they trace (dynamo's
configuration, fake tensor modes, the exporter's flags, patched builtins): a process that does
anything else meanwhile (the API answers predictions in other threads) runs them in a child
process of its own, models/export_process.py.
"""

from __future__ import annotations

import copy
import functools
import io
import logging
import threading

import numpy as np
import torch
from torch import nn

from models.errors import CheckpointError
from models.preprocessing import Standardizer
from models.weights_file import ModelCard

log = logging.getLogger(__name__)

# torch.export traces with process-wide state (dynamo, fake tensors), so two exports at once
# break each other: one export at a time per process.
_EXPORT_LOCK = threading.Lock()


def _one_at_a_time(export):
    @functools.wraps(export)
    def wrapper(*args, **kwargs):
        with _EXPORT_LOCK:
            return export(*args, **kwargs)

    return wrapper


ONNX_OPSET = 18  # onnxscript's own opset: no download, no version conversion
TOLERANCE = 1e-5  # |export - eager| <= TOLERANCE * max(1, |eager|), checked at export
CHECK_BATCHES = (1, 3)  # two batch sizes, so a batch dimension baked in as a constant shows
_MAX_BATCH = 1 << 20


class ExportError(CheckpointError):
    """An export could not be made, or its outputs do not match the eager module's."""


class ServingModule(nn.Module):
    """Raw inputs `(B, *input_shape)` float32 -> `(B, K)` float32, as the service answers.

    Regression: values in the original units of the targets (K targets). Classification: the
    class probabilities (K classes); the predicted class is their argmax.
    """

    def __init__(self, model: nn.Module, card: ModelCard) -> None:
        super().__init__()
        self.model = model
        self.classification = card.task == "classification"
        self.bce = card.loss == "bce_with_logits"
        inputs = Standardizer.from_dict(card.input_stats)
        self.register_buffer("input_mean", inputs.mean.clone())
        self.register_buffer("input_std", inputs.std.clone())
        self.has_targets = bool(card.target_stats) and not self.classification
        if self.has_targets:
            targets = Standardizer.from_dict(card.target_stats)
            self.register_buffer("target_mean", targets.mean.clone())
            self.register_buffer("target_std", targets.std.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, *input_shape)
        out = self.model((x - self.input_mean) / self.input_std).float()  # (B, K)
        if self.classification:
            if self.bce:
                probs = torch.sigmoid(out)
                return probs / probs.sum(dim=1, keepdim=True).clamp_min(1e-12)
            return torch.softmax(out, dim=1)
        if self.has_targets:
            out = out * self.target_std + self.target_mean
        return out


def serving_module(model: nn.Module, card: ModelCard) -> ServingModule:
    """A copy of `model` (trained, on any device) wrapped for serving: on the CPU, in eval mode.

    A copy, because tracing swaps a module's parameters for fake tensors while it runs: the
    original may be answering predictions in another thread meanwhile."""
    return ServingModule(copy.deepcopy(model), card).to("cpu").eval()


def sample_inputs(card: ModelCard, batch: int, seed: int = 0) -> torch.Tensor:
    """Plausible raw inputs: the training statistics' mean plus noise of their spread."""
    generator = torch.Generator().manual_seed(seed + batch)
    stats = Standardizer.from_dict(card.input_stats)
    noise = torch.randn((batch, *card.input_shape), generator=generator)
    return (noise * stats.std + stats.mean).float()


def _batch_dim() -> torch.export.Dim:
    return torch.export.Dim("batch", min=1, max=_MAX_BATCH)


def _exported_program(module: ServingModule, card: ModelCard) -> torch.export.ExportedProgram:
    example = sample_inputs(card, 2)  # not 1: a size-1 dimension would be specialised
    try:
        return torch.export.export(module, (example,), dynamic_shapes=({0: _batch_dim()},))
    except Exception as exc:  # torch.export raises many error types (user errors, unsupported)
        raise ExportError(f"torch.export failed for '{card.architecture}': {exc}") from exc


def check_outputs(name: str, expected: torch.Tensor, got: np.ndarray, batch: int) -> None:
    """ExportError unless `got` (an export's answer to a batch of `batch`) has the shape of
    `expected` (eager's) and its values within TOLERANCE, relative to max(1, |eager|)."""
    got_t = torch.from_numpy(np.asarray(got, dtype=np.float32))
    if got_t.shape != expected.shape:
        raise ExportError(
            f"{name} export gives shape {tuple(got_t.shape)} for a batch of {batch}; "
            f"eager gives {tuple(expected.shape)}"
        )
    error = ((got_t - expected).abs() / expected.abs().clamp_min(1.0)).max().item()
    if not error <= TOLERANCE:
        raise ExportError(
            f"{name} export differs from the eager module by {error:.3g} "
            f"(> {TOLERANCE}) on a batch of {batch}"
        )


def _eager(module: ServingModule, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return module(x)


@_one_at_a_time
def to_pt2(model: nn.Module, card: ModelCard) -> bytes:
    """A `torch.export` program (dynamic batch dimension) saved with `torch.export.save`.

    Load it with `torch.export.load(path).module()`; checked against eager within TOLERANCE.
    """
    module = serving_module(model, card)
    program = _exported_program(module, card)
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    data = buffer.getvalue()
    for batch in CHECK_BATCHES:
        x = sample_inputs(card, batch)
        check_outputs("pt2", _eager(module, x), _run_pt2(data, x, card), batch)
    return data


def _run_pt2(data: bytes, x: torch.Tensor, card: ModelCard) -> np.ndarray:
    try:
        loaded = torch.export.load(io.BytesIO(data)).module()
        with torch.inference_mode():
            return loaded(x).numpy()
    except Exception as exc:  # a program that does not load or run back is no export
        raise ExportError(f"the pt2 export of '{card.architecture}' does not run: {exc}") from exc


@_one_at_a_time
def to_onnx(model: nn.Module, card: ModelCard) -> bytes:
    """An ONNX model, input `input` (batch, *input_shape) -> output `output` (batch, K).

    Made by the dynamo-based exporter from the `torch.export` program at opset ONNX_OPSET
    (nothing downloaded), then run in onnxruntime and checked against eager within TOLERANCE.
    """
    import onnxruntime  # an optional runtime: only the ONNX export needs it

    module = serving_module(model, card)
    program = _exported_program(module, card)
    try:
        onnx_program = torch.onnx.export(
            program,
            dynamo=True,
            opset_version=ONNX_OPSET,
            input_names=["input"],
            output_names=["output"],
            external_data=False,
            verbose=False,
        )
        data = onnx_program.model_proto.SerializeToString()
    except Exception as exc:  # the exporter raises many error types
        raise ExportError(f"ONNX export failed for '{card.architecture}': {exc}") from exc
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    for batch in CHECK_BATCHES:
        x = sample_inputs(card, batch)
        try:
            session = onnxruntime.InferenceSession(
                data, options, providers=["CPUExecutionProvider"]
            )
            (got,) = session.run(["output"], {"input": x.numpy()})
        except Exception as exc:  # onnxruntime's own error types: a model it cannot run
            raise ExportError(
                f"the ONNX export of '{card.architecture}' does not run in onnxruntime: {exc}"
            ) from exc
        check_outputs("onnx", _eager(module, x), got, batch)
    return data
