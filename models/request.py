"""The one description of a training request: fields, defaults, bounds, descriptions, examples.

The API's job schema (app/api/schemas.py adds the model name), the worker's config and the
`trainserve train` flags are all derived from `TrainingRequest`, so a field added here appears
everywhere. The optimizer is a union tagged by `name` (a missing name means adam), so the
OpenAPI document says which optimizer has which settings. No torch import: the command line
builds its flags from this module without loading torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Discriminator, Field, Tag

from models.choices import DEVICE_PATTERN, OPTIMIZERS, SEED_MAX, Loss, Schedule


class RequestModel(BaseModel):
    """Requests refuse unknown fields, NaN or infinite numbers, and values of another JSON type
    (strict: `true` or `"10"` or `10.0` is not an integer, `1` is not a string)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


MAX_NESTING = 32  # levels of lists and objects in a free-form value (parameters, inputs)


def check_nesting(value: Any, limit: int = MAX_NESTING) -> Any:
    """`value` (parsed JSON) when it holds at most `limit` levels of lists and objects (the
    value itself is level 1). Deeper values are refused before anything recurses into them
    (the serializer gives up at 255 levels); this check itself walks an explicit stack."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if not isinstance(item, dict | list):
            continue
        if depth > limit:
            raise ValueError(
                f"nested more than {limit} levels deep (lists and objects); the limit is {limit}"
            )
        children = item.values() if isinstance(item, dict) else item
        if LEAVES.issuperset(map(type, children)):  # only numbers, strings...: nothing below
            continue
        stack.extend((child, depth + 1) for child in children)
    return value


LEAVES = frozenset({int, float, str, bool, type(None)})  # JSON's scalars, as parsed


def finite(value: Any, where: str = "") -> Any:
    """`value` (parsed JSON) when every number in it is finite: NaN and infinity would turn into
    null on the way to the job store, and no parameter takes them."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where or 'value'}: NaN and infinity are not allowed")
    if isinstance(value, dict):
        for key, item in value.items():
            finite(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            finite(item, f"{where}[{index}]")
    return value


Params = Annotated[
    dict[str, Any],
    AfterValidator(check_nesting),  # first: `finite` recurses
    AfterValidator(finite),
    Field(description="{name: value}; see `params` and `bounds` in the catalogue"),
]
LearningRate = Annotated[float, Field(gt=0, le=10, description="learning rate")]
WeightDecay = Annotated[float, Field(ge=0, le=1, description="L2 penalty (adamw: decoupled)")]
Momentum = Annotated[float, Field(ge=0, lt=1, description="momentum factor")]
Betas = Annotated[
    list[Annotated[float, Field(ge=0, lt=1)]],
    Field(min_length=2, max_length=2, description="coefficients of the running averages"),
]


class OptimizerBase(RequestModel):
    def options(self) -> dict[str, Any]:
        """Keyword arguments of models.optim.make_optimizer (everything but the name)."""
        return self.model_dump(exclude={"name"})


class SGD(OptimizerBase):
    name: Literal["sgd"]
    lr: LearningRate = 0.001
    momentum: Momentum = 0.0
    weight_decay: WeightDecay = 0.0


class RMSprop(OptimizerBase):
    name: Literal["rmsprop"]
    lr: LearningRate = 0.001
    momentum: Momentum = 0.0
    weight_decay: WeightDecay = 0.0


class Adam(OptimizerBase):
    name: Literal["adam"] = "adam"
    lr: LearningRate = 0.001
    betas: Betas = Field(default_factory=lambda: [0.9, 0.999])
    weight_decay: WeightDecay = 0.0


class AdamW(OptimizerBase):
    name: Literal["adamw"]
    lr: LearningRate = 0.001
    betas: Betas = Field(default_factory=lambda: [0.9, 0.999])
    weight_decay: WeightDecay = 0.0


def _optimizer_name(value: Any) -> Any:
    if isinstance(value, dict):
        return value.get("name", "adam")
    return getattr(value, "name", None)


Optimizer = Annotated[
    Annotated[SGD, Tag("sgd")]
    | Annotated[Adam, Tag("adam")]
    | Annotated[AdamW, Tag("adamw")]
    | Annotated[RMSprop, Tag("rmsprop")],
    Discriminator(
        _optimizer_name,
        custom_error_type="optimizer_name",
        custom_error_message="optimizer.name must be one of sgd, adam, adamw, rmsprop",
    ),
]
OPTIMIZER_CLASSES: tuple[type[OptimizerBase], ...] = (SGD, Adam, AdamW, RMSprop)

TRAINING_EXAMPLE = {
    "architecture": "house_prices_mlp",
    "architecture_params": {"hidden_size": 13},
    "dataset": "boston_housing",
    "dataset_params": {},
    "test_fraction": 0.2,
    "loss": "mse",
    "optimizer": {"name": "adam", "lr": 0.01, "betas": [0.9, 0.999], "weight_decay": 0.0},
    "epochs": 100,
    "batch_size": 32,
    "eval_every": 10,
    "seed": 0,
    "device": "auto",
}


def field_path(loc: Sequence[str | int]) -> list[str]:
    """A validation error's location as the client wrote it: pydantic puts the tag of a tagged
    union in it (`optimizer.adam.lr`) where the request says `optimizer.lr`."""
    parts = [str(part) for part in loc]
    return [
        part
        for i, part in enumerate(parts)
        if not (i > 0 and parts[i - 1] == "optimizer" and part in OPTIMIZERS)
    ]


class TrainingRequest(RequestModel):
    """What to train and how; only `architecture` and `dataset` are required."""

    architecture: str = Field(max_length=64, description="see GET /v1/architectures")
    architecture_params: Params = Field(default_factory=dict)
    dataset: str = Field(max_length=64, description="see GET /v1/datasets")
    dataset_params: Params = Field(default_factory=dict)
    test_fraction: float = Field(
        0.2, gt=0, lt=1, description="share of the samples held out for evaluation"
    )
    loss: Loss | None = Field(
        None, description="default: mse (regression), cross_entropy (classification)"
    )
    optimizer: Optimizer = Field(default_factory=Adam, description="default: adam, lr 0.001")
    epochs: int = Field(10, ge=1, description="passes over the training split")
    batch_size: int = Field(32, ge=1, description="samples per optimizer step")
    eval_every: int = Field(1, ge=1, description="epochs between evaluations (the last always)")
    seed: int = Field(0, ge=0, le=SEED_MAX, description="seeds the split, init and data order")
    device: str = Field(
        "auto", pattern=DEVICE_PATTERN, description="auto (CUDA when present), cpu, cuda, cuda:N"
    )
    lr_schedule: Schedule | None = Field(None, description="learning-rate schedule per epoch")
    grad_clip_norm: float | None = Field(None, gt=0, description="clip gradients to this norm")
    early_stopping_patience: int | None = Field(
        None, ge=1, le=100_000, description="stop after this many evaluations without progress"
    )
    bf16: bool = Field(False, description="bf16 autocast on CUDA (ignored on the CPU)")

    @classmethod
    def from_stored(cls, data: dict[str, Any]) -> TrainingRequest:
        """The training part of a stored job request (other keys, such as the model name, are
        the service's). Requests stored before optimizers were tagged carried `momentum: 0`
        for adam and adamw; it is dropped."""
        values = {k: v for k, v in data.items() if k in cls.model_fields}
        optimizer = values.get("optimizer")
        adam = isinstance(optimizer, dict) and optimizer.get("name", "adam") in ("adam", "adamw")
        if adam and not optimizer.get("momentum"):
            values["optimizer"] = {k: v for k, v in optimizer.items() if k != "momentum"}
        return cls.model_validate(values)
