"""The tutorial's building blocks: convolution, batch normalisation, max pooling, dropout."""

from __future__ import annotations

from torch import nn


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
