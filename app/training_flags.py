"""`trainserve train`'s flags, generated from models.request.TrainingRequest: one flag per
field (the optimizer's fields flattened), so a field added to the request is a flag here too."""

from __future__ import annotations

import argparse
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any

# Flags whose names are not the field's own (kept from the first releases of the command).
FLAG_NAMES = {"architecture_params": "--param", "dataset_params": "--dataset-param"}


def add_training_arguments(p: argparse.ArgumentParser) -> None:
    """One flag per field of models.request.TrainingRequest (the optimizer's fields flattened:
    --optimizer NAME --lr ... --momentum ... --betas B1,B2), so a field added there is here."""
    from models.request import OPTIMIZER_CLASSES, TrainingRequest

    for name, info in TrainingRequest.model_fields.items():
        if name == "optimizer":
            names = [cls.model_fields["name"].annotation.__args__[0] for cls in OPTIMIZER_CLASSES]
            p.add_argument("--optimizer", choices=names, help="default: adam")
            continue
        _add_field_flag(p, FLAG_NAMES.get(name, "--" + name.replace("_", "-")), name, info)
    seen: set[str] = set()
    for cls in OPTIMIZER_CLASSES:
        for name, info in cls.model_fields.items():
            if name != "name" and name not in seen:
                seen.add(name)
                users = [c.__name__.lower() for c in OPTIMIZER_CLASSES if name in c.model_fields]
                users = ", ".join(users)
                _add_field_flag(p, "--" + name.replace("_", "-"), f"optimizer.{name}", info, users)
    p.add_argument("--data-dir", type=Path, default=Path(".trainserve"))
    p.add_argument("--out", type=Path, default=None, help="write the weights (.safetensors)")


def _add_field_flag(
    p: argparse.ArgumentParser, flag: str, dest: str, info, used_by: str = ""
) -> None:
    """A flag for one pydantic field; its value stays unset (None) unless given, so the
    model's own default applies."""
    annotation = info.annotation
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    base = (
        args[0] if typing.get_origin(annotation) in (typing.Union, types.UnionType) else annotation
    )
    choices = typing.get_args(base) if typing.get_origin(base) is typing.Literal else None
    default = None if info.is_required() else info.get_default(call_default_factory=True)
    help_text = (info.description or "") + (f" ({used_by})" if used_by else "")
    if default not in (None, {}, []):
        help_text += f" (default: {default})"
    kwargs: dict[str, Any] = {"dest": dest, "default": None, "help": help_text}
    if base is bool:
        p.add_argument(flag, action="store_true", **kwargs)
    elif typing.get_origin(base) is dict:
        p.add_argument(flag, action="append", metavar="NAME=VALUE", **kwargs)
        kwargs["help"] += "; a JSON value, repeatable"
    elif typing.get_origin(base) is list:
        p.add_argument(flag, type=_float_list, metavar="V1,V2", **kwargs)
    elif choices:
        p.add_argument(flag, choices=choices, **kwargs)
    else:
        p.add_argument(flag, type=base, required=info.is_required(), **kwargs)


def _float_list(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected numbers separated by commas: {text!r}"
        ) from None


def _parse_pairs(pairs: list[str], flag: str) -> dict:
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"{flag} expects NAME=VALUE, got {pair!r}")
        try:
            out[name] = json.loads(value)
        except json.JSONDecodeError:
            out[name] = value
    return out


def training_request(args: argparse.Namespace):
    """The TrainingRequest the flags describe (pydantic's errors, one per line, otherwise)."""
    from pydantic import ValidationError

    from models.request import TrainingRequest, field_path

    values: dict[str, Any] = {}
    optimizer: dict[str, Any] = {}
    for dest, value in vars(args).items():
        if value is None or value is False:
            continue
        if dest.startswith("optimizer."):
            optimizer[dest.split(".", 1)[1]] = value
        elif dest == "optimizer":
            optimizer["name"] = value
        elif dest in TrainingRequest.model_fields:
            values[dest] = _parse_pairs(value, FLAG_NAMES[dest]) if dest in FLAG_NAMES else value
    if optimizer:
        values["optimizer"] = optimizer
    try:
        return TrainingRequest.model_validate(values)
    except ValidationError as exc:
        lines = [f"  {'.'.join(field_path(e['loc']))}: {e['msg']}" for e in exc.errors()]
        sys.stderr.write("trainserve train: invalid options:\n" + "\n".join(lines) + "\n")
        raise SystemExit(2) from None
