"""Shared fixtures: those of tests/app (a fresh data dir, SQLite, memory broker, known key)."""

from __future__ import annotations

from tests.app.conftest import (  # noqa: F401 - fixtures, registered by import
    _clean_env,
    classifier_model,
    client,
    house_model,
    sent,
    services,
    settings,
)
