"""Architectures: named model builders with small, bounded config dataclasses.

Registered like torchvision's `register_model`: `@register_architecture(name, ...)` on a builder
`(config, input_shape, output_size) -> nn.Module`. Regression models output `(B, n_targets)`,
classifiers output logits `(B, n_classes)`. The entries live in models/builtin_architectures.py
and models/torchvision_archs.py; models/catalogue.py imports them all.

Memory guard: every parameter has a declared range, and `Architecture.build` also builds the
model on the meta device first (no memory) and refuses one with more than `MAX_PARAMETERS`
weights, since heads that flatten the input grow with the dataset's input shape.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from models.choices import TASKS
from models.errors import CatalogueError
from models.params import build_config, describe_params, param_bounds
from models.registry import Registry

INPUT_KINDS = ("features", "image")  # or an exact shape written like "1x28x28"
MAX_PARAMETERS = 100_000_000

Builder = Callable[[Any, tuple[int, ...], int], nn.Module]


def count_parameters(module: nn.Module) -> int:
    """Number of weights in `module` (trainable or not)."""
    return sum(p.numel() for p in module.parameters())


def _shape_str(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape)


@dataclass(frozen=True)
class Architecture:
    """One catalogue entry; see docs/internals.md."""

    name: str
    tasks: tuple[str, ...]
    description: str
    config_cls: type
    builder: Builder
    input_kind: str

    @property
    def task(self) -> str:
        """'regression', 'classification' or 'both' (for the catalogue)."""
        return "both" if set(self.tasks) == set(TASKS) else self.tasks[0]

    def default_params(self) -> dict[str, Any]:
        return describe_params(self.config_cls)

    def param_bounds(self) -> dict[str, dict[str, Any]]:
        return param_bounds(self.config_cls)

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary for the catalogue endpoint."""
        return {
            "name": self.name,
            "task": self.task,
            "tasks": list(self.tasks),
            "description": self.description,
            "input_kind": self.input_kind,
            "params": self.default_params(),
            "bounds": self.param_bounds(),
        }

    def check_task(self, task: str) -> None:
        if task not in self.tasks:
            raise CatalogueError(
                f"architecture '{self.name}' does not support {task}; "
                f"it supports {', '.join(self.tasks)}"
            )

    def check_input(self, input_shape: tuple[int, ...]) -> None:
        """Raise CatalogueError unless this architecture accepts inputs of `input_shape`."""
        shape = tuple(input_shape)
        if not shape or not all(isinstance(d, int) and d >= 1 for d in shape):
            raise CatalogueError(f"input shape must be positive integers, got {list(shape)}")
        if self.input_kind == "image" and len(shape) != 3:
            raise CatalogueError(
                f"architecture '{self.name}' needs image inputs of shape CxHxW; "
                f"got {_shape_str(shape)}"
            )
        if self.input_kind not in INPUT_KINDS and _shape_str(shape) != self.input_kind:
            raise CatalogueError(
                f"architecture '{self.name}' needs inputs of shape {self.input_kind}; "
                f"got {_shape_str(shape)}"
            )

    def build(
        self,
        input_shape: tuple[int, ...],
        output_size: int,
        params: Mapping[str, Any] | None = None,
    ) -> nn.Module:
        """Validate params and input shape, check the size on the meta device, then build."""
        config = build_config(self.config_cls, params, owner=f"architecture '{self.name}'")
        shape = tuple(input_shape)
        self.check_input(shape)
        if isinstance(output_size, bool) or not isinstance(output_size, int) or output_size < 1:
            raise CatalogueError(f"output size must be a positive integer, got {output_size!r}")
        with torch.device("meta"):
            n_params = count_parameters(self.builder(config, shape, output_size))
        if n_params > MAX_PARAMETERS:
            raise CatalogueError(
                f"architecture '{self.name}' with these parameters has {n_params:,} weights for "
                f"inputs {_shape_str(shape)}, over the limit of {MAX_PARAMETERS:,}; "
                "choose smaller layers (or pooling)"
            )
        return self.builder(config, shape, output_size)


ARCHITECTURES: Registry[Architecture] = Registry("architecture")


def _check_config_cls(name: str, config_cls: type) -> None:
    """Every parameter must be declared with bounded(), numbers with a range or choices."""
    hints = typing.get_type_hints(config_cls)
    for f in dataclasses.fields(config_cls):
        if "range" not in f.metadata:
            raise ValueError(f"architecture '{name}': parameter '{f.name}' must use bounded()")
        hint = hints[f.name]
        numeric = hint in (int, float) or typing.get_origin(hint) is tuple
        low, high = f.metadata["range"]
        if numeric and f.metadata["choices"] is None and (low is None or high is None):
            raise ValueError(f"architecture '{name}': parameter '{f.name}' needs a range")


def register_architecture(
    name: str, *, tasks: tuple[str, ...], description: str, config_cls: type, input_kind: str
) -> Callable[[Builder], Builder]:
    """Decorator registering a builder under `name`; a name can be registered only once."""
    if not tasks or any(t not in TASKS for t in tasks):
        raise ValueError(f"architecture '{name}': tasks must be among {TASKS}, got {tasks}")
    _check_config_cls(name, config_cls)

    def decorator(builder: Builder) -> Builder:
        entry = Architecture(name, tuple(tasks), description, config_cls, builder, input_kind)
        ARCHITECTURES.add(name, entry)
        return builder

    return decorator
