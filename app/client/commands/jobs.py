"""`trainserve jobs`: submit, list, get, watch, cancel, delete. The exit code of a command that
waits says how the job ended (app/client/errors.py)."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from app.client.commands.options import LazyOptionsCommand, client
from app.client.errors import DETACHED, JOB_EXIT_CODES, WAIT_TIMED_OUT, CliError
from app.client.output import emit_json, fields, metrics_text, show, table

JOB_FIELDS = ["id", "status", "model_name", "architecture", "dataset", "progress", "metrics"]
JOB_FIELDS += ["created_at", "started_at", "finished_at", "error", "model_version"]


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
