"""`trainserve models`: list, get, predict, download weights, aliases."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from app.client.commands.options import client
from app.client.errors import CliError
from app.client.output import metrics_text, show, show_rows, table


@click.group()
def models() -> None:
    """Trained models: list, get, predict, download weights, aliases."""


@models.command("list")
@client
def list_models(api, output) -> int:
    """Models with at least one version."""
    items = api.json("GET", "/v1/models")
    show_rows(
        output,
        items,
        ["name", "latest", "task", "architecture"],
        lambda m: (m["name"], m["latest_version"], m["task"], m["architecture"]),
    )
    return 0


@models.command("get")
@click.argument("name")
@click.option("--version", help="a version number or an alias")
@client
def get_model(api, output, name, version) -> int:
    """A model, its aliases and versions."""
    params = {"version": version} if version else {}
    model = api.json("GET", f"/v1/models/{name}", params=params)

    def render(m: dict[str, Any]) -> None:
        aliases = ", ".join(f"{a}={v}" for a, v in m["aliases"].items()) or "none"
        click.echo(f"{m['name']}: {m['task']} {m['architecture']}, aliases: {aliases}")
        rows = [
            (v["version"], metrics_text(v["metrics"]), v["size_bytes"], v["job_id"])
            for v in m["versions"]
        ]
        table(rows, ["version", "metrics", "bytes", "job"])

    show(output, model, render)
    return 0


@models.command("predict")
@click.argument("name")
@click.option(
    "--input",
    "source",
    type=click.File("r"),
    default="-",
    show_default=True,
    help="samples: JSON (a list, or {\"inputs\": [...]}) or CSV rows of numbers; '-': stdin",
)
@click.option("--version", help="a version number or an alias (default: production, else latest)")
@client
def predict(api, output, name, source, version) -> int:
    """Predict samples read from a JSON or CSV file, or stdin."""
    inputs = read_inputs(source.read(), getattr(source, "name", "-"))
    params = {"version": version} if version else {}
    answer = api.json("POST", f"/v1/models/{name}/predict", params=params, json={"inputs": inputs})

    def render(a: dict[str, Any]) -> None:
        classes = a.get("classes")
        rows = []
        for i, prediction in enumerate(a["predictions"]):
            row = [i, prediction]
            if classes:
                row += [classes[prediction], f"{max(a['probabilities'][i]):.3f}"]
            rows.append(row)
        columns = ["sample", "prediction"] + (["class", "probability"] if classes else [])
        table(rows, columns, title=f"{a['model_name']} v{a['version']}")

    show(output, answer, render)
    return 0


def read_inputs(text: str, source: str) -> list[Any]:
    """Samples from JSON (a list of samples, or {"inputs": [...]}) or CSV (one sample a row; a
    first row that is not numbers is a header)."""
    stripped = text.strip()
    if not stripped:
        raise CliError(f"{source}: no samples (expected JSON or CSV)")
    if stripped[0] in "[{":
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise CliError(f"{source}: not JSON: {exc}") from None
        if isinstance(data, dict):
            if "inputs" not in data:
                raise CliError(f'{source}: a JSON object needs "inputs"')
            data = data["inputs"]
        if not isinstance(data, list):
            raise CliError(f"{source}: expected a list of samples")
        return data
    import csv
    import io

    rows = [row for row in csv.reader(io.StringIO(stripped)) if row]
    samples = []
    for number, row in enumerate(rows, 1):
        try:
            samples.append([float(v) for v in row])
        except ValueError:
            if number == 1:
                continue  # a header
            raise CliError(f"{source}: line {number}: not all numbers: {row}") from None
    return samples


FORMATS = {"safetensors": "safetensors", "onnx": "onnx", "pt2": "pt2"}


@models.command("download")
@click.argument("name")
@click.option("--format", "fmt", type=click.Choice(list(FORMATS)), default="safetensors")
@click.option("--version", help="a version number or an alias (default: production, else latest)")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="default: from server")
@client
def download(api, output, name, fmt, version, out) -> int:
    """Download a version's weights (safetensors; onnx and pt2 where the server exports them)."""
    params = {"format": fmt, **({"version": version} if version else {})}
    try:
        response = api.request("GET", f"/v1/models/{name}/weights", params=params)
    except CliError as exc:
        if "no route GET" not in exc.message:
            raise
        if fmt != "safetensors":
            raise CliError(
                f"the service at {api.url} cannot export {fmt} (it has no GET "
                "/v1/models/{name}/weights); download safetensors instead"
            ) from None
        # a server before GET /v1/models/{name}/weights: its per-version route
        ref = version or _default_version(api, name)
        response = api.request("GET", f"/v1/models/{name}/versions/{ref}/weights")
    if out is None:
        out = Path(_filename(response) or f"{name}.{FORMATS[fmt]}")
    partial = out.with_name(out.name + ".part")
    partial.write_bytes(response.content)
    partial.replace(out)
    etag = response.headers.get("etag", "").strip('"')
    result = {"path": str(out), "bytes": out.stat().st_size, "format": fmt, "sha256": etag or None}
    show(output, result, lambda r: click.echo(f"{r['path']} ({r['bytes']} bytes, {fmt})"))
    return 0


def _default_version(api, name: str) -> int:
    model = api.json("GET", f"/v1/models/{name}")
    return model["aliases"].get("production", model["latest_version"])


def _filename(response) -> str | None:
    disposition = response.headers.get("content-disposition", "")
    _, sep, rest = disposition.partition('filename="')
    name = rest.split('"', 1)[0] if sep else ""
    return Path(name).name if name and Path(name).name not in (".", "..") else None


@models.command("alias")
@click.argument("name")
@click.argument("alias")
@click.argument("version", type=click.IntRange(min=1), required=False)
@click.option("--delete", "remove", is_flag=True, help="remove the alias (its version stays)")
@client
def alias(api, output, name, alias, version, remove) -> int:
    """Point ALIAS of model NAME at VERSION (or remove it with --delete)."""
    if remove:
        api.request("DELETE", f"/v1/models/{name}/aliases/{alias}")
        result = {"model_name": name, "alias": alias, "deleted": True}
        show(output, result, lambda _: click.echo(f"{name}: alias {alias} removed"))
        return 0
    if version is None:
        raise click.UsageError("VERSION is required (or --delete)")
    result = api.json("PUT", f"/v1/models/{name}/aliases/{alias}", json={"version": version})
    show(output, result, lambda r: click.echo(f"{name}: {alias} -> v{r['version']}"))
    return 0
