"""The weights format: safetensors with a model card in the metadata.

A finished model is one `.safetensors` file: the tensors of its state dict, plus a JSON model
card under the metadata key `trainserve` holding everything needed to rebuild exactly the same
module and to preprocess raw inputs (architecture and parameters, input shape, task, class
names, standardisation statistics, library versions). Loading never unpickles: the header is
JSON and the tensors are raw bytes, so a file that is not safetensors is refused.
"""

from __future__ import annotations

import dataclasses
import json
import struct
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any, BinaryIO

from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from torch import nn

from models.catalogue import get_architecture
from models.errors import CheckpointError

FORMAT = "trainserve/1"
_METADATA_KEY = "trainserve"
_MAX_HEADER_BYTES = 100 * 1024 * 1024


@dataclass
class ModelCard:
    """What a weights file says about its model."""

    architecture: str
    architecture_params: dict[str, Any]
    input_shape: list[int]
    output_size: int
    task: str
    loss: str
    dataset: str
    input_stats: dict[str, Any]
    target_stats: dict[str, Any] | None = None
    classes: list[str] | None = None
    feature_names: list[str] | None = None
    versions: dict[str, str] = field(default_factory=lambda: library_versions())

    def build_module(self) -> nn.Module:
        """A fresh, untrained module of exactly this card's architecture and shape."""
        arch = get_architecture(self.architecture)
        return arch.build(tuple(self.input_shape), self.output_size, self.architecture_params)


def library_versions() -> dict[str, str]:
    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:  # e.g. run from a source tree that is not installed
            return "unknown"

    return {name: installed(name) for name in ("torch", "torchvision", "trainserve")}


# Written into the card for people reading the file, ignored when it is read back.
_DESCRIPTIVE_KEYS = ("rebuild", "preprocessing")


def describe_rebuild(model: nn.Module, card: ModelCard) -> dict[str, Any]:
    """How to rebuild the module: the public function that builds it, and its layer graph."""
    return {
        "function": "models.catalogue.get_architecture(architecture).build(input_shape, "
        "output_size, architecture_params), then load_state_dict(these tensors); eval()",
        "call": f"get_architecture({card.architecture!r}).build({tuple(card.input_shape)!r}, "
        f"{card.output_size}, {card.architecture_params!r})",
        "module": str(model),
        "exports": "GET /v1/models/{name}/versions/{version}/weights?format=onnx|pt2 gives the "
        "same model with this preprocessing inside, runnable with onnxruntime or torch alone",
    }


def describe_preprocessing(card: ModelCard) -> dict[str, str]:
    """How raw inputs become the module's inputs, and its outputs the service's answers."""
    if card.task == "classification":
        if card.loss == "bce_with_logits":
            output = "p = sigmoid(out); p = p / p.sum(dim=1, keepdim=True): class probabilities"
        else:
            output = "p = softmax(out, dim=1): class probabilities; the class is p.argmax(dim=1)"
    elif card.target_stats:
        output = (
            "y = out * std + mean with target_stats (mean and std reshaped to target_stats."
            "shape): values in the original units"
        )
    else:
        output = "y = out: values in the original units"
    return {
        "inputs": "x float32 of shape (B, *input_shape); x = (x - mean) / std with input_stats "
        "(mean and std flat lists, reshaped to input_stats.shape, broadcast over the batch)",
        "outputs": output,
    }


def serialize_model(model: nn.Module, card: ModelCard) -> bytes:
    """The safetensors bytes of `model`'s weights with `card` in the metadata, and a
    description of how to rebuild the module and preprocess its inputs."""
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    described = {
        "rebuild": describe_rebuild(model, card),
        "preprocessing": describe_preprocessing(card),
    }
    card_json = json.dumps(dataclasses.asdict(card) | described, sort_keys=True)
    return save_tensors(tensors, metadata={"format": FORMAT, _METADATA_KEY: card_json})


def read_card(data: bytes) -> ModelCard:
    """Parse the model card from the safetensors header without touching the tensors."""
    if len(data) < 8:
        raise CheckpointError("not a safetensors file: too short")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > min(len(data) - 8, _MAX_HEADER_BYTES):
        raise CheckpointError("not a safetensors file: bad header length")
    try:
        header = json.loads(data[8 : 8 + header_len])
        metadata = header["__metadata__"]
        if metadata.get("format") != FORMAT:
            raise CheckpointError(
                f"not a trainserve weights file (format {metadata.get('format')!r})"
            )
        fields = json.loads(metadata[_METADATA_KEY])
        for key in _DESCRIPTIVE_KEYS:
            fields.pop(key, None)
        return ModelCard(**fields)
    except CheckpointError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"not a trainserve safetensors file: {exc}") from None


def read_card_from(handle: BinaryIO) -> ModelCard:
    """`read_card` of an open file, reading its header only (the length, then the JSON)."""
    head = handle.read(8)
    header_len = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
    if header_len <= _MAX_HEADER_BYTES:
        head += handle.read(header_len)
    return read_card(head)  # which refuses a short file or a bad length


def deserialize_model(data: bytes) -> tuple[nn.Module, ModelCard]:
    """Rebuild the module described by the card and load its weights (strictly), in eval mode."""
    card = read_card(data)
    try:
        tensors = load_tensors(data)
    except Exception as exc:  # safetensors raises its own error types for corrupt bodies
        raise CheckpointError(f"corrupt safetensors body: {exc}") from None
    module = card.build_module()
    try:
        module.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"weights do not match architecture '{card.architecture}'") from exc
    return module.eval(), card
