"""app/api/protocol.py: the guarded protocol over real sockets (uvicorn in a thread, with the
options `trainserve api` gives it, and small ASGI apps): an answer the client does not take in,
the request head's size limit, pipelined requests and their deadlines, chunked bodies'
trailers, and the cases where a body's deadline waits (Expect: 100-continue, reading paused).
Against `trainserve api` itself: tests/e2e/test_slow_clients.py."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import parse_qsl

import pytest
import uvicorn

from app.api.protocol import MAX_HEAD_BYTES
from app.api.server import uvicorn_options
from tests.app.conftest import make_settings
from tests.e2e.processes import free_port, wait_until
from tests.e2e.sockets import read_until_closed


@contextmanager
def guarded(app, tmp_path, timeout_s: float, max_connections: int = 8) -> Iterator[uvicorn.Server]:
    """`app` under uvicorn in a thread, with the options `trainserve api` gives it, and the
    header, body and keep-alive timeouts all `timeout_s`."""
    settings = make_settings(
        tmp_path,
        header_timeout_seconds=timeout_s,
        body_timeout_seconds=timeout_s,
        keep_alive_seconds=timeout_s,
    )
    options = uvicorn_options(settings, max_connections)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=free_port(), log_level="warning", lifespan="off", **options
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, 10, "uvicorn", 0.02)
        yield server
    finally:
        server.should_exit = True
        thread.join(10)


def connect(server: uvicorn.Server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.config.port), timeout=5)


def test_an_answer_the_client_does_not_take_in_is_dropped(tmp_path):
    """64 MB to a client that reads nothing: the write buffer fills (writing paused), and the
    connection is aborted after the body timeout; the application's sends then return."""
    finished = threading.Event()

    async def big(scope, receive, send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(1024):
            await send({"type": "http.response.body", "body": b"x" * 65536, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        finished.set()

    with guarded(big, tmp_path, timeout_s=1) as server, socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", server.config.port))
        sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        wait_until(lambda: server.server_state.connections, 2, "the connection", 0.02)
        start = time.monotonic()
        wait_until(lambda: not server.server_state.connections, 3, "the drop", 0.05)
        assert 0.5 <= time.monotonic() - start <= 3
        assert finished.wait(5)  # its sends returned: nothing waits on the dropped client


# -- the guarded protocol against small apps, over raw sockets -------------------------------

TIMEOUT_S = 0.5  # header, body and keep-alive timeouts below
CLOSED_WITHIN_S = 2.0  # one timeout, and room for a loaded machine


async def echo(scope, receive, send) -> None:
    """Answers JSON: the path, the body's length and the number of header fields. ?sleep=S
    waits S seconds first (before reading the body: /body reads it, the rest do not); with
    ?listen=1, waiting for a disconnect meanwhile, as a streaming answer does (which resumes
    reading); /early answers 401 without reading the body."""
    query = dict(parse_qsl(scope["query_string"].decode()))
    listener = None
    if "listen" in query:
        await receive()  # the (empty) body
        listener = asyncio.ensure_future(receive())  # http.disconnect, once answered
    await asyncio.sleep(float(query.get("sleep", 0)))
    body = b""
    while scope["path"] == "/body":
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    status = 401 if scope["path"] == "/early" else 200
    answer = {"path": scope["path"], "body": len(body), "headers": len(scope["headers"])}
    content = json.dumps(answer).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(content))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": content})
    if listener is not None:
        await listener


class Reader:
    """HTTP/1.1 answers as they come on a raw socket (each with a Content-Length, or 1xx)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.buffer = sock, b""

    def answer(self, limit_s: float = 5.0) -> tuple[int, bytes]:
        """The next answer's status and body."""
        deadline = time.monotonic() + limit_s
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end >= 0:
                head = self.buffer[:end].decode("latin-1").split("\r\n")
                status = int(head[0].split()[1])
                fields = dict(line.lower().split(": ", 1) for line in head[1:])
                length = 0 if status < 200 else int(fields["content-length"])
                if len(self.buffer) >= end + 4 + length:
                    body = self.buffer[end + 4 : end + 4 + length]
                    self.buffer = self.buffer[end + 4 + length :]
                    return status, body
            self.sock.settimeout(max(deadline - time.monotonic(), 0.01))
            chunk = self.sock.recv(65536)
            assert chunk, f"closed before a whole answer; received {self.buffer[:200]!r}"
            self.buffer += chunk

    def closed(self, limit_s: float) -> float:
        """Seconds until the server closed the connection (EOF or reset), nothing more sent."""
        seconds, received = read_until_closed(self.sock, limit_s)
        assert not received, f"sent more: {received[:200]!r}"
        return seconds


def test_a_request_head_over_16_kib_is_answered_431_and_closed(tmp_path):
    start = b"POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nX-Big: "
    with guarded(echo, tmp_path, TIMEOUT_S) as server:
        with connect(server) as sock:  # whole, in one read
            sock.sendall(start + b"a" * MAX_HEAD_BYTES + b"\r\n\r\nhello")
            reader = Reader(sock)
            status, body = reader.answer()
            assert status == 431 and b"16384" in body, body
            reader.closed(CLOSED_WITHIN_S)
        with connect(server) as sock:  # over two reads, its end in the second with the body
            sock.sendall(start + b"a" * 10_000)
            time.sleep(0.1)
            sock.sendall(b"a" * 10_000 + b"\r\n\r\nhello")
            reader = Reader(sock)
            assert reader.answer()[0] == 431
            reader.closed(CLOSED_WITHIN_S)
        with connect(server) as sock:  # never ending: refused at the read that passes 16 KiB
            sock.sendall(start)
            for _ in range(9):  # 18,000 bytes more, 2,000 a read
                time.sleep(0.02)
                sock.sendall(b"a" * 2_000)
            reader = Reader(sock)
            assert reader.answer()[0] == 431
            reader.closed(CLOSED_WITHIN_S)
        with connect(server) as sock:  # just under the limit: served
            sock.sendall(start + b"a" * (MAX_HEAD_BYTES - 200) + b"\r\n\r\nhello")
            status, body = Reader(sock).answer()
            assert status == 200 and json.loads(body)["body"] == 5
        with connect(server) as sock:  # malformed: uvicorn's 400
            sock.sendall(b"GET / HTTP/1.1\r\nHost x\r\n\r\n")
            reader = Reader(sock)
            assert reader.answer()[0] == 400
            reader.closed(CLOSED_WITHIN_S)
        wait_until(lambda: not server.server_state.connections, 2, "no connection left", 0.02)


def test_pipelined_requests_are_answered_in_order(tmp_path):
    with guarded(echo, tmp_path, TIMEOUT_S) as server, connect(server) as sock:
        sock.sendall(
            b"GET /first?sleep=0.2 HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
            b"GET /third HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        reader = Reader(sock)
        answers = [json.loads(reader.answer()[1]) for _ in range(3)]
        assert [answer["path"] for answer in answers] == ["/first", "/body", "/third"]
        assert answers[1]["body"] == 5
        sock.sendall(b"GET /fourth HTTP/1.1\r\nHost: x\r\n\r\n")  # still kept alive
        assert json.loads(reader.answer()[1])["path"] == "/fourth"


@pytest.mark.parametrize(
    ("behind", "then"),
    [
        (b"GET /second HTTP/1.1\r\nHost: x\r\n", None),  # half a head: closed
        (b"POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhel", 408),
    ],
    ids=["half-a-head", "half-a-body"],
)
def test_a_pipelined_request_is_timed_from_the_end_of_the_answer_before_it(tmp_path, behind, then):
    """The first request takes four timeouts to answer (and reads meanwhile, waiting for a
    disconnect). Half of a second one pipelined behind it is not timed meanwhile (the first
    answer comes whole), then is: the connection is closed (half a head) or answered 408 (half a
    body) a timeout after the first answer."""
    with guarded(echo, tmp_path, TIMEOUT_S) as server, connect(server) as sock:
        sock.sendall(
            b"GET /first?sleep=%.1f&listen=1 HTTP/1.1\r\nHost: x\r\n\r\n" % (4 * TIMEOUT_S) + behind
        )
        reader = Reader(sock)
        status, body = reader.answer()
        assert status == 200 and json.loads(body)["path"] == "/first"
        answered = time.monotonic()
        if then is not None:
            assert reader.answer(CLOSED_WITHIN_S)[0] == then
        reader.closed(CLOSED_WITHIN_S)
        assert time.monotonic() - answered >= TIMEOUT_S * 0.8


def test_a_chunked_body_may_have_trailers_but_not_over_16_kib(tmp_path):
    start = b"POST /body HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    with guarded(echo, tmp_path, TIMEOUT_S) as server:
        with connect(server) as sock:
            sock.sendall(start + b"5\r\nhello\r\n0\r\nX-Checksum: 1\r\n\r\n")
            status, body = Reader(sock).answer()
            assert status == 200 and json.loads(body)["body"] == 5
        with connect(server) as sock:
            sock.sendall(start + b"5\r\nhello\r\n0\r\n")
            for _ in range(9):  # 18,000 bytes of trailers, 2,000 a read
                time.sleep(0.02)
                sock.sendall(b"X-T: " + b"a" * 1_993 + b"\r\n")
            reader = Reader(sock)
            assert reader.answer()[0] == 431
            reader.closed(CLOSED_WITHIN_S)


def test_the_body_deadline_waits_for_the_application_to_ask_for_the_body(tmp_path):
    """Expect: 100-continue, and an application that asks for the body after 1.8 body timeouts,
    a little before the deadline's next look; the client then takes 0.2 s to send it: no 408
    (not timed before it is asked, and a full period once asked)."""
    with guarded(echo, tmp_path, TIMEOUT_S) as server, connect(server) as sock:
        sock.sendall(
            b"POST /body?sleep=%.2f HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
            % (1.8 * TIMEOUT_S)
            + b"Expect: 100-continue\r\n\r\n"
        )
        reader = Reader(sock)
        assert reader.answer()[0] == 100
        time.sleep(0.2)
        sock.sendall(b"hello")
        status, body = reader.answer()
        assert status == 200 and json.loads(body)["body"] == 5


def test_the_body_deadline_waits_while_reading_is_paused(tmp_path):
    """A 4 MB body sent at once to an application that reads it after twice the body timeout:
    uvicorn stops reading beyond 64 KiB until the application reads (flow control), which is
    not the client's delay: no 408."""
    size = 4 * 1024 * 1024
    with guarded(echo, tmp_path, TIMEOUT_S) as server, connect(server) as sock:
        sock.sendall(
            b"POST /body?sleep=%.1f HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
            % (2 * TIMEOUT_S, size)
            + b"x" * size
        )
        status, body = Reader(sock).answer()
        assert status == 200 and json.loads(body)["body"] == size


def test_after_the_rest_of_an_answered_body_the_keep_alive_timeout_applies(tmp_path):
    """401 before the body was read; the client sends the rest of it, then nothing: closed
    after the keep-alive timeout (uvicorn's timer, cancelled by those bytes, is armed again)."""
    with guarded(echo, tmp_path, TIMEOUT_S) as server, connect(server) as sock:
        sock.sendall(b"POST /early HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello")
        reader = Reader(sock)
        assert reader.answer()[0] == 401
        sock.sendall(b"world")
        assert reader.closed(CLOSED_WITHIN_S) >= TIMEOUT_S * 0.8


def test_blank_lines_on_a_kept_alive_connection_are_timed_as_a_head(tmp_path):
    """A blank line every 0.1 s (llhttp skips them before a request line): each would push back
    uvicorn's keep-alive timeout; the head deadline runs from the first one."""
    with guarded(echo, tmp_path, TIMEOUT_S) as server, connect(server) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert Reader(sock).answer()[0] == 200
        start = time.monotonic()
        while time.monotonic() - start < CLOSED_WITHIN_S:
            try:
                sock.sendall(b"\r\n")
                time.sleep(0.1)
                if sock.recv(1, socket.MSG_DONTWAIT | socket.MSG_PEEK) == b"":
                    break  # closed
            except BlockingIOError:
                continue  # nothing to read: still open
            except (BrokenPipeError, ConnectionResetError):
                break
        assert TIMEOUT_S * 0.8 <= time.monotonic() - start < CLOSED_WITHIN_S
