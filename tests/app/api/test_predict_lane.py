"""The predict route's fast lane (app/api/predict_lane.py), over real HTTP to uvicorn.

Every request is sent twice: as JSON (`application/json`: the lane's) and as a `+json` type
(which the lane leaves to FastAPI's route, which reads it as JSON too). Both must answer the
same status and the same body, whatever is wrong with the request; and only what the lane
does not take may reach FastAPI's router."""

from __future__ import annotations

import json

import httpx
import pytest
import torch

from app.api.main import create_app
from models.datasets import Dataset
from models.request import TrainingRequest
from models.training import run_training
from tests.app.conftest import AUTH, make_settings, publish
from tests.security.server import serve

LANE = {**AUTH, "Content-Type": "application/json"}
ROUTE = {**AUTH, "Content-Type": "application/vnd.trainserve+json"}
GOOD = {"inputs": [[0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [1, 2, 3, 4, 5, 6]]}


class RouterCalls:
    """FastAPI's router, counting the requests that reach it."""

    def __init__(self, router) -> None:
        self.router, self.paths = router, []

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            self.paths.append(scope["path"])
        await self.router(scope, receive, send)

    def __getattr__(self, name):
        return getattr(self.router, name)


@pytest.fixture(scope="module")
def trained():
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(32, 6, generator=generator)
    request = TrainingRequest(architecture="mlp", dataset="random", epochs=1, device="cpu")
    return run_training(request, dataset=Dataset(x, torch.arange(32) % 3, "classification"))


@pytest.fixture
def server(tmp_path, trained):
    app = create_app(make_settings(tmp_path, registry_check_ms=20))
    calls = RouterCalls(app.router)
    app.router = calls  # before the first request builds the middleware stack around it
    with serve(app) as url:
        publish(app.state.services, "m", trained)
        app.state.services.store.set_alias("m", "stable", 1)
        with httpx.Client(base_url=url, timeout=30) as client:
            yield client, calls


def both(client: httpx.Client, calls: RouterCalls, path: str, body: bytes):
    """(lane answer, route answer, did the lane's request reach the router)."""
    before = len(calls.paths)
    lane = client.post(path, content=body, headers=LANE)
    reached = len(calls.paths) > before
    route = client.post(path, content=body, headers=ROUTE)
    assert len(calls.paths) > before + reached, "the +json request must go through the router"
    return lane, route, reached


def test_a_good_prediction_skips_the_router_and_answers_as_the_route(server):
    client, calls = server
    lane, route, reached = both(client, calls, "/v1/models/m/predict", json.dumps(GOOD).encode())
    assert lane.status_code == route.status_code == 200, lane.text
    assert lane.json() == route.json()
    assert lane.json()["version"] == 1 and len(lane.json()["predictions"]) == 2
    assert not reached


@pytest.mark.parametrize(
    "query", ["?version=1", "?version=stable", "?version=2&version=1", "?other=x"]
)
def test_version_queries_are_read_as_the_route_reads_them(server, query):
    client, calls = server
    path = "/v1/models/m/predict" + query
    lane, route, reached = both(client, calls, path, json.dumps(GOOD).encode())
    assert lane.status_code == route.status_code == 200, lane.text
    assert lane.json() == route.json() and lane.json()["version"] == 1
    assert not reached


REFUSED = {  # what is wrong -> (path, body, status)
    "version 0": ("/v1/models/m/predict?version=0", json.dumps(GOOD), 422),
    "version too large": ("/v1/models/m/predict?version=99999999999", json.dumps(GOOD), 422),
    "version not a slug": ("/v1/models/m/predict?version=a%20b", json.dumps(GOOD), 422),
    "version empty": ("/v1/models/m/predict?version=", json.dumps(GOOD), 422),
    "unknown alias": ("/v1/models/m/predict?version=nope", json.dumps(GOOD), 404),
    "unknown version": ("/v1/models/m/predict?version=7", json.dumps(GOOD), 404),
    "unknown model": ("/v1/models/other/predict", json.dumps(GOOD), 404),
    "name not a slug": ("/v1/models/No%20Slug/predict", json.dumps(GOOD), 404),
    "wrong shape": ("/v1/models/m/predict", '{"inputs": [[1, 2, 3]]}', 422),
    "too many samples": ("/v1/models/m/predict", json.dumps({"inputs": [[0] * 6] * 17}), 422),
    "not JSON": ("/v1/models/m/predict", '{"inputs": [[1, 2,', 422),
    "NaN": ("/v1/models/m/predict", '{"inputs": [[NaN, 1, 2, 3, 4, 5]]}', 422),
    "a string sample": ("/v1/models/m/predict", '{"inputs": ["abcdef"]}', 422),
    "no samples": ("/v1/models/m/predict", '{"inputs": []}', 422),
    "unknown field": ("/v1/models/m/predict", json.dumps({**GOOD, "extra": 1}), 422),
    "not an object": ("/v1/models/m/predict", "[1, 2]", 422),
    "empty body": ("/v1/models/m/predict", "", 422),
    "too deep": ("/v1/models/m/predict", '{"inputs": ' + "[" * 40 + "]" * 40 + "}", 422),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_refusals_are_the_routes_own(server, case):
    """The same status and body through the lane as through FastAPI's route."""
    client, calls = server
    path, body, status = REFUSED[case]
    lane, route, _ = both(client, calls, path, body.encode())
    assert route.status_code == status, route.text
    assert lane.status_code == status, lane.text
    assert lane.json() == route.json()
    assert lane.headers.get("content-type") == "application/json"


def test_a_body_in_chunks_and_a_charset_are_taken(server):
    client, calls = server
    data = json.dumps(GOOD).encode()
    pieces = (data[i : i + 7] for i in range(0, len(data), 7))  # chunked transfer encoding
    before = len(calls.paths)
    headers = {**AUTH, "Content-Type": "application/json; charset=utf-8"}
    answer = client.post("/v1/models/m/predict", content=pieces, headers=headers)
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["predictions"]) == 2
    assert len(calls.paths) == before


def test_other_methods_and_paths_go_to_the_router(server):
    client, calls = server
    assert client.get("/v1/models/m/predict", headers=AUTH).status_code == 405
    assert client.post("/v1/models/m/predict/x", json=GOOD, headers=AUTH).status_code == 404
    assert calls.paths[-2:] == ["/v1/models/m/predict", "/v1/models/m/predict/x"]


def test_the_key_is_checked_before_the_lane(server):
    client, calls = server
    before = len(calls.paths)
    answer = client.post("/v1/models/m/predict", json=GOOD)
    assert answer.status_code == 401
    assert len(calls.paths) == before
