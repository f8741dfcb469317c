"""Errors: every body is {"detail": ...}; body limits; dependencies down; no 500 with a trace."""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy.exc import OperationalError

from app.core.errors import Invalid
from app.core.services import Services
from tests.app.api.test_jobs import MINIMAL


def test_body_over_the_limit_is_413(client: TestClient, settings):
    body = b'{"model_name": "' + b"x" * settings.max_body_bytes + b'"}'
    response = client.post("/v1/jobs", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    detail = response.json()["detail"]
    assert str(settings.max_body_bytes) in detail and "TRAINSERVE_MAX_BODY_BYTES" in detail


def test_streamed_body_over_the_limit_is_413(client: TestClient, settings):
    def chunks():  # no Content-Length: sent chunked
        yield b'{"model_name": "'
        for _ in range(settings.max_body_bytes // 1024 + 1):
            yield b"x" * 1024
        yield b'"}'

    response = client.post(
        "/v1/jobs", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert "TRAINSERVE_MAX_BODY_BYTES" in response.json()["detail"]


def test_streamed_upload_over_the_limit_is_413(client: TestClient, settings):
    boundary = "b0undary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="name"\r\n\r\nbig\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.csv"\r\n\r\n'
    ).encode()

    def chunks():
        yield head
        for _ in range(settings.max_upload_bytes // 1024 + 1):
            yield b"1,2\n" * 256
        yield f"\r\n--{boundary}--\r\n".encode()

    response = client.post(
        "/v1/datasets",
        content=chunks(),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert response.status_code == 413
    assert "TRAINSERVE_MAX_UPLOAD_BYTES" in response.json()["detail"]


def test_validation_errors_name_the_field(client: TestClient):
    response = client.post("/v1/jobs", json=MINIMAL | {"epochs": "many", "bogus": 1})
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert isinstance(detail, list)
    messages = " | ".join(item["msg"] for item in detail)
    assert "epochs:" in messages and "bogus:" in messages
    assert all("input" not in item for item in detail)


def test_unexpected_errors_are_500_without_a_trace(
    client: TestClient, services, monkeypatch, caplog
):
    def explode(**kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(services.store, "list_jobs", explode)
    with caplog.at_level(logging.ERROR):
        response = client.get("/v1/jobs")
    assert response.status_code == 500
    assert response.json() == {"detail": "internal error"}
    assert "secret internals" in caplog.text  # logged for the operator, not sent to the client


def test_store_down_is_503(client: TestClient, services: Services, monkeypatch):
    def down(*args, **kwargs):
        raise OperationalError("SELECT", {}, Exception("database is locked"))

    monkeypatch.setattr(services.store, "get_job", down)
    response = client.get("/v1/jobs/abc")
    assert response.status_code == 503
    assert response.json() == {"detail": "job store unavailable; try again shortly"}


def test_broker_down_keeps_the_job_queued(client: TestClient, services: Services, monkeypatch):
    def down(job_id):
        raise BrokerError("connection refused")

    monkeypatch.setattr(services, "enqueue", down)
    response = client.post("/v1/jobs", json=MINIMAL, headers={"Idempotency-Key": "k"})
    assert response.status_code == 503
    assert "broker unavailable" in response.json()["detail"]
    jobs = services.store.list_jobs(status="queued", model_name=None, limit=10, offset=0)[0]
    assert len(jobs) == 1 and jobs[0].id in response.json()["detail"]
    monkeypatch.undo()
    sent: list[str] = []
    monkeypatch.setattr(services, "enqueue", sent.append)
    retry = client.post("/v1/jobs", json=MINIMAL, headers={"Idempotency-Key": "k"})
    assert retry.status_code == 200 and sent == [jobs[0].id]  # a retry sends it again


@pytest.mark.parametrize(
    ("method", "path", "code"),
    [
        ("GET", "/nowhere", 404),
        ("DELETE", "/v1/jobs", 405),
        ("PUT", "/healthz", 405),
    ],
)
def test_routing_errors_are_json(client: TestClient, method, path, code):
    response = client.request(method, path)
    assert response.status_code == code
    assert set(response.json()) == {"detail"}


def test_service_errors_keep_their_status(client: TestClient, services, monkeypatch):
    def invalid(**kwargs):
        raise Invalid("limit is wrong")

    monkeypatch.setattr(services.store, "list_jobs", invalid)
    response = client.get("/v1/jobs")
    assert response.status_code == 422 and response.json() == {"detail": "limit is wrong"}


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("DELETE", "/v1/jobs", "GET, POST"),
        ("PUT", "/v1/datasets", "GET, POST"),
        ("POST", "/v1/jobs/abc", "DELETE, GET"),
        ("GET", "/v1/jobs/abc/cancel", "POST"),
    ],
)
def test_405_lists_every_method_of_the_path(client: TestClient, method, path, allow):
    response = client.request(method, path)
    assert response.status_code == 405
    assert response.headers["allow"] == allow  # not only those of the first route matched


def test_a_trailing_slash_is_a_404_that_names_the_path(client: TestClient):
    response = client.get("/v1/jobs/")
    assert response.status_code == 404  # not a redirect
    assert response.json()["detail"] == (
        "no route GET '/v1/jobs/'; the routes are at /docs (did you mean '/v1/jobs'?)"
    )


def test_a_value_the_database_refuses_is_422(client: TestClient, services, monkeypatch):
    from sqlalchemy.exc import DataError

    def refuse(**kwargs):
        raise DataError("SELECT", {}, Exception("text fields cannot contain NUL (0x00) bytes"))

    monkeypatch.setattr(services.store, "list_jobs", refuse)
    response = client.get("/v1/jobs")
    assert response.status_code == 422
    assert "cannot be stored" in response.json()["detail"]
    assert "NUL" not in response.text  # the database's words stay in the log


def test_error_messages_are_bounded_and_encodable(client: TestClient, services, monkeypatch):
    def long_and_odd(**kwargs):
        raise Invalid("\ud800" + "x" * 10_000)

    monkeypatch.setattr(services.store, "list_jobs", long_and_odd)
    response = client.get("/v1/jobs")
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail.startswith("\\ud800x") and detail.endswith("(cut)") and len(detail) < 4100
