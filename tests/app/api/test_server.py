"""app/api/server.py: the options given to uvicorn, the open files limit, the connection cap, and
an answer that the client does not take in (uvicorn in a thread with the guarded protocol and a
small app that streams 64 MB). Real sockets against `trainserve api`:
tests/e2e/test_slow_clients.py."""

from __future__ import annotations

import logging
import resource
import socket
import subprocess
import sys
import threading
import time

import uvicorn

from app.api.server import (
    FD_RESERVE,
    GuardedH11Protocol,
    connection_cap,
    raise_open_files_limit,
    uvicorn_options,
)
from tests.app.conftest import make_settings
from tests.e2e.processes import free_port, wait_until


def test_uvicorn_gets_the_configured_limits(tmp_path):
    settings = make_settings(
        tmp_path, header_timeout_seconds=3, body_timeout_seconds=4, keep_alive_seconds=2
    )
    options = uvicorn_options(settings, max_connections=77)
    protocol = options["http"]
    assert issubclass(protocol, GuardedH11Protocol)
    assert (protocol.header_timeout, protocol.body_timeout, protocol.max_connections) == (3, 4, 77)
    assert options["timeout_keep_alive"] == 2 and options["limit_concurrency"] == 78
    assert options["h11_max_incomplete_event_size"] > 0


def test_the_defaults(tmp_path):
    settings = make_settings(tmp_path)
    assert (settings.header_timeout_seconds, settings.body_timeout_seconds) == (10, 30)
    assert (settings.keep_alive_seconds, settings.max_connections) == (5, 512)
    assert settings.max_streams_per_key == 20


def test_the_soft_open_files_limit_is_raised_to_the_hard_one():
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = min(256, hard)

    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))

    code = "from app.api.server import raise_open_files_limit as r; import resource; r(); "
    code += "print(resource.getrlimit(resource.RLIMIT_NOFILE)[0])"
    result = subprocess.run(
        [sys.executable, "-c", code], preexec_fn=lower, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    expected = hard if hard != resource.RLIM_INFINITY else 1 << 20
    assert int(result.stdout) == expected
    assert raise_open_files_limit() >= low  # here: already raised or as high as it goes


def test_the_connection_cap_leaves_room_for_the_rest(caplog):
    assert connection_cap(512, 20_000) == 512
    with caplog.at_level(logging.WARNING):
        assert connection_cap(512, 256) == 256 - FD_RESERVE
    assert "TRAINSERVE_MAX_CONNECTIONS=512" in caplog.text


def test_an_answer_the_client_does_not_take_in_is_dropped(tmp_path):
    """64 MB to a client that reads nothing: the write buffer fills (writing paused), and the
    connection is aborted after the body timeout; the application's sends then return."""
    finished = threading.Event()

    async def big(scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(1024):
            await send({"type": "http.response.body", "body": b"x" * 65536, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        finished.set()

    settings = make_settings(tmp_path, body_timeout_seconds=1)
    options = uvicorn_options(settings, max_connections=8)
    config = uvicorn.Config(big, host="127.0.0.1", port=free_port(), log_level="warning", **options)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, 10, "uvicorn", 0.02)
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", config.port))
            sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            wait_until(lambda: server.server_state.connections, 2, "the connection", 0.02)
            start = time.monotonic()
            wait_until(lambda: not server.server_state.connections, 3, "the drop", 0.05)
            assert 0.5 <= time.monotonic() - start <= 3
            assert finished.wait(5)  # its sends returned: nothing waits on the dropped client
    finally:
        server.should_exit = True
        thread.join(10)
