"""Bounded parameters for architectures and datasets.

Each architecture or dataset declares its parameters as a small config dataclass whose
fields carry their allowed range, so a request can never build an unbounded model or dataset:

    @dataclass(frozen=True)
    class MLPConfig:
        hidden_size: int = bounded(128, 1, 4096)
        dropout: float = bounded(0.0, 0.0, 0.9)
        channels: tuple[int, ...] = bounded((16, 32), 1, 512, max_len=8)

`build_config(MLPConfig, {"hidden_size": 64}, owner="architecture 'mlp'")` checks names, types
and ranges and returns the config; `describe_params(MLPConfig)` gives `{name: default}`.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping
from typing import Any

from models.errors import CatalogueError


def bounded(
    default: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    max_len: int | None = None,
    choices: tuple[Any, ...] | None = None,
) -> Any:
    """A dataclass field with a declared range (or set of choices); for tuples, per element."""
    meta = {"range": (low, high), "max_len": max_len, "choices": choices}
    return dataclasses.field(default=default, metadata=meta)


def describe_params(config_cls: type) -> dict[str, Any]:
    """`{name: default}` for every parameter of a config dataclass (tuples as lists, for JSON)."""
    out = {}
    for f in dataclasses.fields(config_cls):
        out[f.name] = list(f.default) if isinstance(f.default, tuple) else f.default
    return out


def param_bounds(config_cls: type) -> dict[str, dict[str, Any]]:
    """`{name: {"min", "max", "max_len", "choices"}}` for documentation and the catalogue."""
    out = {}
    for f in dataclasses.fields(config_cls):
        low, high = f.metadata.get("range", (None, None))
        info = {"min": low, "max": high}
        if f.metadata.get("max_len") is not None:
            info["max_len"] = f.metadata["max_len"]
        if f.metadata.get("choices") is not None:
            info["choices"] = list(f.metadata["choices"])
        out[f.name] = info
    return out


def build_config(config_cls: type, params: Mapping[str, Any] | None, *, owner: str) -> Any:
    """Check `params` against `config_cls` and return an instance; errors name the parameter."""
    params = dict(params or {})
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(params) - set(fields))
    if unknown:
        known = ", ".join(fields) or "none"
        raise CatalogueError(
            f"{owner} has no parameter {', '.join(repr(n) for n in unknown)}; known: {known}"
        )
    hints = typing.get_type_hints(config_cls)
    values = {
        name: _check_value(value, hints[name], fields[name], f"{owner}: parameter '{name}'")
        for name, value in params.items()
    }
    return config_cls(**values)


def _check_value(value: Any, hint: Any, field: dataclasses.Field, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin is tuple:
        (element_type, _ellipsis) = typing.get_args(hint)
        if not isinstance(value, list | tuple):
            raise CatalogueError(f"{where} must be a list of {element_type.__name__}")
        max_len = field.metadata.get("max_len")
        if not value or (max_len is not None and len(value) > max_len):
            raise CatalogueError(f"{where} must have between 1 and {max_len} elements")
        return tuple(_check_scalar(v, element_type, field, where) for v in value)
    return _check_scalar(value, hint, field, where)


def _check_scalar(value: Any, kind: type, field: dataclasses.Field, where: str) -> Any:
    if kind is bool:
        if not isinstance(value, bool):
            raise CatalogueError(f"{where} must be true or false, got {value!r}")
        return value
    if kind is str:
        if not isinstance(value, str):
            raise CatalogueError(f"{where} must be a string, got {value!r}")
    elif kind is int:
        if isinstance(value, bool) or not (
            isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        ):
            raise CatalogueError(f"{where} must be an integer, got {value!r}")
        value = int(value)
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise CatalogueError(f"{where} must be a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise CatalogueError(f"{where} must be a finite number, got {value!r}")
    choices = field.metadata.get("choices")
    if choices is not None and value not in choices:
        raise CatalogueError(f"{where} must be one of {', '.join(map(str, choices))}")
    low, high = field.metadata.get("range", (None, None))
    if (low is not None and value < low) or (high is not None and value > high):
        raise CatalogueError(f"{where} must be between {low} and {high}, got {value!r}")
    return value
