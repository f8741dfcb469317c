"""The `trainserve` command: train | serve | api | worker."""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

log = logging.getLogger("trainserve")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trainserve", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a model here, with a progress bar")
    _add_training_arguments(train)

    commands.add_parser("serve", help="the API and one worker on embedded defaults")
    commands.add_parser("api", help="the HTTP API alone (uvicorn)")

    worker = commands.add_parser("worker", help="a Celery worker taking training jobs")
    worker.add_argument("--concurrency", type=int, default=1, help="jobs at once (default 1)")
    worker.add_argument("--queues", default="training", help="comma-separated queues")
    return parser


def _add_training_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--architecture", required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an architecture parameter (JSON value), repeatable",
    )
    p.add_argument(
        "--dataset-param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a dataset parameter (JSON value), repeatable",
    )
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--loss", default=None, help="default: mse or cross_entropy by task")
    p.add_argument("--optimizer", default="adam")
    p.add_argument("--lr", type=float, default=0.001)
    p.add_argument("--momentum", type=float, default=0.0)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--eval-every", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--lr-schedule", choices=["none", "step", "cosine"], default=None)
    p.add_argument("--grad-clip-norm", type=float, default=None)
    p.add_argument("--early-stopping-patience", type=int, default=None)
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA only)")
    p.add_argument("--data-dir", type=Path, default=Path(".trainserve"))
    p.add_argument("--out", type=Path, default=None, help="write the weights (.safetensors)")


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


def train(args: argparse.Namespace) -> int:
    from models.callbacks import ProgressBar
    from models.errors import CatalogueError, DataFormatError, DatasetUnavailableError
    from models.training import OptimizerConfig, TrainingConfig, run_training

    config = TrainingConfig(
        architecture=args.architecture,
        dataset=args.dataset,
        architecture_params=_parse_pairs(args.param, "--param"),
        dataset_params=_parse_pairs(args.dataset_param, "--dataset-param"),
        test_fraction=args.test_fraction,
        loss=args.loss,
        optimizer=OptimizerConfig(args.optimizer, args.lr, args.momentum, args.weight_decay),
        epochs=args.epochs,
        batch_size=args.batch_size,
        eval_every=args.eval_every,
        seed=args.seed,
        device=args.device,
        lr_schedule=args.lr_schedule,
        grad_clip_norm=args.grad_clip_norm,
        early_stopping_patience=args.early_stopping_patience,
        bf16=args.bf16,
    )
    try:
        result = run_training(config, data_dir=args.data_dir, callbacks=[ProgressBar()])
    except (CatalogueError, DataFormatError, DatasetUnavailableError, ValueError) as exc:
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


def _check_exposure(settings) -> None:
    """Refuse to listen beyond loopback with no configured keys."""
    try:
        loopback = ipaddress.ip_address(settings.host).is_loopback
    except ValueError:
        loopback = settings.host == "localhost"
    if not loopback and not settings.keys:
        raise SystemExit(
            f"refusing to listen on {settings.host} without configured keys: "
            "set TRAINSERVE_API_KEYS (comma-separated) or listen on 127.0.0.1"
        )


def _announce(settings) -> None:
    from app.auth import key_file, load_or_create_api_keys

    _keys, generated = load_or_create_api_keys(settings)
    url = f"http://{settings.host}:{settings.port}"
    _echo(f"trainserve API on {url}  (docs: {url}/docs)")
    if generated:
        _echo(f"API key (generated, kept in {key_file(settings)}): {generated}")
    elif settings.keys:
        _echo("API keys: from TRAINSERVE_API_KEYS")
    else:
        _echo(f"API key: in {key_file(settings)}")


def api(_args: argparse.Namespace) -> int:
    import uvicorn

    from app.main import create_app
    from app.settings import get_settings

    settings = get_settings()
    _check_exposure(settings)
    _announce(settings)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
    )
    return 0


def worker(args: argparse.Namespace) -> int:
    from app.settings import get_settings
    from workers.celery_app import celery_app

    get_settings().make_dirs()

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
    from app.settings import get_settings

    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    _check_exposure(settings)
    child = subprocess.Popen([sys.executable, "-m", "app.cli", "worker"], env=os.environ.copy())
    # uvicorn shuts down cleanly on SIGINT/SIGTERM, then re-raises the signal to the handler
    # that was installed before it: ours, which unwinds to the `finally` that stops the worker.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _raise_stop)
    try:
        api(_args)
    except _Stop:
        pass
    finally:
        _stop(child)
    return 0


class _Stop(Exception):
    pass


def _raise_stop(_signum, _frame) -> None:
    raise _Stop


def _stop(child: subprocess.Popen, timeout: float = 30.0) -> None:
    if child.poll() is not None:
        return
    child.send_signal(signal.SIGTERM)
    try:
        child.wait(timeout)
    except subprocess.TimeoutExpired:
        log.warning("worker did not stop within %.0f s; killing it", timeout)
        child.kill()
        child.wait()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from pydantic import ValidationError

    from app.settings import get_settings

    try:
        settings = get_settings()
    except ValidationError as exc:
        raise SystemExit(f"trainserve: invalid TRAINSERVE_* settings:\n{exc}") from None
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    handlers = {"train": train, "serve": serve, "api": api, "worker": worker}
    return handlers[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
