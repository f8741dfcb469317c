"""What every part of the job store shares: the session factory and its retried transactions,
the store's clock, and the registry's listeners."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from sqlalchemy import func
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from app.core.db import utcnow

T = TypeVar("T")
log = logging.getLogger(__package__)  # app.core.store: one logger for the whole store


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _connection_lost(exc: DBAPIError) -> bool:
    """The transaction never happened, so running it again is safe: the connection was dropped
    or refused (a restart, a failover, SQLite busy), or the server ended a session left idle
    in its transaction (db.PG_IDLE_IN_TRANSACTION_S) while this process was frozen."""
    return isinstance(exc, (OperationalError, InterfaceError)) or exc.connection_invalidated


class StoreBase:
    """`retry_seconds`: how long a transaction is retried (with backoff) when the database
    drops or refuses the connection (a restart, a failover); workers wait longer than the API,
    so that an outage never fails a job."""

    def __init__(self, session_factory: sessionmaker, retry_seconds: float = 2.0) -> None:
        self._sessions = session_factory
        self.retry_seconds = retry_seconds
        bind = session_factory.kw.get("bind")
        self._postgres = bind is not None and bind.dialect.name == "postgresql"
        # Called after this store changed models, versions or aliases (another process's
        # changes are seen through registry_revision): the API forgets its resolved versions.
        self.registry_listeners: list[Callable[[], None]] = []

    def _registry_changed(self) -> None:
        for listener in self.registry_listeners:
            listener()

    def _run(self, work: Callable[[Session], T]) -> T:
        delay, deadline = 0.05, None
        while True:
            try:
                with self._sessions.begin() as session:
                    return work(session)
            except DBAPIError as exc:
                if not _connection_lost(exc):
                    raise
                # Counted from the first failure: a process that was frozen for a while (and
                # lost its session for it) still gets its full retry time on waking.
                deadline = deadline or time.monotonic() + self.retry_seconds
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("job store: %s; retrying in %.2f s", _first_line(exc), delay)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def _now(self) -> Any:
        """The database's clock where hosts share the database (PostgreSQL), so that workers'
        clocks never decide whether a job is alive; SQLite is on one machine, with one clock."""
        return func.clock_timestamp() if self._postgres else utcnow()

    def _ago(self, delta: timedelta) -> Any:
        return func.clock_timestamp() - delta if self._postgres else utcnow() - delta
