"""How much memory a training step needs, estimated without allocating any (meta device).

A forward pass on the meta device at the requested batch size gives every layer's output
shape; autograd keeps those outputs for the backward pass, so their sum approximates the
activation memory. Weights count once for the values, once for the gradients, and again for
each state tensor the optimizer keeps per weight (adam and adamw: two; sgd and rmsprop with
momentum: one or two). The backward pass holds gradients of about the activations' size at
its peak, hence BACKWARD_FACTOR. Checked against measured peaks on the CPU (docs/reliability.md):
the estimate is an order of magnitude, good for refusing a job that needs 40 GB on a 16 GB
worker, not for packing jobs tightly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

OPTIMIZER_STATES = {"sgd": 1, "rmsprop": 2, "adam": 2, "adamw": 2}
BACKWARD_FACTOR = 2


@dataclass(frozen=True)
class MemoryEstimate:
    activations: int
    weights: int  # values, gradients and optimizer state

    @property
    def total(self) -> int:
        return self.activations + self.weights


def estimate_training_memory(
    module: nn.Module, input_shape: tuple[int, ...], batch_size: int, optimizer: str
) -> MemoryEstimate:
    """Bytes one training step of `module` (built on the meta device) needs at `batch_size`."""
    activations = activation_bytes(module, input_shape, batch_size)
    weight_bytes = sum(p.numel() * p.element_size() for p in module.parameters())
    copies = 2 + OPTIMIZER_STATES.get(optimizer, 2)
    return MemoryEstimate(activations=activations * BACKWARD_FACTOR, weights=weight_bytes * copies)


def activation_bytes(module: nn.Module, input_shape: tuple[int, ...], batch_size: int) -> int:
    """The bytes of every layer's output for a batch: what a training step keeps for backward,
    and an upper bound of what inference allocates (which frees each output once used).
    `module` lives on the meta device (a copy for a loaded model: see models/predictor.py)."""
    total = 0

    def count(_module: nn.Module, _inputs: object, output: object) -> None:
        nonlocal total
        for tensor in _tensors(output):
            total += tensor.numel() * tensor.element_size()

    leaves = [m for m in module.modules() if not list(m.children())]
    handles = [leaf.register_forward_hook(count) for leaf in leaves]
    try:
        with torch.device("meta"):
            module(torch.empty((batch_size, *input_shape)))
    finally:
        for handle in handles:
            handle.remove()
    return total


def _tensors(value: object) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, list | tuple):
        return [t for item in value for t in _tensors(item)]
    return []
