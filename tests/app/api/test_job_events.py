"""GET /v1/jobs/{id}/events over real HTTP (uvicorn in a thread): one poller per job however many
streams follow it, the per-key cap on open streams, and the end of a stream at a terminal
status. The streams are raw sockets (what a stream costs the server is what is measured)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import httpx
import pytest

from app.api.auth import owner_of_authorization
from app.api.main import create_app
from app.core.services import Services, build_services
from tests.app.conftest import AUTH, KEY, make_settings
from tests.e2e.processes import wait_until
from tests.security.server import serve

POLL_S = 0.05  # app.state.events_poll_s here: 20 reads a second per poller
WINDOW_S = 1.0
OTHER_KEY = "other-key-0123456789"
MINIMAL = {"model_name": "house", "architecture": "house_prices_mlp", "dataset": "boston_housing"}


class Served:
    def __init__(self, url: str, app, services: Services, reads: list[int]) -> None:
        self.url, self.app, self.services, self.reads = url, app, services, reads
        self.port = int(url.rsplit(":", 1)[1])
        self.events = app.state.job_events

    def client(self, key: str = KEY) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=10
        )

    def job(self, *, running: bool) -> str:
        with self.client() as client:
            job_id = client.post("/v1/jobs", json=MINIMAL).json()["id"]
        if running:
            self.services.store.claim(job_id, "test-worker")
        return job_id

    def open_stream(self, stack: ExitStack, job_id: str, key: str = KEY) -> socket.socket:
        """A stream whose first event has arrived (an AssertionError with the answer if not)."""
        sock = stack.enter_context(socket.create_connection(("127.0.0.1", self.port), 5))
        sock.sendall(
            f"GET /v1/jobs/{job_id}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {key}\r\nAccept: text/event-stream\r\n\r\n".encode()
        )
        received = b""
        while b"event: job" not in received:
            chunk = sock.recv(65536)
            assert chunk, received
            received += chunk
        assert received.startswith(b"HTTP/1.1 200 "), received
        return sock

    def owner_of(self, key: str) -> str:
        return owner_of_authorization(f"Bearer {key}", self.app.state.api_keys)

    def reads_in(self, seconds: float) -> int:
        before = len(self.reads)
        time.sleep(seconds)
        return len(self.reads) - before

    def wait_idle(self) -> None:
        """Until every stream is gone: no feed polls, no stream is counted against a key."""
        wait_until(
            lambda: not self.events.feeds and not self.events.streams, 5, "the streams to go", 0.02
        )


@pytest.fixture
def served(tmp_path) -> Iterator:
    @contextmanager
    def start(**overrides) -> Iterator[Served]:
        settings = make_settings(tmp_path, api_keys=f"{KEY},{OTHER_KEY}", **overrides)
        services = build_services(settings)
        reads: list[int] = []
        get_job = services.store.get_job

        def counted(job_id: str):  # every read of a job by anyone
            reads.append(1)
            return get_job(job_id)

        services.store.get_job = counted
        app = create_app(services=services)
        app.state.events_poll_s = POLL_S
        with serve(app) as url:
            yield Served(url, app, services, reads)

    return start


def test_fifty_streams_of_one_job_cost_one_poller(served):
    with served(max_streams_per_key=100) as api:
        job_id = api.job(running=True)
        with ExitStack() as stack:
            api.open_stream(stack, job_id)
            one = api.reads_in(WINDOW_S)
        api.wait_idle()
        with ExitStack() as stack:
            for _ in range(50):
                api.open_stream(stack, job_id)
            assert len(api.events.feeds) == 1 and api.events.streams[api.owner_of(KEY)] == 50
            fifty = api.reads_in(WINDOW_S)
        api.wait_idle()  # the last one gone, the poller stops
        assert api.reads_in(0.3) == 0
    polls = WINDOW_S / POLL_S  # what one stream's poller makes in the window
    print(f"job reads in {WINDOW_S} s at {POLL_S} s polls: 1 stream {one}, 50 streams {fifty}")
    assert one >= polls / 4, one  # the poller does poll
    assert fifty < 3 * polls, (one, fifty)  # not 50 x


def test_streams_per_key_are_capped(served):
    with served(max_streams_per_key=3) as api:
        job_id = api.job(running=True)
        with ExitStack() as stack, api.client() as client:
            streams = [api.open_stream(stack, job_id) for _ in range(3)]
            refused = client.get(f"/v1/jobs/{job_id}/events")
            assert refused.status_code == 429, refused.text
            assert int(refused.headers["retry-after"]) > 0
            assert "TRAINSERVE_MAX_STREAMS_PER_KEY" in refused.json()["detail"]
            api.open_stream(stack, job_id, key=OTHER_KEY)  # another key has its own streams
            for _ in range(5):  # a refused or unknown job does not take a slot
                assert client.get("/v1/jobs/0123abcd/events").status_code in (404, 429)
            streams[0].close()  # one leaves: a new one is accepted
            wait_until(lambda: api.events.streams[api.owner_of(KEY)] == 2, 5, "a slot", 0.02)
            api.open_stream(stack, job_id)
        api.wait_idle()


def test_unknown_jobs_take_no_slot(served):
    with served(max_streams_per_key=2) as api, api.client() as client:
        for _ in range(5):
            assert client.get("/v1/jobs/0123abcd/events").status_code == 404
        assert not api.events.streams


def test_a_stream_ends_when_its_job_is_cancelled(served):
    with served() as api, api.client() as client:
        job_id = api.job(running=False)
        statuses: list[str] = []
        ended = threading.Event()

        def follow() -> None:
            with client.stream("GET", f"/v1/jobs/{job_id}/events") as response:
                assert response.status_code == 200
                for line in response.iter_lines():
                    if line.startswith("data: "):
                        statuses.append(json.loads(line[6:])["status"])
            ended.set()

        reader = threading.Thread(target=follow, daemon=True)
        reader.start()
        wait_until(lambda: statuses, 5, "the first event", 0.02)
        with api.client() as other:
            assert other.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
        assert ended.wait(5), statuses
        reader.join(5)
        assert statuses == ["queued", "cancelled"]
        api.wait_idle()


def test_the_429_is_documented(served):
    with served() as api, httpx.Client(base_url=api.url, headers=AUTH) as client:
        responses = client.get("/openapi.json").json()["paths"]["/v1/jobs/{job_id}/events"]
        refused = responses["get"]["responses"]["429"]
    assert refused["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorOut"
    }
    assert "Retry-After" in refused["headers"]
