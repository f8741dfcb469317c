"""torchvision's classifiers by their torchvision names, untrained, adapted to small images."""

from __future__ import annotations

from dataclasses import dataclass

import torchvision
from torch import nn

from models.architectures import Builder, register_architecture
from models.params import bounded

TORCHVISION_MODELS = ("resnet18", "resnet34", "mobilenet_v3_small", "efficientnet_b0")


@dataclass(frozen=True)
class TorchvisionConfig:
    small_input_stem: bool = bounded(True)


def _adapt_stem(model: nn.Module, in_channels: int, small_input: bool) -> None:
    """Replace the first conv to take `in_channels`; for small inputs make it 3x3, stride 1.

    With `small_input` a ResNet also loses its stem max pool (as CIFAR ResNets do), so a 28x28
    image is downsampled 8x (ResNet) or 16x (MobileNet, EfficientNet) rather than 32x.
    """
    path, old = next((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d))
    kernel, stride, padding = old.kernel_size, old.stride, old.padding
    if small_input:
        kernel, stride, padding = 3, 1, 1
    conv = nn.Conv2d(
        in_channels, old.out_channels, kernel, stride, padding, bias=old.bias is not None
    )
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    parent_path, _, attr = path.rpartition(".")
    setattr(model.get_submodule(parent_path), attr, conv)
    if small_input and isinstance(getattr(model, "maxpool", None), nn.MaxPool2d):
        model.maxpool = nn.Identity()


def _torchvision_builder(tv_name: str) -> Builder:
    def build(config: TorchvisionConfig, input_shape, output_size) -> nn.Module:
        model = torchvision.models.get_model(tv_name, weights=None, num_classes=output_size)
        _adapt_stem(model, input_shape[0], config.small_input_stem)
        return model

    return build


for _tv_name in TORCHVISION_MODELS:
    register_architecture(
        _tv_name,
        tasks=("classification",),
        description=f"torchvision {_tv_name}, untrained, first conv adapted to the input "
        "channels (3x3 stride-1 stem for small images unless small_input_stem is false).",
        config_cls=TorchvisionConfig,
        input_kind="image",
    )(_torchvision_builder(_tv_name))
