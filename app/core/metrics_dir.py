"""prometheus-client's multiprocess mode: where the processes of one API write their metrics.
Apart from app/core/metrics.py because it must run before prometheus_client is imported."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def use_multiprocess_dir(directory: Path) -> None:
    """Empty `directory` and make this process (and the children it starts) write their
    metrics there. Call before anything imports prometheus_client (app.core.metrics too)."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)
    os.environ[MULTIPROC_ENV] = str(directory)


def multiprocess() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


def process_dead(pid: int) -> None:
    """A process that wrote metrics here has exited: its live gauges no longer count."""
    if multiprocess():
        from prometheus_client import multiprocess as mp

        mp.mark_process_dead(pid)
