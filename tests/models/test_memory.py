"""The training-memory estimate against what a training step really takes on the CPU."""

from __future__ import annotations

import subprocess
import sys

import torch

from models.catalogue import get_architecture
from models.memory import estimate_training_memory

PROBE = """
import sys, torch
from models.catalogue import get_architecture
from models.memory import estimate_training_memory
torch.set_num_threads(1)
name, batch = sys.argv[1], int(sys.argv[2])
shape = (1, 28, 28)
with torch.device("meta"):
    estimate = estimate_training_memory(get_architecture(name).build(shape, 10, {}), shape, batch,
                                        "adam")
model = get_architecture(name).build(shape, 10, {})
optimizer = torch.optim.Adam(model.parameters())
x, y = torch.randn(batch, *shape), torch.randint(0, 10, (batch,))
def status(field):
    line = next(l for l in open("/proc/self/status") if l.startswith(field + ":"))
    return int(line.split()[1]) * 1024
open("/proc/self/clear_refs", "w").write("5")  # the peak (VmHWM) starts again from here
before = status("VmRSS")
for _ in range(2):
    optimizer.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()
print(estimate.total, status("VmHWM") - before)
"""


def measured(name: str, batch: int) -> tuple[int, int]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, name, str(batch)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    estimate, peak = (int(v) for v in out.stdout.split())
    return estimate, peak


def test_the_estimate_is_the_right_order_of_magnitude():
    for name, batch in (("mnist_convnet", 1024), ("resnet18", 64)):
        estimate, peak = measured(name, batch)
        assert 0.4 * peak < estimate < 2.5 * peak, (name, estimate, peak)


def test_activations_grow_with_the_batch_and_weights_do_not():
    with torch.device("meta"):
        model = get_architecture("cnn").build((1, 28, 28), 10, {})
    small = estimate_training_memory(model, (1, 28, 28), 8, "sgd")
    large = estimate_training_memory(model, (1, 28, 28), 80, "sgd")
    assert large.activations == 10 * small.activations
    assert large.weights == small.weights
    assert estimate_training_memory(model, (1, 28, 28), 8, "adam").weights > small.weights
