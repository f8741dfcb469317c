"""Command-line flags generated from models.request.TrainingRequest: one flag per field (the
optimizer's fields flattened), so a field added to the request is a flag of `trainserve train`
and of `trainserve jobs submit` too. Click options; no torch import (models.request has none)."""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Mapping
from typing import Any

import click

# Flags whose names are not the field's own (kept from the first releases of the command).
FLAG_NAMES = {"architecture_params": "--param", "dataset_params": "--dataset-param"}


def training_options(required: bool = True) -> list[click.Option]:
    """One option per field of TrainingRequest (the optimizer's fields flattened: --optimizer
    NAME --lr ... --momentum ... --betas B1,B2). `required=False` leaves even the request's
    required fields optional (`jobs submit --file` may give them)."""
    from models.request import OPTIMIZER_CLASSES, TrainingRequest

    options: list[click.Option] = []
    for name, info in TrainingRequest.model_fields.items():
        if name == "optimizer":
            names = [cls.model_fields["name"].annotation.__args__[0] for cls in OPTIMIZER_CLASSES]
            options.append(
                click.Option(["--optimizer"], type=click.Choice(names), help="default: adam")
            )
            continue
        flag = FLAG_NAMES.get(name, "--" + name.replace("_", "-"))
        options.append(field_option(flag, name, info, required=required))
    seen: set[str] = set()
    for cls in OPTIMIZER_CLASSES:
        for name, info in cls.model_fields.items():
            if name != "name" and name not in seen:
                seen.add(name)
                users = ", ".join(
                    c.__name__.lower() for c in OPTIMIZER_CLASSES if name in c.model_fields
                )
                flag = "--" + name.replace("_", "-")
                options.append(field_option(flag, f"optimizer.{name}", info, users, required))
    return options


def field_option(
    flag: str, dest: str, info: Any, used_by: str = "", required: bool = True
) -> click.Option:
    """An option for one pydantic field; its value stays unset (None) unless given, so the
    model's own default applies."""
    annotation = info.annotation
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    base = args[0] if union else annotation
    choices = typing.get_args(base) if typing.get_origin(base) is typing.Literal else None
    default = None if info.is_required() else info.get_default(call_default_factory=True)
    help_text = (info.description or "") + (f" ({used_by})" if used_by else "")
    if default not in (None, {}, []):
        help_text += f" (default: {default})"
    decls = [flag, _identifier(dest)]
    if base is bool:
        return click.Option(decls, is_flag=True, default=None, help=help_text)
    if typing.get_origin(base) is dict:
        return click.Option(
            decls,
            multiple=True,
            metavar="NAME=VALUE",
            help=help_text + "; a JSON value, repeatable",
        )
    if typing.get_origin(base) is list:
        return click.Option(decls, metavar="V1,V2", callback=_float_list, help=help_text)
    if choices:
        return click.Option(decls, type=click.Choice(choices), help=help_text)
    return click.Option(decls, type=base, required=required and info.is_required(), help=help_text)


def _identifier(dest: str) -> str:
    """Click's name for a field's parameter (no dots): optimizer.lr -> optimizer__lr."""
    return dest.replace(".", "__")


def _float_list(_ctx, param, text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise click.BadParameter(f"expected numbers separated by commas: {text!r}") from None


def _parse_pairs(pairs: typing.Iterable[str], flag: str) -> dict:
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise click.UsageError(f"{flag} expects NAME=VALUE, got {pair!r}")
        try:
            out[name] = json.loads(value)
        except json.JSONDecodeError:
            out[name] = value
    return out


def request_values(params: Mapping[str, Any]) -> dict[str, Any]:
    """The request fields the flags in `params` (click's values) set, as a JSON-able dict;
    unset flags are left out so the model's (or the server's) defaults apply."""
    from models.request import TrainingRequest

    values: dict[str, Any] = {}
    optimizer: dict[str, Any] = {}
    for key, value in params.items():
        if value is None or value is False or value == ():
            continue
        if key.startswith("optimizer__"):
            optimizer[key.split("__", 1)[1]] = value
        elif key == "optimizer":
            optimizer["name"] = value
        elif key in TrainingRequest.model_fields:
            values[key] = _parse_pairs(value, FLAG_NAMES[key]) if key in FLAG_NAMES else value
    if optimizer:
        values["optimizer"] = optimizer
    return values


def training_request(params: Mapping[str, Any]):
    """The TrainingRequest the flags describe; a usage error (exit 2) listing pydantic's errors,
    one per line, otherwise."""
    from pydantic import ValidationError

    from models.request import TrainingRequest, field_path

    try:
        return TrainingRequest.model_validate(request_values(params))
    except ValidationError as exc:
        lines = [f"  {'.'.join(field_path(e['loc']))}: {e['msg']}" for e in exc.errors()]
        raise InvalidOptions("invalid options:\n" + "\n".join(lines)) from None


class InvalidOptions(click.ClickException):
    exit_code = 2
