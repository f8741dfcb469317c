"""Uploaded datasets' rows: add, read, list, count the holders of one content hash, delete
(the row; app/core/deletion.py removes the file after, when no other dataset holds it)."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.core.db import Job, JobStatus, UploadedDataset
from app.core.errors import Conflict, NotFound
from app.core.store.base import StoreBase


class DatasetsMixin(StoreBase):
    def add_dataset(self, row: UploadedDataset) -> UploadedDataset:
        try:
            self._run(lambda s: s.add(row))
        except IntegrityError:
            raise Conflict(f"dataset '{row.name}' already exists; choose another name") from None
        return row

    def dataset_uses(self, sha256: str) -> int:
        """How many uploaded datasets hold the content of this hash."""
        stmt = (
            select(func.count())
            .select_from(UploadedDataset)
            .where(UploadedDataset.sha256 == sha256)
        )
        return self._run(lambda s: s.scalar(stmt))

    def get_dataset(self, name: str) -> UploadedDataset | None:
        return self._run(lambda s: s.get(UploadedDataset, name))

    def list_datasets(self) -> list[UploadedDataset]:
        stmt = select(UploadedDataset).order_by(UploadedDataset.name)
        return self._run(lambda s: list(s.scalars(stmt)))

    def delete_dataset(self, name: str) -> tuple[UploadedDataset, bool]:
        """Remove an uploaded dataset's row; Conflict while a queued or running job uses it.
        Returns the row and whether another dataset still holds the same content."""

        def apply(session: Session) -> tuple[UploadedDataset, bool]:
            row = session.get(UploadedDataset, name)
            if row is None:
                raise NotFound(f"uploaded dataset '{name}' does not exist")
            users = select(Job.id).where(
                Job.dataset == name, Job.status.in_([JobStatus.queued, JobStatus.running])
            )
            using = list(session.scalars(users.limit(5)))
            if using:
                raise Conflict(
                    f"dataset '{name}' is used by queued or running job(s) {', '.join(using)}; "
                    "delete it once they have ended (or cancel them)"
                )
            session.delete(row)
            session.flush()
            shared = select(func.count()).select_from(UploadedDataset)
            still = session.scalar(shared.where(UploadedDataset.sha256 == row.sha256)) > 0
            return row, still

        return self._run(apply)

    def dataset_hashes(self) -> set[str]:
        return set(self._run(lambda s: list(s.scalars(select(UploadedDataset.sha256)))))
