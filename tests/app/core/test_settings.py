"""Settings: the exposure guard lives in validation (so every way of starting the API has it)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.core.settings import Settings


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "::", "example.org"])
def test_a_public_address_needs_configured_keys(host, tmp_path):
    with pytest.raises(ValidationError, match="TRAINSERVE_API_KEYS"):
        Settings(host=host, data_dir=tmp_path)
    assert Settings(host=host, data_dir=tmp_path, api_keys="k1,k2").keys == ["k1", "k2"]


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.0.1", "::1", "localhost"])
def test_loopback_needs_no_keys(host, tmp_path):
    assert Settings(host=host, data_dir=tmp_path).keys == []


def test_the_guard_reads_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("TRAINSERVE_HOST", "0.0.0.0")
    monkeypatch.delenv("TRAINSERVE_API_KEYS", raising=False)
    with pytest.raises(ValidationError, match="refusing to listen on 0.0.0.0"):
        Settings(data_dir=tmp_path)
