"""Aliases: user-chosen names of a model's versions (`production`); set, moved, removed, and
resolved (a number, an alias, or the default) to the version they name."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from app.core.db import ModelAlias, ModelVersion
from app.core.errors import NotFound
from app.core.names import shown
from app.core.store.base import StoreBase
from app.core.store.models import registered

DEFAULT_ALIAS = "production"  # the version a prediction without `version` gets, when set


def upsert_alias(session: Session, name: str, alias: str, version: int) -> None:
    """Point the alias at the version: one INSERT ... ON CONFLICT DO UPDATE."""
    dialect = session.get_bind().dialect.name
    insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
    upsert = insert(ModelAlias).values(model_name=name, alias=alias, version=version)
    session.execute(
        upsert.on_conflict_do_update(
            index_elements=[ModelAlias.model_name, ModelAlias.alias],
            set_={"version": version},
        )
    )


def no_alias(session: Session, name: str, alias: str) -> str:
    """The message of a NotFound for an alias the model does not have, naming those it has."""
    stmt = select(ModelAlias.alias).where(ModelAlias.model_name == name)
    known = ", ".join(sorted(session.scalars(stmt))) or "none"
    return f"model '{name}' has no alias {shown(alias)}; its aliases: {known}"


class AliasesMixin(StoreBase):
    def aliases(self, name: str) -> dict[str, int]:
        """The model's aliases and the version each names, by alias."""
        stmt = (
            select(ModelAlias.alias, ModelAlias.version)
            .where(ModelAlias.model_name == name)
            .order_by(ModelAlias.alias)
        )
        return self._run(lambda s: {alias: version for alias, version in s.execute(stmt)})

    def set_alias(self, name: str, alias: str, version: int) -> None:
        """Point `alias` at `version` of model `name`: made, or moved from the version it named.

        One upsert, so that concurrent calls leave the alias at one of their versions (the last
        to commit). The version is checked in the same transaction, and a foreign key to it
        makes an alias of a version that does not exist impossible whatever the caller."""

        def apply(session: Session) -> None:
            model = registered(session, name)
            found = select(ModelVersion.version).where(
                ModelVersion.model_name == name, ModelVersion.version == version
            )
            if session.scalar(found) is None:
                raise NotFound(
                    f"model '{name}' has no version {version}; its versions are 1 to "
                    f"{model.latest_version}"
                )
            upsert_alias(session, name, alias, version)

        self._run(apply)
        self._registry_changed()

    def delete_alias(self, name: str, alias: str) -> None:
        """Remove the alias; NotFound naming the model's aliases when it has no such alias."""

        def apply(session: Session) -> None:
            registered(session, name)
            stmt = delete(ModelAlias).where(
                ModelAlias.model_name == name, ModelAlias.alias == alias
            )
            if session.execute(stmt).rowcount == 0:
                raise NotFound(no_alias(session, name, alias))

        self._run(apply)
        self._registry_changed()

    def resolve_version(self, name: str, ref: int | str | None) -> ModelVersion:
        """The version that `ref` names: a version number, an alias, or None: the version of
        the alias DEFAULT_ALIAS (`production`) when the model has it, else the latest. Read in
        one transaction, so an alias moved meanwhile gives its old or its new version."""

        def read(session: Session) -> ModelVersion:
            model = registered(session, name)
            if isinstance(ref, int):
                version = ref
            else:
                aliased = select(ModelAlias.version).where(
                    ModelAlias.model_name == name, ModelAlias.alias == (ref or DEFAULT_ALIAS)
                )
                version = session.scalar(aliased)
                if version is None and ref is not None:
                    raise NotFound(no_alias(session, name, ref))
                if version is None:
                    version = model.latest_version
            row = session.get(ModelVersion, (name, version))
            if row is None:
                raise NotFound(
                    f"model '{name}' has no version {version}; its versions are 1 to "
                    f"{model.latest_version}"
                )
            return row

        return self._run(read)
