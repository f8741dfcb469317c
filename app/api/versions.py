"""Model versions resolved from memory: (model, version number or alias) -> its row.

A prediction names a model and a version reference; the row it resolves to is kept here, so
the hot path reads no database. Whatever changes models, versions or aliases, in any process,
bumps the job store's registry revision (database triggers, migration 0005); a task asks for
it every `check_s` (TRAINSERVE_REGISTRY_CHECK_MS) and forgets every resolution when it moved.
So a version published, deleted or aliased anywhere is seen within one check interval; a change
made through this process's own store (an alias set by this API) is seen at once. While the
revision is unknown (the job store is down), nothing is cached.
"""

from __future__ import annotations

import asyncio
import logging

import anyio.to_thread
from sqlalchemy.exc import SQLAlchemyError

from app.core.db import ModelVersion
from app.core.store import JobStore

log = logging.getLogger(__name__)

Ref = int | str | None
MAX_ENTRIES = 4096  # resolutions kept (only of versions that exist); beyond, all are dropped


class VersionCache:
    def __init__(self, store: JobStore, check_s: float) -> None:
        self.store = store
        self.check_s = check_s
        self.revision: int | None = None
        self._rows: dict[tuple[str, Ref], ModelVersion] = {}
        self._generation = 0  # bumped by forget(): a lookup begun before is not kept
        self.checks = 0
        store.registry_listeners.append(self.forget)  # this process's own changes: at once

    def cached(self, name: str, ref: Ref) -> ModelVersion | None:
        return self._rows.get((name, ref))

    async def resolve(self, name: str, ref: Ref) -> ModelVersion:
        """The row `ref` names: from memory, else read (in a thread) and kept while the
        registry revision has not moved meanwhile."""
        row = self._rows.get((name, ref))
        if row is not None:
            return row
        before = (self.revision, self._generation)
        row = await anyio.to_thread.run_sync(self.store.resolve_version, name, ref)
        if before[0] is not None and (self.revision, self._generation) == before:
            if len(self._rows) >= MAX_ENTRIES:
                self._rows.clear()
            self._rows[(name, ref)] = row
        return row

    def forget(self) -> None:
        """Drop every resolution (called from any thread: the store's listeners)."""
        self._generation += 1
        self._rows.clear()

    async def check(self) -> None:
        """Read the registry revision; forget every resolution when it moved."""
        try:
            revision = await anyio.to_thread.run_sync(self.store.registry_revision)
        except SQLAlchemyError as exc:  # the job store is down: cache nothing until it is back
            if self.revision is not None:
                log.warning("registry revision unknown (%s); version lookups are not cached", exc)
            self.revision = None
            self._rows.clear()
            return
        self.checks += 1
        if revision != self.revision:
            self._rows.clear()
            self.revision = revision

    async def run(self) -> None:
        """Check every `check_s` until cancelled."""
        while True:
            await self.check()
            await asyncio.sleep(self.check_s)
