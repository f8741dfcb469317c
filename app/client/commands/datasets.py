"""`trainserve datasets`: the built-in ones and uploads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from app.client.commands.options import client
from app.client.output import show, show_rows


@click.group()
def datasets() -> None:
    """Datasets: the built-in ones and uploads."""


@datasets.command("list")
@client
def list_datasets(api, output) -> int:
    """Built-in and uploaded datasets."""
    items = api.json("GET", "/v1/datasets")
    show_rows(output, items, ["name", "task", "samples", "input", "source", "available"], _row)
    return 0


def _row(d: dict[str, Any]) -> tuple:
    return (
        d["name"],
        d["task"],
        d["n_samples"],
        "x".join(map(str, d["input_shape"])),
        d["source"],
        "yes" if d["available"] else f"no: {d.get('reason')}",
    )


@datasets.command("upload")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", required=True, help="the dataset's name (a slug)")
@click.option("--target", help="the target column (CSV)")
@click.option("--task", type=click.Choice(["regression", "classification"]))
@client
def upload(api, output, path, name, target, task) -> int:
    """Upload a CSV (with --target) or NPZ file as a dataset."""
    form = {"name": name, "target": target, "task": task}
    form = {k: v for k, v in form.items() if v is not None}
    with path.open("rb") as handle:
        entry = api.json("POST", "/v1/datasets", data=form, files={"file": (path.name, handle)})
    show(
        output,
        entry,
        lambda d: click.echo(f"dataset {d['name']}: {d['task']}, {d['n_samples']} samples"),
    )
    return 0
