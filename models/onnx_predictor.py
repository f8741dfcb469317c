"""Inference in ONNX Runtime: the same answers as `Predictor`, from models/export.py's export.

`OnnxPredictor.export(model, card)` exports the model's `ServingModule` (raw inputs ->
probabilities or original units, dynamic batch; checked against eager within 1e-5 by
`to_onnx`) and opens it in an onnxruntime session on the CPU. It answers like `Predictor`
(same validation of inputs upstream, same chunks, same stop between chunks, same outputs) and
keeps the eager predictor for what it knows of the model (input shape, card, activation bytes
per sample: the budget and chunking stay the same).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from models.export import to_onnx
from models.predictor import Abandoned, Prediction, Predictor
from models.weights_file import ModelCard


class OnnxPredictor:
    def __init__(self, session, eager: Predictor) -> None:
        self.session = session
        self.eager = eager
        self.card = eager.card
        self.input_shape = eager.input_shape
        self.bytes_per_sample = eager.bytes_per_sample

    @classmethod
    def export(cls, model: torch.nn.Module, card: ModelCard, threads: int = 1) -> OnnxPredictor:
        """Export `model` to ONNX (checked against eager) and open it with `threads` intra-op
        threads (no inter-op threads, no spinning: the caller's threads are the parallelism)."""
        import onnxruntime

        eager = Predictor(model, card)
        data = to_onnx(eager.model, card)
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        return cls(session, eager)

    def chunk_size(self, max_chunk_bytes: int) -> int:
        return self.eager.chunk_size(max_chunk_bytes)

    def predict(
        self,
        samples: np.ndarray,
        chunk: int | None = None,
        stop: Callable[[], bool] = lambda: False,
    ) -> Prediction:
        """As `Predictor.predict`: `samples` (N, *input_shape) float32 from `check_inputs`."""
        chunk = chunk or len(samples)
        outputs = []
        for start in range(0, len(samples), chunk):
            if stop():
                raise Abandoned(f"stopped after {start} of {len(samples)} samples")
            part = np.ascontiguousarray(samples[start : start + chunk], dtype=np.float32)
            (out,) = self.session.run(["output"], {"input": part})
            outputs.append(out)
        out = outputs[0] if len(outputs) == 1 else np.concatenate(outputs)
        if self.card.task == "classification":
            return Prediction(out.argmax(axis=1).tolist(), out.tolist())
        values = out.tolist()
        return Prediction([row[0] if len(row) == 1 else row for row in values])
