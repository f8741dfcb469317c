"""Inference in ONNX Runtime: the same answers as `Predictor`, from models/export.py's export.

`OnnxPredictor.from_bytes(data, eager)` opens an ONNX export of the eager predictor's model
(`to_onnx`'s: raw inputs -> probabilities or original units, dynamic batch), made elsewhere
(models/export_process.py runs the exporter in a child process; the service keeps the result
in its artifact store), in an onnxruntime session on the CPU. Bytes read back from a store
are not trusted: the session's answers to `CHECK_BATCHES` sample batches must match the eager
predictor's within `TOLERANCE` (as at export), else ExportError, so a stale or tampered export
is never used. It answers like `Predictor` (the same `predict_in_chunks`: same chunks, same
stop between chunks, same outputs) and keeps the eager predictor for what it knows of the
model (input shape, card, activation bytes per sample: the budget and chunking stay the same).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from models.export import CHECK_BATCHES, ExportError, check_outputs, sample_inputs
from models.predictor import Prediction, Predictor, predict_in_chunks


class OnnxPredictor:
    def __init__(self, session, eager: Predictor) -> None:
        self.session = session
        self.eager = eager
        self.card = eager.card
        self.input_shape = eager.input_shape
        self.bytes_per_sample = eager.bytes_per_sample

    @classmethod
    def from_bytes(cls, data: bytes, eager: Predictor, threads: int = 1) -> OnnxPredictor:
        """Open the ONNX export `data` of `eager`'s model with `threads` intra-op threads (no
        inter-op threads, no spinning: the caller's threads are the parallelism), once its
        answers are checked against `eager`'s; ExportError when it does not open, run or match.
        """
        import onnxruntime  # an optional runtime: only this backend needs it

        what = f"the stored ONNX export of '{eager.card.architecture}'"
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            session = onnxruntime.InferenceSession(
                data, options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime's own error types: bytes it cannot load
            raise ExportError(f"{what} does not open in onnxruntime: {exc}") from exc
        predictor = cls(session, eager)
        for batch in CHECK_BATCHES:
            x = sample_inputs(eager.card, batch).numpy()
            try:
                got = predictor.outputs(x)
            except Exception as exc:  # onnxruntime's own error types: a graph that does not run
                raise ExportError(f"{what} does not run in onnxruntime: {exc}") from exc
            check_outputs("stored onnx", torch.from_numpy(eager.outputs(x)), got, batch)
        return predictor

    def chunk_size(self, max_chunk_bytes: int) -> int:
        return self.eager.chunk_size(max_chunk_bytes)

    def outputs(self, samples: np.ndarray) -> np.ndarray:
        """As `Predictor.outputs`: (B, *input_shape) float32 -> (B, K) float32."""
        (out,) = self.session.run(["output"], {"input": samples})
        return out

    def predict(
        self,
        samples: np.ndarray,
        chunk: int | None = None,
        stop: Callable[[], bool] = lambda: False,
    ) -> Prediction:
        """As `Predictor.predict`: `samples` (N, *input_shape) float32 from `check_inputs`."""
        return predict_in_chunks(self.outputs, samples, self.card.task, chunk, stop)
