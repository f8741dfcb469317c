"""The HTTP protocol the API runs under uvicorn: uvicorn's httptools protocol, guarded against
slow and idle clients (app/api/server.py starts uvicorn with it).

uvicorn on its own closes an idle kept-alive connection (`timeout_keep_alive`) and answers 503
beyond `limit_concurrency`, but it waits for ever for the rest of a request head or body, and
its httptools protocol (llhttp, a parser in C) sets no limit on the size of a request head: a
client that sends half a head, half a body or nothing at all holds its connection, and a file
descriptor, for as long as it likes, and a head without end grows in memory.
`GuardedHttpToolsProtocol` (uvicorn's httptools protocol, plus timers and a byte count) adds
what is missing:

- a request head (request line and headers) must be complete within `header_timeout_seconds`
  of the connection being opened, or of its first byte on a kept-alive connection (a head
  pipelined behind a request still being answered: of the end of that answer); otherwise the
  connection is closed;
- a request head is at most MAX_HEAD_BYTES (16 KiB): a longer one is answered 431 and the
  connection closed, as are more than MAX_HEAD_BYTES of a chunked body's framing and trailers
  with no byte of the body between them. llhttp says where a head ends, not at which byte, so
  the bytes are counted per read from the socket: a head still incomplete at the end of a read
  counts every byte of the reads it filled, and a complete one whose reads were longer than the
  limit is measured as parsed (request line and header lines, less any spaces llhttp dropped);
  where a head (or trailers) began inside a read after the end of the request before it
  (pipelining), that read is left out of the count, so at most one read (256 KiB) more is held;
- while a request body is awaited, each next chunk must come within `body_timeout_seconds`
  (otherwise 408 and the connection is closed), counted while the application waits for it:
  not while reading is paused because the application has not taken in what came, nor before
  it has asked for a body that the client waits to be asked for (Expect: 100-continue), nor
  while the request waits behind one pipelined before it (once such a wait ends, the client has
  one more full period); once the answer has been sent (a 401 or 413 sent before the body was
  read), what is left of the body must come within that time in all, and the connection is then
  kept alive as after any answer (uvicorn's keep-alive timer, which those bytes cancelled, is
  armed again);
- an answer the client does not take in: when the write buffer stays full (writing paused) for
  `body_timeout_seconds`, the connection is dropped (aborted: a close would wait for the
  buffer to drain);
- at most `max_connections` connections are open: when one more comes, the connection that
  has waited longest without sending a request (idle, half a head, kept alive) is closed to make
  room, so a client that sends its request at once is served however many idle sockets others
  hold; only when every connection is busy with a request does the new one get a 503, closed at
  once. The file descriptors in use stay bounded (and the soft limit on open files is raised to
  the hard one at start).

A 408 or 431 is written by the protocol only when nothing has been written for the request yet
and no earlier answer on the connection is still being written; otherwise the connection is just
closed. The protocol follows a request through llhttp's callbacks (on_message_begin: a head
began; on_headers_complete: its body, if any, follows; on_message_complete: read to its end) and
its answer through uvicorn's (on_response_complete); uvicorn queues pipelined requests and runs
them one at a time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from app.core.settings import Settings

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 16 * 1024  # request line and headers (h11's default: the limit when this ran h11)
WARN_EVERY_S = 10.0

BODY_TIMEOUT_DETAIL = (
    b'{"detail":"the request body did not arrive in time (TRAINSERVE_BODY_TIMEOUT_SECONDS)"}'
)
HEAD_TOO_LARGE_DETAIL = (
    b'{"detail":"the request head is over %d bytes (or the trailers of its body)"}' % MAX_HEAD_BYTES
)
OVER_CAPACITY_DETAIL = b'{"detail":"too many open connections (TRAINSERVE_MAX_CONNECTIONS)"}'
OVER_CAPACITY = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"content-type: application/json\r\n"
    b"retry-after: 1\r\n"
    b"connection: close\r\n"
    b"content-length: %d\r\n\r\n%s" % (len(OVER_CAPACITY_DETAIL), OVER_CAPACITY_DETAIL)
)

# What the connection reads now: nothing of a request yet (IDLE), a request head (HEAD), a
# request's body (BODY: from the end of its head to the end of the request, body or none), or
# nothing after a request read to its end (DONE; IDLE again once that request is answered).
IDLE, HEAD, BODY, DONE = "idle", "head", "body", "done"


class _HeadTooLarge(Exception):
    """Raised in a parser callback, which stops llhttp: the head is over MAX_HEAD_BYTES."""


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with deadlines for the request head and body, a limit on
    the size of the head, and a cap on open connections. The limits are class attributes:
    `protocol_class` makes a subclass per configuration (uvicorn builds one protocol per
    connection from the class it is given)."""

    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_connections: int = 512
    # Connections waiting for a request head, longest-waiting first (one dict per subclass).
    waiting: dict[GuardedHttpToolsProtocol, None] = {}

    _last_warned = 0.0  # over-capacity warnings, at most one every WARN_EVERY_S

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # the parser takes this object's callbacks
        self._deadline: asyncio.TimerHandle | None = None
        self._deadline_kind: str | None = None  # "head", "body" or "rest" (after the answer)
        self._send_deadline: asyncio.TimerHandle | None = None
        self._excused = False  # the body's last period was not the client's to use (_expired)
        self._state = IDLE
        # The byte count against MAX_HEAD_BYTES: of a head, or of a body's framing and trailers
        # since its last byte of data.
        self._counted = 0  # its bytes in the reads before this one
        self._began_in_read = False  # it began inside this read: its bytes here are not known
        self._read_len = 0  # the bytes of this read
        self._read_body = False  # this read had bytes of a body
        self._too_large = False

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections and not self._make_room():
            self._refuse()
            return
        self.waiting[self] = None
        self._arm("head", self.header_timeout)

    def data_received(self, data: bytes) -> None:
        # uvicorn's HttpToolsProtocol.data_received, with the byte count and the deadlines.
        self._unset_keepalive_if_required()
        if self._state is IDLE or self._state is DONE:
            # A head begins at the first of these bytes (blank lines before a request line,
            # which llhttp skips, count as head all the same).
            self._state, self._counted, self._began_in_read = HEAD, 0, False
        self._read_len, self._read_body = len(data), False
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self._too_large:
                self._head_too_large()
                return
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)
            self._shut()
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()  # the connection is the WebSocket's now
                self._disarm()
                self.waiting.pop(self, None)
                return
            self._unsupported_upgrade_warning()
        if self._state is HEAD or self._state is BODY:
            if self._began_in_read or self._read_body:
                self._began_in_read, self._counted = False, 0
            else:  # a read all of head, or all of a body's framing and trailers
                self._counted += len(data)
                if self._counted > MAX_HEAD_BYTES:
                    self._head_too_large()
                    return
        self._watch(progress=True)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._stop_send_deadline()
        self.waiting.pop(self, None)
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._send_deadline is None:
            self._send_deadline = self.loop.call_later(self.body_timeout, self._send_stalled)

    def resume_writing(self) -> None:
        super().resume_writing()
        self._stop_send_deadline()

    # -- llhttp's callbacks, and uvicorn's at the end of an answer -------------------------

    def on_message_begin(self) -> None:
        if self._state is not HEAD:  # after the end of a request earlier in this read
            self._state, self._counted, self._began_in_read = HEAD, 0, True
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        if self._counted + self._read_len > MAX_HEAD_BYTES and self._head_size() > MAX_HEAD_BYTES:
            self._too_large = True
            raise _HeadTooLarge
        self._state, self._counted, self._began_in_read = BODY, 0, True
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._read_body = True
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._state = DONE
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # starts the next pipelined request, if one waits
        self._watch(progress=True)  # whose body, then, is read from now

    # -- the deadlines -----------------------------------------------------------------------

    def _watch(self, progress: bool) -> None:
        """The deadline that applies in the connection's state now."""
        if self.transport.is_closing():
            self._disarm()
            self.waiting.pop(self, None)
            return
        cycle = self.cycle
        answering = cycle is not None and not cycle.response_complete
        if self._state is BODY:
            if answering:
                self.waiting.pop(self, None)  # a request is being read
                if progress or self._deadline_kind != "body":
                    self._arm("body", self.body_timeout)  # per chunk
            elif self._deadline_kind != "rest":
                # Answered already: what is left of the body is read and dropped, within a
                # time in all (so trickling bytes cannot hold the connection), and the
                # connection may be closed to make room, as an idle one.
                self._arm("rest", self.body_timeout)
                self.waiting[self] = None
        elif answering:  # a request is being answered (the next one's head is not timed yet)
            self.waiting.pop(self, None)
            self._disarm()
        else:  # waiting for a request
            if self not in self.waiting:  # kept alive after an answer: waits from now
                self.waiting[self] = None
            if self._state is HEAD:
                if self._deadline_kind != "head":  # from its first byte, not re-armed
                    self._arm("head", self.header_timeout)
            elif self._deadline_kind != "head":
                # Kept alive, nothing of a head yet: uvicorn's keep-alive timeout applies (armed
                # again here when the rest of an answered body cancelled it).
                self._state = IDLE
                self._disarm()
                if self.timeout_keep_alive_task is None:
                    self.timeout_keep_alive_task = self.loop.call_later(
                        self.timeout_keep_alive, self.timeout_keep_alive_handler
                    )

    def _arm(self, kind: str, seconds: float) -> None:
        self._disarm()
        self._excused = False
        self._deadline_kind = kind
        self._deadline = self.loop.call_later(seconds, self._expired, kind)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline, self._deadline_kind = None, None

    def _expired(self, kind: str) -> None:
        self._deadline, self._deadline_kind = None, None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        answering = cycle is not None and not cycle.response_complete
        if kind == "head" and not answering and self._state in (IDLE, HEAD):
            log.debug("%s: no complete request head in %.3g s", self._peer(), self.header_timeout)
            self._shut()
        elif kind == "rest" and self._state is BODY and not answering:
            self._shut()
        elif kind == "body" and self._state is BODY and answering:
            # The request waits behind one pipelined before it, the application has not read
            # what came (reading is paused), or it has not asked for the body that the client
            # waits to be asked for (Expect: 100-continue): not the client's doing; look again
            # later, and once it no longer is, the client has one more full period (that wait
            # may have ended only now).
            excused = bool(self.pipeline) or self.flow.read_paused
            excused = excused or cycle.waiting_for_100_continue
            if excused or self._excused:
                self._arm("body", self.body_timeout)
                self._excused = excused
                return
            log.info("%s: request body stalled for %.3g s; 408", self._peer(), self.body_timeout)
            self._answer(408, BODY_TIMEOUT_DETAIL)
        else:
            self._watch(progress=False)

    def _stop_send_deadline(self) -> None:
        if self._send_deadline is not None:
            self._send_deadline.cancel()
            self._send_deadline = None

    def _send_stalled(self) -> None:
        self._send_deadline = None
        if self.transport.is_closing() or not self.flow.write_paused:
            return
        log.info("%s: answer not taken in for %.3g s; dropped", self._peer(), self.body_timeout)
        if self.cycle is not None:
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        self.transport.abort()
        self.waiting.pop(self, None)
        self.connections.discard(self)

    # -- refusals ----------------------------------------------------------------------------

    def _head_size(self) -> int:
        """The head being read, as parsed: request line and header lines."""
        line = len(self.parser.get_method()) + len(self.url) + len(b"  HTTP/1.1\r\n")
        return line + sum(len(name) + len(value) + 4 for name, value in self.headers) + 2

    def _head_too_large(self) -> None:
        log.info("%s: request head over %d bytes; 431", self._peer(), MAX_HEAD_BYTES)
        self._answer(431, HEAD_TOO_LARGE_DETAIL)

    def _answer(self, status: int, detail: bytes) -> None:
        """Answer the request being read with `status` (`detail`, JSON) and close, if nothing
        has been written for it and no earlier answer is being written; else only close. The
        application's receive() then returns http.disconnect and its send() does nothing."""
        cycle = self.cycle
        if self._state is HEAD:  # no cycle of its own yet
            free = cycle is None or cycle.response_complete
        else:
            free = not cycle.response_started
            cycle.disconnected = True
            cycle.message_event.set()
        if free and not self.pipeline:
            content = [STATUS_LINE[status]]
            for name, value in self.server_state.default_headers:
                content.extend([name, b": ", value, b"\r\n"])
            content.append(b"content-type: application/json\r\nconnection: close\r\n")
            content.append(b"content-length: %d\r\n\r\n%s" % (len(detail), detail))
            self.transport.write(b"".join(content))
        self._shut()

    def _shut(self) -> None:
        """Close the transport, and stop counting this connection at once (uvloop reports the
        loss an iteration or more later; till then it would count against the cap)."""
        self.transport.close()
        self.waiting.pop(self, None)
        self.connections.discard(self)

    def _make_room(self) -> bool:
        """Close the connection that has waited longest for a request head; False if none."""
        oldest = next(iter(self.waiting), None)
        if oldest is None:
            return False
        del self.waiting[oldest]
        self._warn("the longest-waiting connections without a request are closed")
        oldest._disarm()
        oldest._shut()
        return True

    def _refuse(self) -> None:
        self._warn("every one is busy with a request, so new ones get 503")
        self.transport.write(OVER_CAPACITY)
        self._shut()

    def _warn(self, what: str) -> None:
        now = time.monotonic()
        if now - GuardedHttpToolsProtocol._last_warned >= WARN_EVERY_S:
            GuardedHttpToolsProtocol._last_warned = now
            log.warning(
                "%d connections open (TRAINSERVE_MAX_CONNECTIONS): %s", self.max_connections, what
            )

    def _peer(self) -> str:
        return f"{self.client[0]}:{self.client[1]}" if self.client else "a client"


def protocol_class(settings: Settings, max_connections: int) -> type[GuardedHttpToolsProtocol]:
    """GuardedHttpToolsProtocol with this configuration's limits."""
    return type(
        "GuardedHttpToolsProtocol",
        (GuardedHttpToolsProtocol,),
        {
            "header_timeout": settings.header_timeout_seconds,
            "body_timeout": settings.body_timeout_seconds,
            "max_connections": max_connections,
            "waiting": {},
        },
    )
