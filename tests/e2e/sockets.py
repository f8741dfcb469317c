"""Raw sockets against a server: for tests of what a connection does, byte by byte."""

from __future__ import annotations

import socket
import time


def read_until_closed(sock: socket.socket, limit_s: float) -> tuple[float, bytes]:
    """Seconds until the server closed the connection (EOF or reset), and what it sent."""
    start, received = time.monotonic(), b""
    while True:
        left = limit_s - (time.monotonic() - start)
        if left <= 0:
            raise AssertionError(f"still open after {limit_s} s; received {received[:200]!r}")
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            break
        except TimeoutError:
            continue
        if not chunk:
            break
        received += chunk
    return time.monotonic() - start, received
