"""The job store's migrations (app.core.migrate) on SQLite and PostgreSQL: an empty database
and one that create_all built before migrations reach head, the migrated schema is the models'
schema, downgrade and upgrade again, concurrent upgrades, and the refusal to start on a
database that is behind."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
from concurrent.futures import ProcessPoolExecutor

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, make_url, text

from app.core import migrate
from app.core.db import Base, make_engine, make_session_factory
from app.core.migrate import DatabaseBehind
from app.core.store import JobStore
from tests.e2e.processes import TRAINSERVE, free_port

REQUEST = {"model_name": "m", "architecture": "mlp", "dataset": "diabetes", "epochs": 3}
TABLES = {
    "jobs",
    "job_evaluations",
    "job_checkpoints",
    "models",
    "model_versions",
    "datasets",
    "model_aliases",
    "workers",
    "registry_revision",
}


@pytest.fixture
def engine(database_url):
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


def tables(engine) -> set[str]:
    return set(inspect(engine).get_table_names()) - {migrate.VERSION_TABLE}


def test_an_empty_database_upgrades_to_head_and_the_store_works(engine):
    assert migrate.current_revision(engine) is None
    migrate.upgrade(engine)
    assert tables(engine) == TABLES
    assert migrate.current_revision(engine) == migrate.head_revision()
    store = JobStore(make_session_factory(engine))
    job, created = store.create_job(REQUEST, idempotency_key="k")
    assert created and store.get_job(job.id).status == "queued"
    again, created = store.create_job(REQUEST, idempotency_key="k")
    assert again.id == job.id and not created


def test_a_database_from_create_all_is_stamped_and_keeps_its_rows(engine):
    """What create_all built before migrations existed: the tables of revision 0001; stamped
    at 0001, then the later revisions add theirs."""
    migrate.upgrade(engine)  # revision 0001's tables, as create_all made them, no revision
    migrate.downgrade(engine, migrate.LEGACY_REVISION)
    with engine.begin() as connection:
        connection.exec_driver_sql(f"DROP TABLE {migrate.VERSION_TABLE}")
    assert tables(engine) == set(migrate.LEGACY_TABLES)
    job, _ = JobStore(make_session_factory(engine)).create_job(REQUEST)
    migrate.upgrade(engine)
    assert migrate.current_revision(engine) == migrate.head_revision()
    assert JobStore(make_session_factory(engine)).get_job(job.id).model_name == "m"
    assert tables(engine) == TABLES


def test_a_database_with_only_some_of_the_tables_is_not_touched(engine):
    Base.metadata.tables["jobs"].create(engine)
    with pytest.raises(RuntimeError, match="not created by trainserve"):
        migrate.upgrade(engine)
    assert tables(engine) == {"jobs"} and migrate.current_revision(engine) is None


def test_the_migrated_schema_is_the_models_schema(engine):
    """Autogenerate finds nothing to do: the migrations build exactly the tables of
    app.core.db (types, nullability, indexes, unique and foreign keys)."""
    migrate.upgrade(engine)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


def test_downgrade_one_step_and_upgrade_again(engine):
    migrate.upgrade(engine)
    head = migrate.head_revision()
    previous = ScriptDirectory.from_config(migrate._config()).get_revision(head).down_revision
    migrate.downgrade(engine, previous or "base")
    assert migrate.current_revision(engine) == previous
    if previous is None:
        assert tables(engine) == set()
    if previous == migrate.LEGACY_REVISION:  # 0002 added model_aliases, and only that
        assert tables(engine) == set(migrate.LEGACY_TABLES)
    migrate.upgrade(engine)
    assert migrate.current_revision(engine) == head
    assert tables(engine) == TABLES


def _upgrade_in_a_process(url: str, barrier) -> str | None:
    engine = make_engine(url)
    barrier.wait(60)
    migrate.upgrade(engine)
    return migrate.current_revision(engine)


def test_concurrent_upgrades_of_an_empty_database_all_succeed(database_url):
    """As when an API and a worker that migrate themselves start at the same moment: one
    migrates, the others wait for its lock and find the database at head."""
    n = 3
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, ProcessPoolExecutor(n, mp_context=context) as pool:
        barrier = manager.Barrier(n)
        revisions = list(pool.map(_upgrade_in_a_process, [database_url] * n, [barrier] * n))
    assert revisions == [migrate.head_revision()] * n


def test_check_current_names_the_command_and_hides_the_password(database_url):
    url = make_url(database_url)
    if url.get_backend_name() == "postgresql" and url.password is None:
        url = url.set(password="s3cret")  # the local server's trust auth ignores it
    engine = make_engine(url.render_as_string(hide_password=False))
    with pytest.raises(DatabaseBehind, match="trainserve db upgrade") as behind:
        migrate.check_current(engine)
    assert "not migrated" in str(behind.value)
    if engine.url.password:
        assert engine.url.password not in str(behind.value) and "***" in str(behind.value)
    migrate.upgrade(engine)
    migrate.check_current(engine)
    engine.dispose()


def test_check_current_refuses_a_revision_it_does_not_know(engine):
    migrate.upgrade(engine)
    with engine.begin() as connection:
        connection.execute(text(f"UPDATE {migrate.VERSION_TABLE} SET version_num = 'f00d'"))
    with pytest.raises(DatabaseBehind, match="revision f00d, which this code does not know"):
        migrate.check_current(engine)


def trainserve(*args: str, env: dict[str, str], timeout: float = 120):
    return subprocess.run(
        [TRAINSERVE, *args], env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize("command", ["api", "worker"])
def test_api_and_worker_refuse_a_database_that_is_behind(tmp_path, command):
    database = tmp_path / "empty.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINSERVE_")}
    env |= {
        "TRAINSERVE_DATABASE_URL": f"sqlite:///{database}",
        "TRAINSERVE_DATA_DIR": str(tmp_path / "data"),
        "TRAINSERVE_PORT": str(free_port()),
    }
    refused = trainserve(command, env=env, timeout=60)
    assert refused.returncode != 0
    assert "run `trainserve db upgrade`" in refused.stderr and str(database) in refused.stderr
    assert "Traceback" not in refused.stderr

    upgraded = trainserve("db", "upgrade", env=env)
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"none -> {migrate.head_revision()}" in upgraded.stdout
    current = trainserve("db", "current", env=env)
    assert current.returncode == 0, current.stderr
    assert f"{migrate.head_revision()} (head)" in current.stdout


def test_db_downgrade_to_base_and_a_bad_revision(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINSERVE_")}
    env["TRAINSERVE_DATA_DIR"] = str(tmp_path)  # the embedded default: SQLite in the data dir
    assert trainserve("db", "upgrade", env=env).returncode == 0
    down = trainserve("db", "downgrade", "base", env=env)
    assert down.returncode == 0, down.stderr
    assert f"{migrate.head_revision()} -> none" in down.stdout
    bad = trainserve("db", "downgrade", "nope", env=env)
    assert bad.returncode != 0 and "nope" in bad.stderr and "Traceback" not in bad.stderr
    assert "(not head" in trainserve("db", "current", env=env).stdout
