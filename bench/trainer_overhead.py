"""What the Trainer costs over the tutorial's bare loop, and how it compares with Lightning.

In one process, in alternating rounds (the order rotates each round), from the same initial
weights and data, each workload is trained by:
  bare      the tutorial's loop: permute, slice, zero_grad / forward / backward / step,
            evaluate every `eval_every` epochs under inference_mode
  trainer   models.trainer.Trainer as the service runs it (no progress bar; one no-op
            callback, so hook dispatch is paid for)
  lightning lightning.pytorch.Trainer, DataLoader over a TensorDataset (shuffle=True)
and the median seconds (wall clock, or with --clock cpu this process's CPU time) of each
are printed with the ratios trainer/bare and
lightning/trainer (of the medians, and the median of the per-round ratios).

    python bench/trainer_overhead.py                 # CPU, the figures in docs/benchmarks.md
    python bench/trainer_overhead.py --quick         # a smoke run
    python bench/trainer_overhead.py --device cuda --bf16
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import logging
import os
import platform
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.callbacks import Callback  # noqa: E402
from models.trainer import Trainer, resolve_device  # noqa: E402

VARIANTS = ("bare", "trainer", "lightning")


@dataclass
class Workload:
    name: str
    model: nn.Module  # initial weights, copied for every run
    X: torch.Tensor
    y: torch.Tensor
    X_test: torch.Tensor
    y_test: torch.Tensor
    task: str
    lr: float
    momentum: float
    epochs: int
    eval_every: int
    batch_size: int = 32

    def loss_fn(self) -> nn.Module:
        return nn.MSELoss() if self.task == "regression" else nn.CrossEntropyLoss()

    def optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.SGD(model.parameters(), lr=self.lr, momentum=self.momentum)


def mlp_workload(rows: int, epochs: int) -> Workload:
    """The tutorial's house-prices MLP, 13-13-1 with a sigmoid, on synthetic features."""
    g = torch.Generator().manual_seed(0)
    X = torch.randn(rows + rows // 4, 13, generator=g)
    y = X @ torch.randn(13, 1, generator=g) + 0.1 * torch.randn(len(X), 1, generator=g)
    model = nn.Sequential(nn.Linear(13, 13), nn.Sigmoid(), nn.Linear(13, 1))
    return Workload(
        "mlp 13-13-1", model, X[:rows], y[:rows], X[rows:], y[rows:], "regression",
        lr=0.001, momentum=0.0, epochs=epochs, eval_every=max(1, epochs // 2),
    )  # fmt: skip


def convnet_workload(rows: int, epochs: int) -> Workload:
    """The tutorial's MNIST ConvNet on synthetic 1x28x28 images with learnable labels."""
    g = torch.Generator().manual_seed(0)
    X = torch.rand(rows + rows // 4, 1, 28, 28, generator=g)
    y = (X.flatten(1) @ torch.randn(784, 10, generator=g)).argmax(dim=1)
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),  # (B, 16, 28, 28)
        nn.ReLU(),
        nn.Conv2d(16, 8, 3, padding=1),  # (B, 8, 28, 28)
        nn.ReLU(),
        nn.Flatten(),  # (B, 6272)
        nn.Linear(28 * 28 * 8, 32),
        nn.ReLU(),
        nn.Linear(32, 10),
    )
    return Workload(
        "mnist convnet", model, X[:rows], y[:rows], X[rows:], y[rows:], "classification",
        lr=0.01, momentum=0.9, epochs=epochs, eval_every=1,
    )  # fmt: skip


def autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager:
    if bf16 and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def run_bare(wl: Workload, model: nn.Module, device: torch.device, bf16: bool) -> None:
    optimizer, loss_fn = wl.optimizer(model), wl.loss_fn()
    X, y, X_test, y_test = (t.to(device) for t in (wl.X, wl.y, wl.X_test, wl.y_test))
    for epoch in range(1, wl.epochs + 1):
        perm = torch.randperm(len(X), device=device)
        X_perm, y_perm = X[perm], y[perm]
        for i in range(0, len(X), wl.batch_size):
            xb, yb = X_perm[i : i + wl.batch_size], y_perm[i : i + wl.batch_size]
            optimizer.zero_grad()
            with autocast(device, bf16):
                loss = loss_fn(model(xb), yb)
            loss.backward()
            optimizer.step()
        if epoch % wl.eval_every == 0 or epoch == wl.epochs:
            model.eval()
            with torch.inference_mode(), autocast(device, bf16):
                val_loss = loss_fn(model(X_test).float(), y_test).item()  # the tutorial printed it
            model.train()
    del val_loss


def run_trainer(wl: Workload, model: nn.Module, device: torch.device, bf16: bool) -> None:
    trainer = Trainer(
        model, wl.optimizer(model), wl.loss_fn(), task=wl.task, callbacks=[Callback()],
        device=device, bf16=bf16,
    )  # fmt: skip
    trainer.fit(wl.X, wl.y, wl.X_test, wl.y_test, wl.epochs, wl.eval_every, wl.batch_size)


def run_lightning(wl: Workload, model: nn.Module, device: torch.device, bf16: bool) -> None:
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader, TensorDataset

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model, self.loss_fn = model, wl.loss_fn()

        def training_step(self, batch, batch_idx):
            x, y = batch
            return self.loss_fn(self.model(x), y)

        def validation_step(self, batch, batch_idx):
            x, y = batch
            self.log("val_loss", self.loss_fn(self.model(x).float(), y))

        def configure_optimizers(self):
            return wl.optimizer(self.model)

    train = DataLoader(TensorDataset(wl.X, wl.y), batch_size=wl.batch_size, shuffle=True)
    val = DataLoader(TensorDataset(wl.X_test, wl.y_test), batch_size=1024)
    trainer = pl.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu", devices=1,
        max_epochs=wl.epochs, check_val_every_n_epoch=wl.eval_every, num_sanity_val_steps=0,
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, precision="bf16-mixed" if bf16 else "32-true",
    )  # fmt: skip
    trainer.fit(Module(), train, val)


RUNNERS = {"bare": run_bare, "trainer": run_trainer, "lightning": run_lightning}
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


@dataclass(frozen=True)
class Setup:
    device: torch.device
    bf16: bool
    threads: int
    clock: str


def timed(variant: str, wl: Workload, setup: Setup) -> float:
    torch.set_num_threads(setup.threads)  # in case a run changed it
    model = copy.deepcopy(wl.model).to(setup.device)
    torch.manual_seed(0)
    gc.collect()  # so no run pays for the garbage of the one before
    cuda, clock = setup.device.type == "cuda", CLOCKS[setup.clock]
    if cuda:
        torch.cuda.synchronize(setup.device)
    start = clock()
    RUNNERS[variant](wl, model, setup.device, setup.bf16)
    if cuda:
        torch.cuda.synchronize(setup.device)
    return clock() - start


def measure(wl: Workload, rounds: int, setup: Setup) -> dict[str, list[float]]:
    short = copy.copy(wl)
    short.epochs, short.eval_every = 1, 1
    for variant in VARIANTS:  # warm-up: imports, allocator, kernels; not counted
        timed(variant, short, setup)
    times = {v: [] for v in VARIANTS}
    for r in range(rounds):
        for variant in VARIANTS[r % 3 :] + VARIANTS[: r % 3]:
            times[variant].append(timed(variant, wl, setup))
    return times


def report(wl: Workload, times: dict) -> None:
    med = {v: statistics.median(t) for v, t in times.items()}
    steps = wl.epochs * -(-len(wl.X) // wl.batch_size)
    print(f"\n{wl.name}: {len(wl.X)} rows, {wl.epochs} epochs, batch {wl.batch_size}, "
          f"{steps} steps, eval every {wl.eval_every}")  # fmt: skip
    for v in VARIANTS:
        spread = f"min {min(times[v]):.3f}  max {max(times[v]):.3f}"
        print(f"  {v:<10} median {med[v]:8.3f} s  ({spread})  {1e6 * med[v] / steps:7.1f} us/step")
    for num, den in (("trainer", "bare"), ("lightning", "trainer")):
        paired = statistics.median(a / b for a, b in zip(times[num], times[den], strict=True))
        ratio = f"{num}/{den}"
        print(f"  {ratio:<17} {med[num] / med[den]:.3f}  (per-round median {paired:.3f})")


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=6, help="a multiple of 3 balances order")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA only)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch CPU threads")
    parser.add_argument(
        "--clock", choices=CLOCKS, default="wall",
        help="wall-clock time, or this process's CPU time (steadier on a shared CPU machine)",
    )  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="small data, 3 rounds: a smoke run")
    args = parser.parse_args()

    import lightning.pytorch  # noqa: F401  (configures its loggers on import; quieten them after)

    warnings.filterwarnings("ignore")  # Lightning's advice on DataLoader workers and the like
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    device = resolve_device(args.device)
    setup = Setup(device, args.bf16 and device.type == "cuda", args.threads, args.clock)
    rounds = 3 if args.quick else args.rounds
    workloads = [
        mlp_workload(rows=2048 if args.quick else 16384, epochs=4 if args.quick else 10),
        convnet_workload(rows=512 if args.quick else 3072, epochs=2),
    ]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()
    print(f"torch {torch.__version__}, device {device} ({name}), threads {args.threads}, "
          f"bf16 {setup.bf16}, rounds {rounds}, clock {args.clock}")  # fmt: skip
    for wl in workloads:
        report(wl, measure(wl, rounds, setup))


if __name__ == "__main__":
    main()
