"""Schema migrations of the job store (Alembic, configured here: there is no alembic.ini).

`upgrade` is safe to run from several processes at once: each takes a lock (PostgreSQL: an
advisory lock; SQLite: a write transaction) and only then reads the revision, so the second
one finds the schema at head and does nothing. A database that `Base.metadata.create_all`
built before migrations existed (the tables, no alembic_version) is stamped at revision 0001,
which is that schema, and keeps its rows.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine

from app.core.settings import Settings

# Importing Alembic logs one INFO line per built-in autogenerate plugin: noise at every start.
logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)

from alembic import command  # noqa: E402
from alembic.config import Config  # noqa: E402
from alembic.script import ScriptDirectory  # noqa: E402
from alembic.util import CommandError  # noqa: E402, F401 - a bad revision name, for callers

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
UPGRADE_COMMAND = "trainserve db upgrade"
VERSION_TABLE = "alembic_version"  # Alembic's default; env.py does not change it
# What create_all built before there were migrations: revision 0001 is exactly these tables.
LEGACY_REVISION = "0001"
LEGACY_TABLES = frozenset({"jobs", "job_evaluations", "models", "model_versions", "datasets"})
# pg_advisory_xact_lock key held while migrating (any constant that no other code uses).
PG_LOCK_KEY = 0x7472_6169_6E73_6572  # "trainser"


class DatabaseBehind(Exception):
    """The database's schema revision is not the one this code needs."""


def upgrades_itself(settings: Settings) -> bool:
    """Whether a process applies pending migrations at start-up: on the embedded default
    (SQLite in the data dir, which nobody else migrates) or when TRAINSERVE_AUTO_MIGRATE is set;
    otherwise the operator runs `trainserve db upgrade`."""
    return settings.database_url is None or settings.auto_migrate


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(_config())


def head_revision() -> str:
    return _scripts().get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The database's revision; None for an empty database (or one from before migrations).
    Read directly: a MigrationContext would log two lines at INFO on every check."""
    with engine.connect() as connection:
        if not inspect(connection).has_table(VERSION_TABLE):
            return None
        return connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()


def upgrade(engine: Engine, revision: str = "head") -> None:
    if revision == "head" and current_revision(engine) == head_revision():
        return  # the common case, without taking the lock
    with _locked(engine) as connection:
        config = _config(connection)
        _stamp_if_legacy(connection, config)
        command.upgrade(config, revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Down to `revision` ("base": no tables at all). Drops what later revisions added."""
    with _locked(engine) as connection:
        command.downgrade(_config(connection), revision)


def check_current(engine: Engine) -> None:
    """Raise DatabaseBehind unless the database is at this code's head revision."""
    current, head = current_revision(engine), head_revision()
    if current == head:
        return
    where = engine.url.render_as_string(hide_password=True)
    known = {script.revision for script in _scripts().walk_revisions()}
    if current is not None and current not in known:
        raise DatabaseBehind(
            f"the job store at {where} is at revision {current}, which this code does not know "
            f"(a newer trainserve migrated it?); this code needs {head}"
        )
    state = f"at revision {current}" if current else "not migrated (no schema revision)"
    raise DatabaseBehind(
        f"the job store at {where} is {state}, this code needs {head}: run `{UPGRADE_COMMAND}`"
    )


def _stamp_if_legacy(connection: Connection, config: Config) -> None:
    tables = set(inspect(connection).get_table_names())
    if VERSION_TABLE in tables or not tables & LEGACY_TABLES:
        return
    missing = LEGACY_TABLES - tables
    if missing:
        raise RuntimeError(
            f"the job store has some of trainserve's tables but not {sorted(missing)}, and no "
            "schema revision: it was not created by trainserve; refusing to migrate it"
        )
    log.info("job store created before migrations: stamping it at revision %s", LEGACY_REVISION)
    command.stamp(config, LEGACY_REVISION)


@contextmanager
def _locked(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction that holds the migration lock until it commits; all of
    one upgrade, DDL included (on SQLite too, inside this BEGIN), commits or rolls back
    together."""
    with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_LOCK_KEY})
        elif connection.dialect.name == "sqlite":
            # pysqlite would not begin a transaction before DDL; this one also locks out other
            # writers (they wait, up to the busy timeout) until it commits.
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        yield connection
        connection.commit()
