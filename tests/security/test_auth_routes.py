"""Every /v1 route and method needs the API key (ShadowRay: an API that runs jobs, open to whoever
reaches it). The cases come from the app's own route table, so a new route is covered by being
added; the key is checked before the request's body is read."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.api.main import create_app, iter_routes
from tests.app.conftest import KEY, make_settings

PUBLIC = {"/healthz", "/readyz", "/metrics", "/docs", "/docs/oauth2-redirect", "/redoc"}
PUBLIC |= {"/openapi.json", "/", "/dashboard"}
SAMPLE_PARAMS = {"version": "1"}  # path parameters: "x" unless named here

# Only the route table is read here: no lifespan runs, nothing is written.
_APP = create_app(make_settings(Path(tempfile.gettempdir()) / "trainserve-route-table"))
ROUTES = sorted(
    (method, route.path)
    for route in iter_routes(_APP)
    for method in (getattr(route, "methods", None) or ())
)
V1 = [(method, path) for method, path in ROUTES if path == "/v1" or path.startswith("/v1/")]
OPEN = [(method, path) for method, path in ROUTES if (method, path) not in V1]


def concrete(path: str) -> str:
    return re.sub(r"{(\w+)(:\w+)?}", lambda m: SAMPLE_PARAMS.get(m.group(1), "x"), path)


@pytest.fixture(scope="module")
def anonymous(tmp_path_factory):
    app = create_app(make_settings(tmp_path_factory.mktemp("auth-routes")))
    with TestClient(app) as client:  # no key
        yield client


def test_the_route_table_is_found():
    assert len(V1) >= 13 and ("POST", "/v1/jobs") in V1
    assert ("GET", "/healthz") in OPEN


def test_only_known_routes_are_public():
    assert {path for _, path in OPEN} <= PUBLIC, "a route outside /v1 is reachable without a key"


@pytest.mark.parametrize(("method", "path"), V1, ids=[f"{m} {p}" for m, p in V1])
@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-key", f"Basic {KEY}", "Bearer", f"bearer{KEY}", f"Bearer {KEY}x"],
    ids=["missing", "wrong", "basic", "empty", "no-space", "longer"],
)
def test_every_v1_route_and_method_needs_the_key(anonymous, method, path, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    # A body that would be refused (or spooled to disk) if it were read: the key comes first.
    response = anonymous.request(
        method,
        concrete(path),
        headers=headers | {"Content-Type": "application/json"},
        content=b"{not json" if method in ("POST", "PUT", "PATCH") else None,
    )
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "API key" in response.json()["detail"]


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"])
def test_other_methods_and_unknown_v1_paths_need_the_key_too(anonymous, method):
    for path in ("/v1/jobs", "/v1/nowhere", "/v1"):
        assert anonymous.request(method, path).status_code == 401


def test_the_key_opens_every_v1_route(tmp_path):
    """With the key, no /v1 route answers 401 (the table above is not all-refusing)."""
    app = create_app(make_settings(tmp_path))
    with TestClient(app, headers={"Authorization": f"Bearer {KEY}"}) as client:
        for method, path in V1:
            if path.endswith("/events"):
                continue  # a stream: its 404 for an unknown job is enough, checked elsewhere
            response = client.request(method, concrete(path))
            assert response.status_code != 401, (method, path)


def test_the_document_declares_the_key_and_its_401_on_every_v1_operation(anonymous):
    doc = anonymous.get("/openapi.json").json()
    documented = {
        (method.upper(), path) for path, operations in doc["paths"].items() for method in operations
    }
    assert set(V1) <= documented
    for method, path in V1:
        operation = doc["paths"][path][method.lower()]
        assert operation.get("security"), (method, path)
        error = operation["responses"]["401"]["content"]["application/json"]["schema"]
        assert error == {"$ref": "#/components/schemas/ErrorOut"}
