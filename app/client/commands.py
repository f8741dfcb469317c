"""`trainserve jobs | models | datasets`: the client commands (click; httpx and rich imported
only when a command runs, so `--help` stays fast).

Every command takes --url (TRAINSERVE_URL), --api-key (TRAINSERVE_API_KEY) and -o json. Exit
codes (app/client/errors.py): 0 succeeded, 1 the job failed, 3 cancelled, 4 --timeout passed,
2 a usage error, an unreachable server or a refused request (the server's detail is printed).
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from app.client.errors import DETACHED, JOB_EXIT_CODES, WAIT_TIMED_OUT, CliError
from app.client.output import OUTPUT_OPTION, emit_json, fields, metrics_text, show, table

JOB_FIELDS = ["id", "status", "model_name", "architecture", "dataset", "progress", "metrics"]
JOB_FIELDS += ["created_at", "started_at", "finished_at", "error", "model_version"]


class LazyOptionsCommand(click.Command):
    """A command whose generated options are built when it is used (parsed or its help shown),
    not when `trainserve` starts: building them imports pydantic and the request model."""

    def __init__(self, *args: Any, make_params: Callable[[], list[click.Parameter]], **kw: Any):
        self._make_params = make_params
        self._all: list[click.Parameter] | None = None
        super().__init__(*args, **kw)

    @property
    def params(self) -> list[click.Parameter]:
        if self._all is None:  # one list object: click appends to it and pops from it
            self._all = self._make_params() + self._declared
        return self._all

    @params.setter
    def params(self, value: list[click.Parameter]) -> None:
        self._declared, self._all = list(value), None


def client(f: Callable) -> Callable:
    """--url, --api-key and -o for a command; `f` gets a connected ApiClient as `api`."""

    @click.option(
        "--url",
        envvar="TRAINSERVE_URL",
        help="the API (env TRAINSERVE_URL; default: this machine's `trainserve serve`)",
    )
    @click.option(
        "--api-key",
        envvar="TRAINSERVE_API_KEY",
        help="env TRAINSERVE_API_KEY; default: TRAINSERVE_API_KEYS' first, or <data dir>/api_key",
    )
    @OUTPUT_OPTION
    @functools.wraps(f)
    def wrapper(url: str | None, api_key: str | None, **kwargs: Any) -> Any:
        from app.client.connection import resolve
        from app.client.http import ApiClient

        api = ApiClient(resolve(url, api_key))
        try:
            return f(api=api, **kwargs)
        finally:
            api.close()

    return wrapper


# -- jobs ------------------------------------------------------------------------------------


@click.group()
def jobs() -> None:
    """Training jobs on a running service: submit, list, get, watch, cancel, delete."""


def _submit_params() -> list[click.Parameter]:
    from app.training_flags import training_options

    return [
        click.Option(["--model-name"], help="publish the trained model under this name (a slug)"),
        *training_options(required=False),
    ]


@jobs.command(
    "submit",
    cls=LazyOptionsCommand,
    make_params=_submit_params,
    short_help="Submit a training job (flags from the request model, or --file).",
)
@click.option(
    "--file",
    "request_file",
    type=click.File("r"),
    help="the request as JSON ('-': stdin); flags given as well override its fields",
)
@click.option("--wait", is_flag=True, help="follow the job to its end; the exit code says how")
@click.option("--timeout", type=click.FloatRange(min=0), help="with --wait: give up after SECONDS")
@client
def submit(api, output, request_file, wait, timeout, **flags) -> int:
    """Submit a training job: one flag per field of the training request (as `trainserve
    train`), plus --model-name; or the JSON request of POST /v1/jobs in --file."""
    from app.training_flags import request_values

    body: dict[str, Any] = {}
    if request_file is not None:
        try:
            body = json.load(request_file)
        except json.JSONDecodeError as exc:
            raise CliError(f"--file: not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise CliError("--file: expected a JSON object (the request of POST /v1/jobs)")
    model_name = flags.pop("model_name")
    values = request_values(flags)
    if "optimizer" in values and isinstance(body.get("optimizer"), dict):
        values["optimizer"] = {**body["optimizer"], **values["optimizer"]}
    body.update(values)
    if model_name:
        body["model_name"] = model_name
    job = api.json("POST", "/v1/jobs", json=body)
    if not wait:
        show(output, job, _job_submitted)
        return 0
    if output != "json":
        sys.stderr.write(f"job {job['id']} submitted\n")
    return _wait(api, job["id"], timeout, output)


def _job_submitted(job: dict[str, Any]) -> None:
    click.echo(f"job {job['id']} {job['status']}")
    click.echo(f"follow it: trainserve jobs watch {job['id']}")


def _wait(api, job_id: str, timeout: float | None, output: str) -> int:
    from app.client.follow import WaitTimedOut, display_for, follow

    try:
        with display_for(job_id, output) as display:
            job = follow(api, job_id, timeout, display)
    except WaitTimedOut as exc:
        status = exc.job["status"] if exc.job else "unknown"
        sys.stderr.write(
            f"trainserve: job {job_id} is still {status} after {timeout:g} s; it goes on. "
            f"Re-attach with: trainserve jobs watch {job_id}\n"
        )
        if output == "json" and exc.job:
            emit_json(exc.job)
        return WAIT_TIMED_OUT
    except KeyboardInterrupt:
        sys.stderr.write(
            f"\ntrainserve: detached from job {job_id} (it goes on). "
            f"Re-attach with: trainserve jobs watch {job_id}\n"
        )
        return DETACHED
    show(output, job, _job_ended)
    return JOB_EXIT_CODES[job["status"]]


def _job_ended(job: dict[str, Any]) -> None:
    status = job["status"]
    if status == "succeeded":
        click.echo(f"job {job['id']} succeeded: model {job['model_name']} v{job['model_version']}")
        click.echo(f"metrics: {metrics_text(job.get('metrics'))}")
    elif status == "failed":
        click.echo(f"job {job['id']} failed: {job.get('error')}", err=True)
    else:
        click.echo(f"job {job['id']} {status}")


@jobs.command("list")
@click.option(
    "--status", type=click.Choice(["queued", "running", "succeeded", "failed", "cancelled"])
)
@click.option("--model-name")
@click.option("--limit", type=click.IntRange(1, 200), default=50, show_default=True)
@click.option("--offset", type=click.IntRange(min=0), default=0)
@client
def list_jobs(api, output, status, model_name, limit, offset) -> int:
    """Jobs, newest first."""
    params = {"status": status, "model_name": model_name, "limit": limit, "offset": offset}
    page = api.json("GET", "/v1/jobs", params={k: v for k, v in params.items() if v is not None})

    def render(page: dict[str, Any]) -> None:
        rows = [
            (
                j["id"],
                j["status"],
                j["model_name"],
                f"{j['progress']['epoch']}/{j['progress']['epochs']}",
                metrics_text(j.get("metrics")),
                j["created_at"],
            )
            for j in page["items"]
        ]
        table(rows, ["id", "status", "model", "epoch", "metrics", "created"])
        click.echo(f"{len(page['items'])} of {page['total']}")

    show(output, page, render)
    return 0


@jobs.command("get")
@click.argument("job_id")
@client
def get_job(api, output, job_id) -> int:
    """One job: status, progress, latest metrics, error, model version."""
    show(output, api.json("GET", f"/v1/jobs/{job_id}"), lambda j: fields(j, JOB_FIELDS))
    return 0


@jobs.command("watch")
@click.argument("job_id")
@click.option("--timeout", type=click.FloatRange(min=0), help="give up after SECONDS (exit 4)")
@client
def watch(api, output, job_id, timeout) -> int:
    """Follow a job to its end with a progress bar (plain lines when stdout is not a terminal).
    Ctrl-C detaches; the job goes on."""
    return _wait(api, job_id, timeout, output)


@jobs.command("cancel")
@click.argument("job_id")
@client
def cancel(api, output, job_id) -> int:
    """Cancel a job: a queued one never starts, a running one stops within an epoch."""
    job = api.json("POST", f"/v1/jobs/{job_id}/cancel")
    show(output, job, lambda j: click.echo(f"job {j['id']} {j['status']} (cancel requested)"))
    return 0


@jobs.command("delete")
@click.argument("job_id")
@client
def delete(api, output, job_id) -> int:
    """Delete an ended job and its records (a job that has not ended: refused, 409)."""
    api.request("DELETE", f"/v1/jobs/{job_id}")
    show(output, {"id": job_id, "deleted": True}, lambda _: click.echo(f"job {job_id} deleted"))
    return 0


# -- models ----------------------------------------------------------------------------------


@click.group()
def models() -> None:
    """Trained models: list, get, predict, download weights, aliases."""


@models.command("list")
@client
def list_models(api, output) -> int:
    """Models with at least one version."""
    items = api.json("GET", "/v1/models")
    show(
        output,
        items,
        lambda items: table(
            [(m["name"], m["latest_version"], m["task"], m["architecture"]) for m in items],
            ["name", "latest", "task", "architecture"],
        ),
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


# -- datasets --------------------------------------------------------------------------------


@click.group()
def datasets() -> None:
    """Datasets: the built-in ones and uploads."""


@datasets.command("list")
@client
def list_datasets(api, output) -> int:
    """Built-in and uploaded datasets."""
    items = api.json("GET", "/v1/datasets")
    show(
        output,
        items,
        lambda items: table(
            [
                (
                    d["name"],
                    d["task"],
                    d["n_samples"],
                    "x".join(map(str, d["input_shape"])),
                    d["source"],
                    "yes" if d["available"] else f"no: {d.get('reason')}",
                )
                for d in items
            ],
            ["name", "task", "samples", "input", "source", "available"],
        ),
    )
    return 0


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


GROUPS = {"jobs": jobs, "models": models, "datasets": datasets}
