"""What commands print: JSON for scripts (`-o json`), rich tables for people."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

import click

OUTPUT_OPTION = click.option(
    "-o",
    "--output",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="json: the server's answer as JSON on stdout, for scripts",
)


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def table(rows: Sequence[Sequence[Any]], columns: Sequence[str], title: str | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    out = Table(*columns, title=title, box=None, header_style="bold")
    for row in rows:
        out.add_row(*("" if v is None else str(v) for v in row))
    Console(soft_wrap=True).print(out)


def fields(data: dict[str, Any], names: Sequence[str] | None = None) -> None:
    """One `name: value` line per field (nested values as compact JSON)."""
    rows = [(k, _cell(data.get(k))) for k in (names or data)]
    table(rows, ["field", "value"])


def _cell(value: Any) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(", ", ": "))
    return "" if value is None else str(value)


def metrics_text(metrics: dict[str, Any] | None) -> str:
    if not metrics:
        return ""
    return " ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()
    )


def show(output: str, data: Any, render: Callable[[Any], None]) -> None:
    """`data` as JSON with -o json, else drawn by `render`."""
    if output == "json":
        emit_json(data)
    else:
        render(data)


def show_rows(
    output: str,
    items: list[dict[str, Any]],
    columns: Sequence[str],
    row: Callable[[dict[str, Any]], Sequence[Any]],
) -> None:
    """A list as JSON with -o json, else a table: `row(item)` for each item, under `columns`."""
    show(output, items, lambda items: table([row(item) for item in items], columns))
