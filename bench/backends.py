"""One forward, eager PyTorch against ONNX Runtime, per architecture and batch size.

What a batch of the service's batcher costs in each backend, in one process, on the same
weights: `Predictor.predict` (standardise -> module under inference_mode -> probabilities or
original units) against `OnnxPredictor.predict` (models/export.py's ServingModule exported with
a dynamic batch, by a child process as in the service, and run in onnxruntime), with the same
number of intra-op threads. Rounds
alternate the backends; printed are the medians of the per-call seconds, the ratio, and the
largest difference of the outputs (classification: probabilities; regression: values).

    python bench/backends.py                         # threads 1 and 2, batches 1, 8, 32
    python bench/backends.py --threads 1 --batches 1,32 --models mnist_convnet
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as in the API (app/api/threads.py)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.predict import MODELS, train  # noqa: E402
from models.export_process import export_in_child  # noqa: E402
from models.onnx_predictor import OnnxPredictor  # noqa: E402
from models.predictor import Predictor  # noqa: E402
from models.weights_file import serialize_model  # noqa: E402


def timed(call, seconds: float) -> float:
    """Median seconds per call over about `seconds` of calls (after two warm-up calls)."""
    call()
    call()
    times = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 5:
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def outputs(prediction) -> np.ndarray:
    values = prediction.probabilities or prediction.predictions
    return np.asarray(values, dtype=np.float64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--seconds", type=float, default=1.5, help="per backend and cell")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads by default")
    print()
    print("| model | threads | batch | eager ms | onnxruntime ms | eager/ort | max abs diff |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for model in args.models.split(","):
        result = train(model)
        eager = Predictor(result.model, result.card)
        onnx = export_in_child(serialize_model(result.model, result.card), "onnx")
        for threads in (int(t) for t in args.threads.split(",")):
            torch.set_num_threads(threads)
            ort = OnnxPredictor.from_bytes(onnx, eager, threads=threads)
            for batch in (int(b) for b in args.batches.split(",")):
                shape = (batch, *eager.input_shape)
                x = torch.rand(shape, generator=torch.Generator().manual_seed(batch)).numpy()
                diff = np.abs(outputs(eager.predict(x)) - outputs(ort.predict(x))).max()
                e, o = [], []
                for _ in range(args.rounds):
                    e.append(timed(lambda: eager.predict(x), args.seconds))  # noqa: B023
                    o.append(timed(lambda: ort.predict(x), args.seconds))  # noqa: B023
                em, om = 1e3 * statistics.median(e), 1e3 * statistics.median(o)
                print(
                    f"| {model} | {threads} | {batch} | {em:.3f} | {om:.3f} | {em / om:.2f}x | "
                    f"{diff:.1e} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
