"""Exit codes scripts can trust, and the one error type that carries them."""

from __future__ import annotations

import sys

import click

SUCCEEDED = 0
FAILED = 1  # the job failed
USAGE = 2  # a usage error, a server that cannot be reached, a request the server refused
CANCELLED = 3  # the job was cancelled
WAIT_TIMED_OUT = 4  # --timeout passed before the job ended
DETACHED = 130  # Ctrl-C during a wait: the job goes on

JOB_EXIT_CODES = {"succeeded": SUCCEEDED, "failed": FAILED, "cancelled": CANCELLED}


class CliError(click.ClickException):
    """A message for the person at the terminal (`trainserve: ...` on stderr, no traceback)
    and the exit code."""

    def __init__(self, message: str, exit_code: int = USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file=None) -> None:
        (file or sys.stderr).write(f"trainserve: {self.message}\n")
