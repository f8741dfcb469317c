"""The model registry's models and versions: read them, mark one corrupt, delete one or all
(the rows, in one transaction; app/core/deletion.py removes the files after), and what the
sweep of weights files needs. Publishing a version: publishing.py; aliases: aliases.py."""

from __future__ import annotations

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from app.core.db import ModelAlias, ModelVersion, RegisteredModel, RegistryRevision
from app.core.errors import Conflict, NotFound
from app.core.store.base import StoreBase


def registered(session: Session, name: str) -> RegisteredModel:
    """The model's row; NotFound when it has none or no version."""
    model = session.get(RegisteredModel, name)
    if model is None or model.latest_version == 0:
        raise NotFound(f"model '{name}' does not exist")
    return model


def version_numbers(session: Session, name: str) -> list[int]:
    stmt = select(ModelVersion.version).where(ModelVersion.model_name == name)
    return list(session.scalars(stmt.order_by(ModelVersion.version)))


class ModelsMixin(StoreBase):
    def list_models(self) -> list[RegisteredModel]:
        stmt = (
            select(RegisteredModel)
            .where(RegisteredModel.latest_version > 0)
            .order_by(RegisteredModel.name)
        )
        return self._run(lambda s: list(s.scalars(stmt)))

    def get_model(self, name: str) -> tuple[RegisteredModel, list[ModelVersion]]:
        def read(session: Session):
            model = session.get(RegisteredModel, name)
            if model is None or model.latest_version == 0:
                raise NotFound(f"model '{name}' does not exist")
            stmt = select(ModelVersion).where(ModelVersion.model_name == name)
            return model, list(session.scalars(stmt.order_by(ModelVersion.version)))

        return self._run(read)

    def get_version(self, name: str, version: int | None) -> ModelVersion:
        """One version (None: the latest), read by its key: not every version of the model."""

        def read(session: Session) -> ModelVersion:
            model = registered(session, name)
            wanted = model.latest_version if version is None else version
            row = session.get(ModelVersion, (name, wanted))
            if row is None:
                stmt = select(ModelVersion.version).where(ModelVersion.model_name == name)
                stmt = stmt.order_by(ModelVersion.version)
                known = ", ".join(str(v) for v in session.scalars(stmt))
                raise NotFound(f"model '{name}' has no version {wanted}; versions: {known}")
            return row

        return self._run(read)

    def registry_revision(self) -> int:
        """A number that changes whenever models, versions or aliases change, by any process
        (bumped by database triggers, migration 0005): cached lookups compare it."""
        stmt = select(RegistryRevision.revision).where(RegistryRevision.id == 1)
        return self._run(lambda s: s.scalar(stmt)) or 0

    def mark_corrupt(self, name: str, version: int) -> None:
        stmt = (
            update(ModelVersion)
            .where(ModelVersion.model_name == name, ModelVersion.version == version)
            .values(corrupt=True)
        )
        self._run(lambda s: s.execute(stmt))
        self._registry_changed()

    def delete_version(self, name: str, version: int, force: bool = False) -> list[str]:
        """Remove one version's row; Conflict while aliases name it, unless `force`, which
        removes those aliases too (returned). Its number is never given again."""

        def apply(session: Session) -> list[str]:
            model = registered(session, name)
            if session.get(ModelVersion, (name, version)) is None:
                known = ", ".join(map(str, version_numbers(session, name)))
                raise NotFound(f"model '{name}' has no version {version}; its versions: {known}")
            aliased = select(ModelAlias.alias).where(
                ModelAlias.model_name == name, ModelAlias.version == version
            )
            aliases = sorted(session.scalars(aliased))
            if aliases and not force:
                raise Conflict(
                    f"version {version} of model '{name}' is named by alias(es) "
                    f"{', '.join(aliases)}: move or delete them first, or delete with "
                    "?force=true (which removes them too)"
                )
            session.execute(
                delete(ModelAlias).where(
                    ModelAlias.model_name == name, ModelAlias.version == version
                )
            )
            session.execute(
                delete(ModelVersion).where(
                    ModelVersion.model_name == name, ModelVersion.version == version
                )
            )
            remaining = version_numbers(session, name)
            model.latest_version = remaining[-1] if remaining else 0
            return aliases

        removed = self._run(apply)
        self._registry_changed()
        return removed

    def delete_model(self, name: str) -> list[int]:
        """Remove every version and alias of a model (returns the version numbers). The name's
        row stays, with no version (so the model is gone), keeping the numbers already given."""

        def apply(session: Session) -> list[int]:
            model = registered(session, name)
            versions = version_numbers(session, name)
            session.execute(delete(ModelAlias).where(ModelAlias.model_name == name))
            session.execute(delete(ModelVersion).where(ModelVersion.model_name == name))
            model.latest_version = 0
            return versions

        removed = self._run(apply)
        self._registry_changed()
        return removed

    def version_files_state(self) -> dict[str, tuple[int, set[int]]]:
        """Per model name: (the highest number ever given, the versions that exist). A weights
        file of a number at most the first and not in the second belongs to no version."""

        def read(session: Session) -> dict[str, tuple[int, set[int]]]:
            state = {
                name: (assigned, set())
                for name, assigned in session.execute(
                    select(RegisteredModel.name, RegisteredModel.versions_assigned)
                )
            }
            for name, version in session.execute(
                select(ModelVersion.model_name, ModelVersion.version)
            ):
                state.setdefault(name, (version, set()))[1].add(version)
            return state

        return self._run(read)
