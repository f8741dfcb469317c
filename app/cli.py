"""The `trainserve` command: train | serve | api | worker."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from app.training_flags import add_training_arguments, training_request

log = logging.getLogger("trainserve")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trainserve", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a model here, with a progress bar")
    add_training_arguments(train)

    commands.add_parser("serve", help="the API and one worker on embedded defaults")
    commands.add_parser("api", help="the HTTP API alone (uvicorn)")

    worker = commands.add_parser("worker", help="a Celery worker taking training jobs")
    worker.add_argument("--concurrency", type=int, default=1, help="jobs at once (default 1)")
    worker.add_argument("--queues", default="training", help="comma-separated queues")

    db = commands.add_parser("db", help="the job store's schema: upgrade | current | downgrade")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    db_commands.add_parser("upgrade", help="apply pending migrations (to head)")
    db_commands.add_parser("current", help="the database's revision, and whether it is head")
    down = db_commands.add_parser("downgrade", help="migrate down to REVISION (base: no tables)")
    down.add_argument("revision")
    return parser


def train(args: argparse.Namespace) -> int:
    from models.callbacks import ProgressBar
    from models.errors import (
        CatalogueError,
        DataFormatError,
        DatasetUnavailableError,
        DivergedError,
    )
    from models.training import run_training

    config = training_request(args)
    try:
        result = run_training(config, data_dir=args.data_dir, callbacks=[ProgressBar()])
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
    if args.out:
        args.out.write_bytes(result.weights())
        _echo(f"weights written to {args.out}")
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


def api(_args: argparse.Namespace, supervisor=None) -> int:
    from app.core.settings import get_settings

    settings = get_settings()
    _check_database(settings)  # before importing the app (torch and all: seconds)

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


def worker(args: argparse.Namespace) -> int:
    from app.core.settings import get_settings
    from workers.celery_app import celery_app

    settings = get_settings()
    settings.make_dirs()
    _check_database(settings)

    # solo / threads pools run jobs inside this process, so a SIGTERM reaches the running job
    # (it checkpoints and goes back to the queue); a crash of a job takes the worker with it,
    # and the reaper re-sends the job.
    pool = "solo" if args.concurrency == 1 else "threads"
    celery_app.worker_main(
        [
            "worker",
            f"--pool={pool}",
            f"--concurrency={args.concurrency}",
            f"--queues={args.queues}",
            "--loglevel=INFO",
            "--without-gossip",
            "--without-mingle",
        ]
    )
    return 0


def serve(_args: argparse.Namespace) -> int:
    """API in this process, one worker in a child; Ctrl-C or SIGTERM stops both."""
    from app.core.settings import get_settings

    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    _check_database(settings)  # migrates the embedded default once, before the worker starts
    from app.core.supervisor import WorkerSupervisor

    supervisor = WorkerSupervisor([sys.executable, "-m", "app.cli", "worker"], os.environ.copy())
    supervisor.start()  # a worker that dies (out of memory, kill -9) is started again
    # uvicorn shuts down cleanly on SIGINT/SIGTERM, then re-raises the signal to the handler
    # that was installed before it: ours, which unwinds to the `finally` that stops the worker.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _raise_stop)
    try:
        api(_args, supervisor)
    except _Stop:
        pass
    finally:
        supervisor.stop()
    return 0


class _Stop(Exception):
    pass


def _raise_stop(_signum, _frame) -> None:
    raise _Stop


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


def db(args: argparse.Namespace) -> int:
    """`trainserve db upgrade | current | downgrade REVISION` on the configured job store."""
    from sqlalchemy.exc import OperationalError

    from app.core import migrate
    from app.core.db import make_engine
    from app.core.settings import get_settings

    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.effective_database_url)
    where = engine.url.render_as_string(hide_password=True)
    try:
        before, head = migrate.current_revision(engine), migrate.head_revision()
        if args.db_command == "current":
            state = "head" if before == head else f"not head: this code needs {head}"
            _echo(f"{where}: {before or 'none'} ({state})")
            return 0
        if args.db_command == "upgrade":
            migrate.upgrade(engine)
        else:
            migrate.downgrade(engine, args.revision)
        _echo(f"{where}: {before or 'none'} -> {migrate.current_revision(engine) or 'none'}")
        return 0
    except migrate.CommandError as exc:
        raise SystemExit(f"trainserve db: {exc}") from None
    except OperationalError as exc:
        raise SystemExit(f"trainserve db: the job store at {where}: {exc.orig}") from None
    finally:
        engine.dispose()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
    handlers = {"train": train, "serve": serve, "api": api, "worker": worker, "db": db}
    return handlers[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
