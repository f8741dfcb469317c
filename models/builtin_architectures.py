"""The built-in architectures: the tutorial's models, an MLP and a configurable CNN."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from models.architectures import register_architecture
from models.blocks import conv_block, dense_head
from models.choices import TASKS
from models.params import bounded

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
