"""Publishing: a finished job's weights become the next version of its model, the job is marked
succeeded, and its promotion rule is decided and applied, all in one transaction."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.core import promotion
from app.core.db import JobStatus, ModelAlias, ModelVersion, RegisteredModel, utcnow
from app.core.errors import LeaseLost
from app.core.store.aliases import upsert_alias
from app.core.store.base import StoreBase
from app.core.store.leases import fenced

log = logging.getLogger(__package__)  # app.core.store: one logger for the whole store


class PublishingMixin(StoreBase):
    def publish_version(
        self,
        job_id: str,
        lease: int,
        version_fields: dict[str, Any],
        write_weights: Callable[[int], tuple[str, int]],
        promote: dict[str, Any] | None = None,
    ) -> int:
        """Add the next version of a model and mark the job succeeded, in one transaction.

        `write_weights(version)` stores the file and returns (sha256, size); it runs while the
        model row is locked, so the file exists before any reader can see the version. So the
        session is idle for as long as the upload takes (an S3 outage is retried for minutes):
        PostgreSQL's limit on that (db.PG_IDLE_IN_TRANSACTION_S) is lifted for this transaction,
        whose locks are the model's row until the job's row is written, last. The
        model takes the task and architecture of its newest version (a retrain may change them).
        Version numbers are never given twice (`versions_assigned`), even after deletions.
        `promote` (the request's rule) is decided and applied in the same transaction, and the
        decision recorded on the job (`promotion`).
        """
        name, task, architecture = (
            version_fields[k] for k in ("model_name", "task", "architecture")
        )
        self._ensure_model(name, task, architecture)

        def apply(session: Session) -> int:
            if self._postgres:  # the one transaction that waits on something else: the upload
                session.execute(text("SET LOCAL idle_in_transaction_session_timeout = 0"))
            bump = (
                update(RegisteredModel)
                .where(RegisteredModel.name == name)
                .values(
                    versions_assigned=RegisteredModel.versions_assigned + 1,
                    latest_version=RegisteredModel.versions_assigned + 1,
                    task=task,
                    architecture=architecture,
                )
                .returning(RegisteredModel.versions_assigned)
            )
            version = session.execute(bump).scalar_one()
            sha256, size = write_weights(version)
            session.add(
                ModelVersion(
                    version=version, job_id=job_id, sha256=sha256, size_bytes=size, **version_fields
                )
            )
            session.flush()
            decision = None
            if promote:
                decision = self._promote(session, name, version, version_fields["metrics"], promote)
            done = fenced(job_id, lease).values(
                status=JobStatus.succeeded,
                finished_at=utcnow(),
                model_version=version,
                error=None,
                promotion=decision,
            )
            if session.execute(done).rowcount == 0:
                raise LeaseLost(job_id)
            return version

        version = self._run(apply)
        self._registry_changed()
        return version

    def _promote(
        self, session: Session, name: str, version: int, metrics: dict[str, Any], rule: dict
    ) -> dict[str, Any]:
        alias = rule["alias"]
        named = select(ModelAlias.version).where(
            ModelAlias.model_name == name, ModelAlias.alias == alias
        )
        current = session.scalar(named)
        current_metrics = None
        if current is not None:
            row = session.get(ModelVersion, (name, current))
            current_metrics = row.metrics if row is not None else None
        decision = promotion.decide(rule, version, metrics, current, current_metrics)
        if decision["moved"]:
            upsert_alias(session, name, alias, version)
        log.info("promotion of %s v%d: %s", name, version, decision["reason"])
        return decision

    def _ensure_model(self, name: str, task: str, architecture: str) -> None:
        """The model's row, created with no version when missing (the version bump sets its
        task and architecture, so an existing row is left as it is here)."""
        if self._run(lambda s: s.get(RegisteredModel, name)) is not None:
            return
        # Another job may create it at the same moment: then the row exists, all we need.
        with contextlib.suppress(IntegrityError):
            self._run(
                lambda s: s.add(RegisteredModel(name=name, task=task, architecture=architecture))
            )
