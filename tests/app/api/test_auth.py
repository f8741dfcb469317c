"""API keys: configured or generated (0600, reused), Bearer on every /v1 route, 401s."""

from __future__ import annotations

import stat

import pytest
from fastapi.testclient import TestClient

from app.api.auth import key_file, load_or_create_api_keys, match_key, owner_of
from app.api.main import create_app
from tests.app.conftest import KEY, make_settings

V1_ROUTES = [
    ("GET", "/v1/architectures"),
    ("GET", "/v1/datasets"),
    ("POST", "/v1/datasets"),
    ("GET", "/v1/jobs"),
    ("POST", "/v1/jobs"),
    ("GET", "/v1/jobs/abc"),
    ("GET", "/v1/jobs/abc/metrics"),
    ("GET", "/v1/jobs/abc/events"),
    ("POST", "/v1/jobs/abc/cancel"),
    ("GET", "/v1/models"),
    ("GET", "/v1/models/m"),
    ("POST", "/v1/models/m/predict"),
    ("GET", "/v1/models/m/versions/1/weights"),
]


@pytest.mark.parametrize(("method", "path"), V1_ROUTES)
@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong-key"}, {"Authorization": f"Basic {KEY}"}],
    ids=["missing", "wrong", "not-bearer"],
)
def test_v1_routes_need_a_valid_key(client: TestClient, method, path, headers):
    client.headers.pop("Authorization")
    response = client.request(method, path, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "API key" in response.json()["detail"]


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/docs", "/openapi.json"])
def test_public_routes_need_no_key(client: TestClient, path):
    client.headers.pop("Authorization")
    assert client.get(path).status_code == 200


def test_any_configured_key_is_accepted(tmp_path):
    settings = make_settings(tmp_path, api_keys=" one , two ,")
    with TestClient(create_app(settings)) as client:
        for key in ("one", "two"):
            response = client.get("/v1/jobs", headers={"Authorization": f"Bearer {key}"})
            assert response.status_code == 200
        assert (
            client.get("/v1/jobs", headers={"Authorization": "Bearer one,two"}).status_code == 401
        )
    assert not key_file(settings).exists()


def test_generated_key_is_kept_0600_and_reused(tmp_path):
    settings = make_settings(tmp_path, api_keys="")
    keys, generated = load_or_create_api_keys(settings)
    assert keys == [generated] and len(generated) >= 40
    path = key_file(settings)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_api_keys(settings) == ([generated], None)  # a restart reads it
    with TestClient(create_app(settings)) as client:
        ok = client.get("/v1/jobs", headers={"Authorization": f"Bearer {generated}"})
        assert ok.status_code == 200
        assert client.get("/v1/jobs", headers={"Authorization": "Bearer x"}).status_code == 401


def test_configured_keys_win_over_the_file(tmp_path):
    settings = make_settings(tmp_path, api_keys="")
    load_or_create_api_keys(settings)
    configured = make_settings(tmp_path, api_keys="k1")
    assert load_or_create_api_keys(configured) == (["k1"], None)


def test_match_key_and_owner():
    assert match_key("b", ["a", "b"]) == "b"
    assert match_key("c", ["a", "b"]) is None
    assert match_key("", ["a"]) is None
    assert owner_of("a") == owner_of("a") != owner_of("b")
    assert len(owner_of("a")) == 16


def test_openapi_declares_bearer_security(client: TestClient):
    doc = client.get("/openapi.json").json()
    schemes = doc["components"]["securitySchemes"]
    assert any(s["type"] == "http" and s["scheme"] == "bearer" for s in schemes.values())
    assert doc["paths"]["/v1/jobs"]["post"]["security"]
    assert "security" not in doc["paths"]["/healthz"]["get"]
