"""Fixtures shared by every suite."""

from __future__ import annotations

import pytest

from tests.e2e.processes import postgres_database
from tests.e2e.s3 import CREDENTIALS, moto_s3


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    """The URL of an empty database: a SQLite file, then a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'jobs.db'}"
        return
    with postgres_database() as url:
        yield url


@pytest.fixture(scope="session")
def s3():
    """An S3 server (moto's server mode) on a loopback port, spoken to over HTTP; a test may
    stop it, and the next test that asks for it finds it started again."""
    with moto_s3() as server:
        yield server


@pytest.fixture
def aws_env(monkeypatch):
    """The AWS credential chain's environment variables, set to the test server's keys."""
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
