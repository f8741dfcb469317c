"""A short CUDA check for a lent GPU machine: real fits on `cuda`, fp32 and bf16 autocast.

python bench/gpu_check.py        # then: python bench/trainer_overhead.py --device cuda --bf16
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.request import TrainingRequest
from models.training import run_training  # noqa: E402


def main() -> None:
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}")
    for bf16 in (False, True):
        config = TrainingRequest(
            architecture="mnist_convnet",
            dataset="digits28",
            optimizer={"name": "sgd", "lr": 0.01, "momentum": 0.9},
            epochs=5,
            device="cuda",
            bf16=bf16,
        )
        start = time.perf_counter()
        result = run_training(config)
        seconds = time.perf_counter() - start
        accuracy = result.history[-1]["val_accuracy"]
        print(
            f"digits28 mnist_convnet cuda bf16={bf16}: accuracy {accuracy:.3f} in {seconds:.1f} s"
        )
        assert accuracy >= 0.9, accuracy
    config = TrainingRequest(
        architecture="house_prices_mlp",
        dataset="boston_housing",
        optimizer={"name": "adam", "lr": 0.01},
        epochs=100,
        eval_every=10,
        device="cuda",
    )
    rmse = run_training(config).history[-1]["val_rmse"]
    print(f"boston_housing house_prices_mlp cuda: held-out RMSE {rmse:.2f}")
    assert rmse < 5.0, rmse


if __name__ == "__main__":
    main()
