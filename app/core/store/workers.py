"""Workers: each announces itself and its devices, and beats; the API lists the live ones
(what jobs can train on), and rows of workers long silent are forgotten."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from app.core.db import Worker
from app.core.store.base import StoreBase


class WorkersMixin(StoreBase):
    def announce_worker(self, name: str, device: str, count: int, names: list[str]) -> None:
        """Record (or refresh) a starting worker and its devices."""

        def apply(session: Session) -> None:
            session.execute(delete(Worker).where(Worker.name == name))
            session.add(
                Worker(
                    name=name,
                    device=device,
                    device_count=count,
                    device_names=names,
                    started_at=self._now(),
                    heartbeat_at=self._now(),
                )
            )

        self._run(apply)

    def worker_heartbeat(self, name: str) -> bool:
        """Refresh a worker's heartbeat; False when its row is gone (announce again)."""
        stmt = update(Worker).where(Worker.name == name).values(heartbeat_at=self._now())
        return bool(self._run(lambda s: s.execute(stmt).rowcount))

    def remove_worker(self, name: str) -> None:
        self._run(lambda s: s.execute(delete(Worker).where(Worker.name == name)))

    def live_workers(self, max_age: timedelta) -> list[Worker]:
        """Workers whose heartbeat is younger than `max_age`, by name."""
        stmt = select(Worker).where(Worker.heartbeat_at >= self._ago(max_age))
        return self._run(lambda s: list(s.scalars(stmt.order_by(Worker.name))))

    def forget_workers(self, older_than: timedelta) -> int:
        stmt = delete(Worker).where(Worker.heartbeat_at < self._ago(older_than))
        return self._run(lambda s: s.execute(stmt).rowcount)
