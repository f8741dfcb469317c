"""Following a job to its end (`jobs submit --wait`, `jobs watch`): the event stream, polling
when it drops, a rich progress bar on a terminal and plain lines otherwise.

The stream is read in a thread that hands jobs to the waiting one through a queue, so the wait
keeps its deadline (--timeout) and Ctrl-C reaches it at once; the job is never cancelled."""

from __future__ import annotations

import contextlib
import logging
import queue
import sys
import threading
import time
from typing import Any

import httpx

from app.client.errors import CliError
from app.client.http import ApiClient
from app.client.output import metrics_text

log = logging.getLogger(__name__)

TERMINAL = {"succeeded", "failed", "cancelled"}
POLL_S = 1.0
_END = object()  # the stream ended or dropped


class WaitTimedOut(Exception):
    def __init__(self, job: dict[str, Any] | None) -> None:
        self.job = job


def follow(api: ApiClient, job_id: str, timeout: float | None, display) -> dict[str, Any]:
    """The job once it has ended; WaitTimedOut after `timeout` seconds; KeyboardInterrupt on
    Ctrl-C. Every state seen goes to `display.update(job)`."""
    deadline = None if timeout is None else time.monotonic() + timeout
    jobs: queue.Queue = queue.Queue()
    reader = threading.Thread(target=_read_stream, args=(api, job_id, jobs), daemon=True)
    reader.start()
    job: dict[str, Any] | None = None
    while True:  # the stream, till it ends
        try:
            item = jobs.get(timeout=_left(deadline, job))
        except queue.Empty:
            raise WaitTimedOut(job) from None
        if isinstance(item, CliError):
            raise item
        if item is _END:
            break
        job = item
        display.update(job)
        if job["status"] in TERMINAL:
            return job
    if job is None or job["status"] not in TERMINAL:
        display.note("the event stream ended early; polling instead")
    unreachable = False
    while True:  # polling
        try:
            job = api.json("GET", f"/v1/jobs/{job_id}")
        except CliError as exc:
            if "cannot reach" not in exc.message:
                raise
            if not unreachable:  # said once, until it answers again
                display.note(f"{exc.message}; trying again every {POLL_S:g} s")
            unreachable = True
        else:
            unreachable = False
            display.update(job)
            if job["status"] in TERMINAL:
                return job
        time.sleep(min(POLL_S, _left(deadline, job)))


def _left(deadline: float | None, job) -> float:
    if deadline is None:
        return 3600.0
    left = deadline - time.monotonic()
    if left <= 0:
        raise WaitTimedOut(job)
    return left


def _read_stream(api: ApiClient, job_id: str, jobs: queue.Queue) -> None:
    try:
        for job in api.events(job_id):
            jobs.put(job)
    except CliError as exc:
        # 429 (too many streams open with this key) is no reason to give up: poll instead
        jobs.put(_END if exc.message.startswith("429") else exc)
        return
    except (httpx.HTTPError, ValueError) as exc:
        log.debug("job %s: the event stream dropped: %s", job_id, exc)
    jobs.put(_END)


class PlainLines:
    """A line whenever status, epoch or metrics change (stdout not a terminal, or -o json)."""

    def __init__(self, job_id: str, stream=None) -> None:
        self.job_id = job_id
        self.stream = stream or sys.stdout
        self.last: tuple | None = None

    def __enter__(self) -> PlainLines:
        return self

    def __exit__(self, *exc) -> None:
        pass

    def update(self, job: dict[str, Any]) -> None:
        progress = job.get("progress") or {}
        state = (job["status"], progress.get("epoch"), str(job.get("metrics")))
        if state == self.last:
            return
        self.last = state
        line = f"job {self.job_id}: {job['status']}"
        if progress.get("epochs"):
            line += f" epoch {progress.get('epoch', 0)}/{progress['epochs']}"
        text = metrics_text(job.get("metrics"))
        self.write(f"{line} {text}".rstrip())

    def note(self, text: str) -> None:
        self.write(f"job {self.job_id}: {text}")

    def write(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()


class ProgressBar:
    """rich's progress bar: epoch/epochs, the latest metrics, elapsed time and ETA."""

    def __init__(self, job_id: str) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.table import Column

        self.job_id = job_id
        self.progress = Progress(  # fixed widths; the metrics get the rest of the line, cut
            TextColumn("[bold]{task.description}", table_column=Column(width=9, no_wrap=True)),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn(
                "{task.fields[metrics]}",
                table_column=Column(ratio=1, no_wrap=True, overflow="ellipsis"),
            ),
            expand=True,
        )
        self.task = self.progress.add_task("queued", total=None, metrics="")

    def __enter__(self) -> ProgressBar:
        self.progress.console.print(f"job {self.job_id}")
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        with contextlib.suppress(Exception):
            self.progress.stop()

    def update(self, job: dict[str, Any]) -> None:
        progress = job.get("progress") or {}
        self.progress.update(
            self.task,
            description=job["status"],
            total=progress.get("epochs") or None,
            completed=progress.get("epoch", 0),
            metrics=metrics_text(job.get("metrics")),
        )

    def note(self, text: str) -> None:
        self.progress.console.print(f"job {self.job_id}: {text}")


def display_for(job_id: str, output: str):
    """The bar on a terminal; plain lines otherwise (on stderr with -o json: stdout is data)."""
    if output == "json":
        return PlainLines(job_id, sys.stderr)
    if sys.stdout.isatty():
        return ProgressBar(job_id)
    return PlainLines(job_id)
