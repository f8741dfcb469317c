"""The `trainserve` command (click): the servers (serve, api, worker, db), `train` here, and the
client of a running service (jobs, models, datasets: app/client/). Heavy imports (torch,
FastAPI, httpx) happen inside the commands that need them, so `trainserve --help` is fast."""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path

import click

from app.client.commands import GROUPS, LazyOptionsCommand

log = logging.getLogger("trainserve")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="trainserve", prog_name="trainserve")
def cli() -> None:
    """trainserve: train PyTorch models and serve their predictions.

    Servers: serve (API + a worker, embedded defaults), api, worker, db. Here: train.
    Client of a running service: jobs, models, datasets (--url / TRAINSERVE_URL,
    --api-key / TRAINSERVE_API_KEY; -o json for scripts).

    Exit codes: 0 succeeded, 1 the job failed, 3 cancelled, 4 a wait timed out, 2 a usage
    error, an unreachable server or a request the server refused.
    """


for _name, _group in GROUPS.items():
    cli.add_command(_group, _name)


def _train_params() -> list[click.Parameter]:
    from app.training_flags import training_options

    return [
        *training_options(required=True),
        click.Option(["--data-dir"], type=click.Path(path_type=Path), default=Path(".trainserve")),
        click.Option(
            ["--out"], type=click.Path(path_type=Path), help="write the weights (.safetensors)"
        ),
    ]


@cli.command(
    cls=LazyOptionsCommand,
    make_params=_train_params,
    short_help="Train a model here, with a progress bar.",
)
def train(data_dir: Path, out: Path | None, **flags) -> int:
    """Train a model in this process (no service): one flag per field of the training
    request."""
    _setup()
    from app.training_flags import training_request
    from models.callbacks import ProgressBar
    from models.errors import (
        CatalogueError,
        DataFormatError,
        DatasetUnavailableError,
        DivergedError,
    )
    from models.training import run_training

    try:
        config = training_request(flags)
    except click.ClickException as exc:
        sys.stderr.write(f"trainserve train: {exc.message}\n")
        return 2
    try:
        result = run_training(config, data_dir=data_dir, callbacks=[ProgressBar()])
    except (
        CatalogueError,
        DataFormatError,
        DatasetUnavailableError,
        DivergedError,
        ValueError,
    ) as exc:
        sys.stderr.write(f"trainserve train: {exc}\n")
        return 2
    metrics = result.final_metrics
    _echo("final metrics (held-out): " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    if out:
        out.write_bytes(result.weights())
        _echo(f"weights written to {out}")
    return 0


def _echo(line: str) -> None:
    """Command-line output for the person at the terminal (service code logs instead)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _announce(settings) -> None:
    from app.api.auth import key_file, load_or_create_api_keys

    _keys, generated = load_or_create_api_keys(settings)
    url = f"http://{settings.host}:{settings.port}"
    _echo(f"trainserve API on {url}  (docs: {url}/docs)")
    if generated:
        _echo(f"API key (generated, kept in {key_file(settings)}): {generated}")
    elif settings.keys:
        _echo("API keys: from TRAINSERVE_API_KEYS")
    else:
        _echo(f"API key: in {key_file(settings)}")


@cli.command("api")
@click.option(
    "--processes",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="uvicorn processes on the one port (GET /metrics sums them all)",
)
def api_command(processes: int) -> int:
    """The HTTP API alone (uvicorn)."""
    return api(processes=processes)


def api(supervisor=None, processes: int = 1) -> int:
    settings = _setup()
    if supervisor is None:  # `serve` prepared it before starting its worker
        _metrics_dir(settings)
    _check_database(settings)  # before importing the app (torch and all: seconds)
    if processes > 1:
        from app.api.server import serve_processes

        _announce(settings)  # makes the key file once, before the processes start
        serve_processes(settings, processes)
        return 0

    from app.api import threads

    threads.before_torch()  # the OpenMP wait policy is read when torch loads
    from app.api.main import create_app
    from app.api.server import serve

    threads.set_torch_threads(settings)
    _announce(settings)
    app = create_app(settings)
    app.state.worker_supervisor = supervisor  # `serve`'s own worker, for /readyz
    serve(app, settings)  # uvicorn, with deadlines for slow clients
    return 0


@cli.command()
@click.option("--concurrency", type=click.IntRange(min=1), default=1, help="jobs at once")
@click.option("--queues", default="training", show_default=True, help="comma-separated queues")
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    help="serve this worker's Prometheus metrics on this port (a worker on another host)",
)
@click.option("--metrics-host", default="0.0.0.0", show_default=True, help="with --metrics-port")
def worker(concurrency: int, queues: str, metrics_port: int | None, metrics_host: str) -> int:
    """A Celery worker taking training jobs."""
    settings = _setup()
    import torch

    from app.core import metrics
    from workers.celery_app import celery_app

    metrics.worker_started(concurrency, "cuda" if torch.cuda.is_available() else "cpu")
    if metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, addr=metrics_host)
        log.info("worker metrics on http://%s:%d/metrics", metrics_host, metrics_port)

    settings.make_dirs()
    _check_database(settings)

    # solo / threads pools run jobs inside this process, so a SIGTERM reaches the running job
    # (it checkpoints and goes back to the queue); a crash of a job takes the worker with it,
    # and the reaper re-sends the job.
    pool = "solo" if concurrency == 1 else "threads"
    celery_app.worker_main(
        [
            "worker",
            f"--pool={pool}",
            f"--concurrency={concurrency}",
            f"--queues={queues}",
            "--loglevel=INFO",
            "--without-gossip",
            "--without-mingle",
        ]
    )
    return 0


@cli.command()
def serve() -> int:
    """The API and one worker on embedded defaults (in a child; Ctrl-C or SIGTERM stops both)."""
    settings = _setup()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    _check_database(settings)  # migrates the embedded default once, before the worker starts
    from app.core.supervisor import WorkerSupervisor

    _metrics_dir(settings)  # before the worker starts: it writes its metrics there too
    supervisor = WorkerSupervisor([sys.executable, "-m", "app.cli", "worker"], os.environ.copy())
    supervisor.start()  # a worker that dies (out of memory, kill -9) is started again
    # uvicorn shuts down cleanly on SIGINT/SIGTERM, then re-raises the signal to the handler
    # that was installed before it: ours, which unwinds to the `finally` that stops the worker.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _raise_stop)
    try:
        api(supervisor)
    except _Stop:
        pass
    finally:
        supervisor.stop()
    return 0


class _Stop(Exception):
    pass


def _raise_stop(_signum, _frame) -> None:
    raise _Stop


def _metrics_dir(settings) -> None:
    """prometheus-client's multiprocess mode, in <data dir>/prometheus emptied now: every
    process of this API (and `serve`'s worker) adds to GET /metrics. Before any import of
    prometheus_client."""
    from app.core.metrics_dir import use_multiprocess_dir

    use_multiprocess_dir(settings.metrics_dir)


def _check_database(settings) -> None:
    """Apply pending migrations where this process does that itself (the embedded default,
    TRAINSERVE_AUTO_MIGRATE), then refuse to start unless the job store is at head: a message,
    rather than a traceback from inside uvicorn or a failing first task."""
    from app.core import migrate
    from app.core.db import make_engine

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.effective_database_url)
    try:
        if migrate.upgrades_itself(settings):
            migrate.upgrade(engine)
        migrate.check_current(engine)
    except migrate.DatabaseBehind as exc:
        raise SystemExit(f"trainserve: {exc}") from None
    finally:
        engine.dispose()


@cli.group()
def db() -> None:
    """The job store's schema: upgrade | current | downgrade."""


@db.command("upgrade")
def db_upgrade() -> int:
    """Apply pending migrations (to head)."""
    return _db("upgrade")


@db.command("current")
def db_current() -> int:
    """The database's revision, and whether it is head."""
    return _db("current")


@db.command("downgrade")
@click.argument("revision")
def db_downgrade(revision: str) -> int:
    """Migrate down to REVISION (base: no tables)."""
    return _db("downgrade", revision)


def _db(command: str, revision: str | None = None) -> int:
    """`trainserve db upgrade | current | downgrade REVISION` on the configured job store."""
    settings = _setup()
    from sqlalchemy.exc import OperationalError

    from app.core import migrate
    from app.core.db import make_engine

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.effective_database_url)
    where = engine.url.render_as_string(hide_password=True)
    try:
        before, head = migrate.current_revision(engine), migrate.head_revision()
        if command == "current":
            state = "head" if before == head else f"not head: this code needs {head}"
            _echo(f"{where}: {before or 'none'} ({state})")
            return 0
        if command == "upgrade":
            migrate.upgrade(engine)
        else:
            migrate.downgrade(engine, revision)
        _echo(f"{where}: {before or 'none'} -> {migrate.current_revision(engine) or 'none'}")
        return 0
    except migrate.CommandError as exc:
        raise SystemExit(f"trainserve db: {exc}") from None
    except OperationalError as exc:
        raise SystemExit(f"trainserve db: the job store at {where}: {exc.orig}") from None
    finally:
        engine.dispose()


def _setup():
    """The settings (validated: a message, not a traceback) and logging, for the commands that
    run the service's code here."""
    from pydantic import ValidationError

    from app.core.settings import get_settings

    try:
        settings = get_settings()
    except ValidationError as exc:
        raise SystemExit(f"trainserve: invalid TRAINSERVE_* settings:\n{exc}") from None
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return settings


def main(argv: list[str] | None = None) -> int:
    """The exit code of the command (see `trainserve --help`)."""
    try:
        code = cli.main(args=argv, prog_name="trainserve", standalone_mode=False)
    except click.exceptions.Exit as exc:  # --help, --version
        return exc.exit_code
    except click.ClickException as exc:  # usage errors (2), refused requests (CliError)
        exc.show()
        return exc.exit_code
    except click.Abort:
        sys.stderr.write("trainserve: aborted\n")
        return 130
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
