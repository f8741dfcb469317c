"""Slow and idle clients against a real `trainserve api` (app/api/protocol.py): half-sent heads,
half-sent bodies and idle sockets are dropped within the configured seconds, and while hundreds
of them are open the API still answers. Timeouts here: 1 s for heads, bodies and keep-alive;
at most 400 connections. Every socket goes to 127.0.0.1 and is closed in a `finally`."""

from __future__ import annotations

import os
import selectors
import socket
import time
from contextlib import ExitStack, suppress

import httpx
import pytest

from tests.e2e.processes import Service, wait_until
from tests.e2e.sockets import read_until_closed

pytestmark = pytest.mark.e2e

TIMEOUT_S = 1.0  # TRAINSERVE_HEADER / BODY / KEEP_ALIVE_SECONDS in these tests
DROPPED_WITHIN_S = 2.5  # one timeout, and room for a loaded machine
MAX_CONNECTIONS = 400
JOB = {"model_name": "house", "architecture": "house_prices_mlp", "dataset": "boston_housing"}


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    service = Service(
        tmp_path_factory.mktemp("slow-clients"),
        {
            "TRAINSERVE_HEADER_TIMEOUT_SECONDS": str(TIMEOUT_S),
            "TRAINSERVE_BODY_TIMEOUT_SECONDS": str(TIMEOUT_S),
            "TRAINSERVE_KEEP_ALIVE_SECONDS": str(TIMEOUT_S),
            "TRAINSERVE_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
        },
    )
    try:
        service.start_api()
        yield service
    finally:
        service.stop()


def connect(service: Service) -> socket.socket:
    return socket.create_connection(("127.0.0.1", service.port), timeout=5)


def trickle_until_closed(sock: socket.socket, byte: bytes, every_s: float, limit_s: float) -> float:
    """Send `byte` every `every_s` until the server closes the connection: the seconds that took
    (an AssertionError when it is still open after `limit_s`)."""
    start = time.monotonic()
    while time.monotonic() - start < limit_s:
        try:
            sock.sendall(byte)
            time.sleep(every_s)
            if sock.recv(65536, socket.MSG_DONTWAIT | socket.MSG_PEEK) == b"":
                return time.monotonic() - start
        except BlockingIOError:
            continue  # nothing to read: still open
        except (BrokenPipeError, ConnectionResetError):
            return time.monotonic() - start
    raise AssertionError(f"still open after {limit_s} s of trickling")


def auth_header(service: Service) -> bytes:
    return f"Authorization: Bearer {service.key}\r\n".encode()


def healthz_within(service: Service, seconds: float) -> int:
    start = time.monotonic()
    response = httpx.get(f"{service.url}/healthz", timeout=seconds)
    assert time.monotonic() - start < seconds
    return response.status_code


def fd_count(service: Service) -> int:
    return len(os.listdir(f"/proc/{service.api.popen.pid}/fd"))


def test_half_a_request_head_is_dropped(api):
    with connect(api) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # no blank line
        elapsed, _ = read_until_closed(sock, DROPPED_WITHIN_S)
    assert elapsed >= TIMEOUT_S * 0.8


def test_a_head_trickled_byte_by_byte_is_dropped_all_the_same(api):
    """The head's deadline runs from its first byte: more bytes do not extend it."""
    with connect(api) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        assert trickle_until_closed(sock, b"a", 0.1, DROPPED_WITHIN_S) < DROPPED_WITHIN_S


def test_half_a_body_is_answered_408_and_dropped(api):
    with connect(api) as sock:
        sock.sendall(
            b"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            + auth_header(api)
            + b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
            + b'{"model_na'
        )
        elapsed, received = read_until_closed(sock, DROPPED_WITHIN_S)
    assert received.startswith(b"HTTP/1.1 408 "), received
    assert b"TRAINSERVE_BODY_TIMEOUT_SECONDS" in received
    assert elapsed >= TIMEOUT_S * 0.8


def test_a_body_promised_after_100_continue_is_answered_408(api):
    with connect(api) as sock:
        sock.sendall(
            b"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            + auth_header(api)
            + b"Content-Type: application/json\r\nContent-Length: 1000\r\n"
            + b"Expect: 100-continue\r\n\r\n"
        )
        _, received = read_until_closed(sock, DROPPED_WITHIN_S)
    assert received.startswith(b"HTTP/1.1 100 "), received
    assert b"HTTP/1.1 408 " in received


def test_half_a_body_without_a_key_is_refused_then_dropped(api):
    """401 before the body is read; then the rest of the body must come within the body
    timeout in all, even trickled (a byte every 0.1 s would take 99 s to finish it)."""
    with connect(api) as sock:
        sock.sendall(
            b"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n0123456789"
        )
        sock.settimeout(2)
        assert sock.recv(65536).startswith(b"HTTP/1.1 401 ")
        assert trickle_until_closed(sock, b"x", 0.1, DROPPED_WITHIN_S) < DROPPED_WITHIN_S


def test_an_idle_connection_is_dropped(api):
    with connect(api) as sock:
        elapsed, received = read_until_closed(sock, DROPPED_WITHIN_S)
    assert received == b"" and elapsed >= TIMEOUT_S * 0.8


def test_an_idle_kept_alive_connection_is_dropped(api):
    with connect(api) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        sock.settimeout(2)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        read_until_closed(sock, DROPPED_WITHIN_S)


def open_slow_sockets(stack: ExitStack, service: Service, count: int) -> list[socket.socket]:
    """`count` connections: idle, half a head, and half a body (a third of each)."""
    partial = [
        b"",
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n",
        b"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + auth_header(service)
        + b"Content-Length: 1000\r\n\r\n{",
    ]
    sockets = []
    for i in range(count):
        sock = stack.enter_context(connect(service))
        if partial[i % 3]:
            sock.sendall(partial[i % 3])
        sockets.append(sock)
    return sockets


def wait_all_closed(sockets: list[socket.socket], limit_s: float) -> None:
    """Until the server has closed every one of `sockets` (EOF or reset), at most `limit_s`."""
    selector = selectors.DefaultSelector()
    for sock in sockets:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
    open_ = set(sockets)
    deadline = time.monotonic() + limit_s
    try:
        while open_ and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=max(deadline - time.monotonic(), 0)):
                sock = key.fileobj
                try:
                    if sock.recv(65536):
                        continue  # a 408: the close follows
                except BlockingIOError:
                    continue
                except OSError:
                    pass
                selector.unregister(sock)
                open_.discard(sock)
    finally:
        selector.close()
    assert not open_, f"{len(open_)} of {len(sockets)} still open after {limit_s} s"


def test_hundreds_of_slow_clients_do_not_stop_the_api(api):
    before = fd_count(api)
    with ExitStack() as stack:
        sockets = open_slow_sockets(stack, api, 300)
        opened = time.monotonic()
        assert healthz_within(api, 2.0) == 200  # while all 300 are open
        assert fd_count(api) >= before + 250
        wait_all_closed(sockets, DROPPED_WITHIN_S)
        print(f"300 slow sockets: all dropped {time.monotonic() - opened:.2f} s after opening")
    wait_until(lambda: fd_count(api) <= before + 5, 5, "the API to close its sockets", 0.1)
    assert healthz_within(api, 2.0) == 200


def test_beyond_the_cap_the_longest_waiting_idle_connections_make_room(api):
    """MAX_CONNECTIONS + 50 slow sockets: the 50 that waited longest without sending a request
    head are closed at once (not after the head timeout; the half-sent bodies are requests, and
    stay until the body timeout), the server's open sockets stay within the cap, and a client
    that sends its request is served."""
    before = fd_count(api)
    with ExitStack() as stack:
        sockets = open_slow_sockets(stack, api, MAX_CONNECTIONS + 50)
        assert healthz_within(api, 2.0) == 200
        assert fd_count(api) <= before + MAX_CONNECTIONS + 5
        waiting = [sock for i, sock in enumerate(sockets) if i % 3 != 2]  # no request yet
        wait_all_closed(waiting[:40], 0.5)  # made room: closed well before the head timeout
        wait_all_closed(sockets, DROPPED_WITHIN_S + 1.0)
    wait_until(lambda: fd_count(api) <= before + 5, 5, "the API to close its sockets", 0.1)


def test_when_every_connection_is_busy_a_new_one_gets_503(tmp_path):
    """Busy: each of the MAX connections has sent a whole head of a request that is still
    being answered (an event stream). One more gets 503 at once; once one stream ends, a new
    connection is served."""
    service = Service(
        tmp_path,
        {"TRAINSERVE_MAX_CONNECTIONS": "6", "TRAINSERVE_MAX_STREAMS_PER_KEY": "10"},
    )
    try:
        service.start_api()
        with service.client() as client:
            job_id = client.post("/v1/jobs", json=JOB).json()["id"]
        with ExitStack() as stack:
            streams = []
            for _ in range(6):
                sock = stack.enter_context(connect(service))
                sock.sendall(
                    f"GET /v1/jobs/{job_id}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode()
                    + auth_header(service)
                    + b"\r\n"
                )
                sock.settimeout(5)
                assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
                streams.append(sock)
            with connect(service) as extra:
                extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                with suppress(ConnectionResetError):
                    _, received = read_until_closed(extra, 1.0)
                    assert received.startswith(b"HTTP/1.1 503 "), received
            streams[0].close()
            wait_until(lambda: healthz_or_none(service) == 200, 5, "a free connection", 0.1)
    finally:
        service.stop()


def healthz_or_none(service: Service) -> int | None:
    try:
        return httpx.get(f"{service.url}/healthz", timeout=1).status_code
    except httpx.HTTPError:
        return None


def test_no_traceback_in_the_api_log(api):
    output = api.api.output()
    assert "Traceback" not in output and "Exception in ASGI" not in output, output[-3000:]
    assert "request body stalled" in output  # the 408s were logged, one line each
