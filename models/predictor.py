"""Inference on raw inputs: validate -> standardise -> model -> original units or classes."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from models.memory import activation_bytes
from models.preprocessing import Standardizer
from models.weights_file import ModelCard, deserialize_model


class InputError(ValueError):
    """Prediction inputs that do not fit the model; the message names the sample."""


class Abandoned(Exception):
    """The caller stopped waiting (its client went away); the remaining chunks were not run."""


@dataclass
class Prediction:
    predictions: list[Any]  # regression: values (a number per target); classification: indices
    probabilities: list[list[float]] | None = None


def check_inputs(inputs: Any, input_shape: tuple[int, ...], max_samples: int) -> np.ndarray:
    """Raw samples (nested lists) -> float32 (N, *input_shape); InputError names a bad sample.

    A sample may also be given flat, with as many numbers as the shape holds.
    """
    expected = "x".join(map(str, input_shape))
    size = math.prod(input_shape)
    if not isinstance(inputs, list | tuple) or not inputs:
        raise InputError(f"inputs must be a non-empty list of samples, each of shape {expected}")
    if len(inputs) > max_samples:
        raise InputError(f"too many samples: {len(inputs)} > the limit of {max_samples}")
    fast = _all_at_once(inputs, input_shape, size)
    if fast is not None:
        return fast
    out = np.empty((len(inputs), *input_shape), dtype=np.float32)
    for i, sample in enumerate(inputs):
        try:
            array = np.asarray(sample, dtype=np.float64)
        except OverflowError:  # an integer no float can hold, such as 10**400
            raise InputError(f"sample {i} holds a number too large for float32") from None
        except (ValueError, TypeError):
            raise InputError(
                f"sample {i} is not a rectangular list of numbers; expected shape {expected}"
            ) from None
        if array.shape != input_shape and array.shape != (size,):
            got = "x".join(map(str, array.shape)) or "a single number"
            raise InputError(f"sample {i} has shape {got}; expected {expected}")
        if not np.isfinite(array).all():
            raise InputError(
                f"sample {i} holds NaN, infinity or null; only finite numbers are accepted"
            )
        if np.abs(array).max(initial=0.0) > np.finfo(np.float32).max:
            raise InputError(f"sample {i} holds a number too large for float32")
        out[i] = array.reshape(input_shape)
    return out


def _all_at_once(inputs: Any, input_shape: tuple[int, ...], size: int) -> np.ndarray | None:
    """The samples in one conversion when they are all well-formed (the common case, several
    times faster than sample by sample); None when any is not, for `check_inputs` to name it."""
    try:
        with np.errstate(over="ignore"):  # beyond float32: infinity, refused just below
            array = np.asarray(inputs, dtype=np.float32)
    except (OverflowError, ValueError, TypeError):
        return None
    n = len(inputs)
    if array.shape != (n, *input_shape) and array.shape != (n, size):
        return None
    if not np.isfinite(array).all():
        return None
    return array.reshape((n, *input_shape))


class Predictor:
    """A loaded model ready to answer: built once, in eval mode, used under inference_mode."""

    def __init__(self, model: torch.nn.Module, card: ModelCard) -> None:
        self.model = model.eval()
        self.card = card
        self.input_shape = tuple(card.input_shape)
        self._inputs = Standardizer.from_dict(card.input_stats)
        self._targets = Standardizer.from_dict(card.target_stats) if card.target_stats else None
        with torch.device("meta"):  # the model's cost per sample, known once, without memory
            self.bytes_per_sample = max(
                1, activation_bytes(card.build_module(), self.input_shape, 1)
            )

    @classmethod
    def from_bytes(cls, data: bytes) -> Predictor:
        return cls(*deserialize_model(data))

    def chunk_size(self, max_chunk_bytes: int) -> int:
        """Samples per forward so that one forward's activations stay under `max_chunk_bytes`."""
        return max(1, max_chunk_bytes // self.bytes_per_sample)

    def outputs(self, samples: np.ndarray) -> np.ndarray:
        """One forward: `samples` (B, *input_shape) float32 in the original units -> (B, K)
        float32, class probabilities or values in the original units of the targets (what
        models/export.py's ServingModule gives)."""
        with torch.inference_mode():
            out = self.model(self._inputs.transform(torch.from_numpy(samples))).float()
            if self.card.task == "classification":
                if self.card.loss == "bce_with_logits":
                    probs = torch.sigmoid(out)
                    out = probs / probs.sum(dim=1, keepdim=True).clamp_min(1e-12)
                else:
                    out = torch.softmax(out, dim=1)
            elif self._targets is not None:
                out = self._targets.inverse_transform(out)
            return out.cpu().numpy()

    def predict(
        self,
        samples: np.ndarray,
        chunk: int | None = None,
        stop: Callable[[], bool] = lambda: False,
    ) -> Prediction:
        """`samples` as returned by `check_inputs`, in the original units of the dataset, run
        `chunk` samples at a time; `stop()` is asked before each chunk (Abandoned when true)."""
        return predict_in_chunks(self.outputs, samples, self.card.task, chunk, stop)


def predict_in_chunks(
    outputs: Callable[[np.ndarray], np.ndarray],
    samples: np.ndarray,
    task: str,
    chunk: int | None = None,
    stop: Callable[[], bool] = lambda: False,
) -> Prediction:
    """The answer to `samples` (N, *input_shape) float32, from `outputs` (a forward: (B, ...)
    -> (B, K) probabilities or values, as `Predictor.outputs`) run on `chunk` samples at a
    time; `stop()` is asked before each chunk (Abandoned when true). Shared by every backend,
    so that they chunk, stop and shape their answers alike."""
    chunk = chunk or len(samples)
    parts = []
    for start in range(0, len(samples), chunk):
        if stop():
            raise Abandoned(f"stopped after {start} of {len(samples)} samples")
        parts.append(outputs(np.ascontiguousarray(samples[start : start + chunk], np.float32)))
    out = parts[0] if len(parts) == 1 else np.concatenate(parts)
    if task == "classification":
        return Prediction(out.argmax(axis=1).tolist(), out.tolist())
    values = out.tolist()
    return Prediction([row[0] if len(row) == 1 else row for row in values])
