"""app/api/server.py: the options given to uvicorn, the open files limit, the connection cap.
The guarded protocol itself: test_protocol.py."""

from __future__ import annotations

import logging
import resource
import subprocess
import sys

from app.api.protocol import MAX_HEAD_BYTES, GuardedHttpToolsProtocol
from app.api.server import FD_RESERVE, connection_cap, raise_open_files_limit, uvicorn_options
from tests.app.conftest import make_settings


def test_uvicorn_gets_the_configured_limits(tmp_path):
    settings = make_settings(
        tmp_path, header_timeout_seconds=3, body_timeout_seconds=4, keep_alive_seconds=2
    )
    options = uvicorn_options(settings, max_connections=77)
    protocol = options["http"]
    assert issubclass(protocol, GuardedHttpToolsProtocol)
    assert (protocol.header_timeout, protocol.body_timeout, protocol.max_connections) == (3, 4, 77)
    assert options["timeout_keep_alive"] == 2 and options["limit_concurrency"] == 78
    assert MAX_HEAD_BYTES == 16 * 1024  # enforced by the protocol (tests below)


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
