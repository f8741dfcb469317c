"""The architecture catalogue: named model builders with small, bounded config dataclasses.

Registered like torchvision's `register_model`: `@register_architecture(name, ...)` on a builder
`(config, input_shape, output_size) -> nn.Module`. Regression models output `(B, n_targets)`,
classifiers output logits `(B, n_classes)`.

Memory guard: every parameter has a declared range, and `Architecture.build` also builds the
model on the meta device first (no memory) and refuses one with more than `MAX_PARAMETERS`
weights, since heads that flatten the input grow with the dataset's input shape.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from models.errors import CatalogueError
from models.params import bounded, build_config, describe_params, param_bounds

TASKS = ("regression", "classification")
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


_REGISTRY: dict[str, Architecture] = {}


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
        if name in _REGISTRY:
            raise ValueError(f"architecture '{name}' is already registered")
        _REGISTRY[name] = Architecture(
            name, tuple(tasks), description, config_cls, builder, input_kind
        )
        return builder

    return decorator


def get_architecture(name: str) -> Architecture:
    """The entry named `name`; CatalogueError listing the known names otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise CatalogueError(f"architecture '{name}' is unknown; known: {known}") from None


def list_architectures() -> list[Architecture]:
    return [_REGISTRY[name] for name in sorted(_REGISTRY)]


# --- building blocks (the tutorial's convolution, max pooling, batch norm, dropout) ---------


def conv_block(
    in_channels: int,
    out_channels: int,
    kernel_size: int = 3,
    *,
    batch_norm: bool = True,
    pool: bool = True,
    dropout: float = 0.0,
) -> nn.Sequential:
    """Conv2d (same padding) -> [BatchNorm2d] -> ReLU -> [MaxPool2d(2)] -> [Dropout2d]."""
    layers: list[nn.Module] = [
        nn.Conv2d(
            in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=not batch_norm
        )
    ]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_channels))
    layers.append(nn.ReLU())
    if pool:
        layers.append(nn.MaxPool2d(2))
    if dropout > 0:
        layers.append(nn.Dropout2d(dropout))
    return nn.Sequential(*layers)


def dense_head(
    in_features: int, hidden_size: int, output_size: int, dropout: float = 0.0
) -> nn.Sequential:
    """Flatten -> Linear(hidden) -> ReLU -> [Dropout] -> Linear(output_size)."""
    layers: list[nn.Module] = [nn.Flatten(), nn.Linear(in_features, hidden_size), nn.ReLU()]
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(hidden_size, output_size))
    return nn.Sequential(*layers)


# --- house_prices_mlp -------------------------------------------------------------------------


@dataclass(frozen=True)
class HousePricesConfig:
    hidden_size: int = bounded(13, 1, 1024)


class HousePricesModel(nn.Module):
    """The tutorial's model: Linear(n, hidden) -> sigmoid -> Linear(hidden, out)."""

    def __init__(self, n_features: int, hidden_size: int, output_size: int):
        super().__init__()
        self.fc1 = nn.Linear(n_features, hidden_size)
        self.fc2 = nn.Linear(hidden_size, output_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)  # (B, n_features)
        return self.fc2(torch.sigmoid(self.fc1(x)))  # (B, hidden) -> (B, output_size)


@register_architecture(
    "house_prices_mlp",
    tasks=("regression",),
    description="The tutorial's house-price model: Linear -> sigmoid -> Linear.",
    config_cls=HousePricesConfig,
    input_kind="features",
)
def _build_house_prices(config: HousePricesConfig, input_shape, output_size) -> nn.Module:
    return HousePricesModel(math.prod(input_shape), config.hidden_size, output_size)


# --- mlp --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MLPConfig:
    hidden_size: int = bounded(128, 1, 2048)
    hidden_layers: int = bounded(1, 1, 8)
    dropout: float = bounded(0.0, 0.0, 0.9)


@register_architecture(
    "mlp",
    tasks=TASKS,
    description="Multi-layer perceptron on the flattened input: (Linear -> ReLU) x N -> Linear.",
    config_cls=MLPConfig,
    input_kind="features",
)
def _build_mlp(config: MLPConfig, input_shape, output_size) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for _ in range(config.hidden_layers):
        layers += [nn.Linear(width, config.hidden_size), nn.ReLU()]
        if config.dropout > 0:
            layers.append(nn.Dropout(config.dropout))
        width = config.hidden_size
    layers.append(nn.Linear(width, output_size))
    return nn.Sequential(*layers)


# --- mnist_convnet ----------------------------------------------------------------------------


@dataclass(frozen=True)
class MNISTConvNetConfig:
    dropout: float = bounded(0.0, 0.0, 0.9)


class MNISTConvNet(nn.Module):
    """The tutorial's MNIST_ConvNet, for 1x28x28 inputs."""

    def __init__(self, output_size: int = 10, dropout: float = 0.0):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 8, 3, padding=1)
        self.fc1 = nn.Linear(28 * 28 * 8, 32)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(32, output_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, 28, 28)
        x = F.relu(self.conv1(x))  # (B, 16, 28, 28)
        x = F.relu(self.conv2(x))  # (B, 8, 28, 28)
        x = F.relu(self.fc1(x.flatten(1)))  # (B, 6272) -> (B, 32)
        return self.fc2(self.dropout(x))  # (B, output_size)


@register_architecture(
    "mnist_convnet",
    tasks=TASKS,
    description="The tutorial's MNIST ConvNet: two 3x3 convolutions and two linear layers.",
    config_cls=MNISTConvNetConfig,
    input_kind="1x28x28",
)
def _build_mnist_convnet(config: MNISTConvNetConfig, input_shape, output_size) -> nn.Module:
    return MNISTConvNet(output_size, config.dropout)


# --- cnn --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CNNConfig:
    channels: tuple[int, ...] = bounded((16, 32), 1, 256, max_len=6)
    kernel_size: int = bounded(3, 3, 5, choices=(3, 5))
    batch_norm: bool = bounded(True)
    pool: bool = bounded(True)
    dropout: float = bounded(0.0, 0.0, 0.9)
    hidden_size: int = bounded(128, 1, 1024)


@register_architecture(
    "cnn",
    tasks=TASKS,
    description="Configurable CNN: blocks of conv -> batch norm -> ReLU -> max pool -> dropout, "
    "then a dense head.",
    config_cls=CNNConfig,
    input_kind="image",
)
def _build_cnn(config: CNNConfig, input_shape, output_size) -> nn.Module:
    """Pooling is skipped in a block once the map is smaller than 2x2, so it never hits 0."""
    in_channels, height, width = input_shape
    blocks: list[nn.Module] = []
    for out_channels in config.channels:
        pool = config.pool and min(height, width) >= 2
        blocks.append(
            conv_block(
                in_channels,
                out_channels,
                config.kernel_size,
                batch_norm=config.batch_norm,
                pool=pool,
                dropout=config.dropout,
            )
        )  # (B, out_channels, H', W')
        in_channels = out_channels
        height, width = (height // 2, width // 2) if pool else (height, width)
    head = dense_head(in_channels * height * width, config.hidden_size, output_size, config.dropout)
    return nn.Sequential(*blocks, head)


# The torchvision classifiers register themselves on import.
from models import torchvision_archs  # noqa: E402, F401
