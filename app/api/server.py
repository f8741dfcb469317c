"""The API under uvicorn, configured against slow and idle clients (`trainserve api`, `serve`).

uvicorn on its own closes an idle kept-alive connection (`timeout_keep_alive`), answers 503
beyond `limit_concurrency` and bounds the size of a request head
(`h11_max_incomplete_event_size`), but it waits for ever for the rest of a request head or body:
a client that sends half a head, half a body or nothing at all holds its connection, and a file
descriptor, for as long as it likes. `GuardedH11Protocol` (uvicorn's h11 protocol, plus timers)
adds what is missing:

- a request head (request line and headers) must be complete within `header_timeout_seconds`
  of the connection being opened, or of its first byte on a kept-alive connection; otherwise
  the connection is closed;
- while a request body is awaited, each next chunk must come within `body_timeout_seconds`
  (otherwise 408 and the connection is closed); once the answer has been sent (a 401 or 413
  sent before the body was read), what is left of the body must come within that time in all;
- an answer the client does not take in: when the write buffer stays full (writing paused) for
  `body_timeout_seconds`, the connection is dropped (aborted: a close would wait for the
  buffer to drain);
- at most `max_connections` connections are open: when one more comes, the connection that
  has waited longest without sending a request (idle, half a head, kept alive) is closed to make
  room, so a client that sends its request at once is served however many idle sockets others
  hold; only when every connection is busy with a request does the new one get a 503, closed at
  once. The file descriptors in use stay bounded (and the soft limit on open files is raised to
  the hard one at start).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import time
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from app.core.settings import Settings

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 16 * 1024  # request line and headers (h11's own default; said on purpose)
FD_RESERVE = 128  # open files kept for the rest: database and broker connections, files, logs
GRACEFUL_SHUTDOWN_S = 8  # then open requests (event streams) are cancelled; Docker waits 10 s
WARN_EVERY_S = 10.0

BODY_TIMEOUT_DETAIL = (
    b'{"detail":"the request body did not arrive in time (TRAINSERVE_BODY_TIMEOUT_SECONDS)"}'
)
OVER_CAPACITY_DETAIL = b'{"detail":"too many open connections (TRAINSERVE_MAX_CONNECTIONS)"}'
OVER_CAPACITY = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"content-type: application/json\r\n"
    b"retry-after: 1\r\n"
    b"connection: close\r\n"
    b"content-length: %d\r\n\r\n%s" % (len(OVER_CAPACITY_DETAIL), OVER_CAPACITY_DETAIL)
)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with deadlines for the request head and body, and a cap on open
    connections. The limits are class attributes: `protocol_class` makes a subclass per
    configuration (uvicorn builds one protocol per connection from the class it is given)."""

    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_connections: int = 512
    # Connections waiting for a request head, longest-waiting first (one dict per subclass).
    waiting: dict[GuardedH11Protocol, None] = {}

    _last_warned = 0.0  # over-capacity warnings, at most one every WARN_EVERY_S

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._deadline_kind: str | None = None  # "head", "body" or "rest" (after the answer)
        self._send_deadline: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections and not self._make_room():
            self._refuse()
            return
        self.waiting[self] = None
        self._arm("head", self.header_timeout)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
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

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch(progress=False)

    # -- the deadlines -----------------------------------------------------------------------

    def _watch(self, progress: bool) -> None:
        """The deadline that applies in the connection's state now."""
        if self.transport.is_closing():
            self._disarm()
            self.waiting.pop(self, None)
            return
        theirs = self.conn.their_state
        if theirs is h11.IDLE:
            if self not in self.waiting:  # kept alive after an answer: waits from now
                self.waiting[self] = None
            # Waiting for a request head: from its first byte (kept-alive connections: until
            # then uvicorn's keep-alive timeout applies), not re-armed by more bytes.
            if self.conn.trailing_data[0]:
                if self._deadline_kind != "head":
                    self._arm("head", self.header_timeout)
            elif self._deadline_kind != "head":
                self._disarm()
            return
        if theirs is h11.SEND_BODY:
            if self.conn.our_state in (h11.DONE, h11.MUST_CLOSE):
                # Answered already: what is left of the body is read and dropped, within a
                # time in all (so trickling bytes cannot hold the connection), and the
                # connection may be closed to make room, as an idle one.
                if self._deadline_kind != "rest":
                    self._arm("rest", self.body_timeout)
                    self.waiting[self] = None
            else:
                self.waiting.pop(self, None)  # a request is being read
                if progress or self._deadline_kind != "body":
                    self._arm("body", self.body_timeout)  # per chunk
        else:
            self.waiting.pop(self, None)  # a request is being answered
            self._disarm()

    def _arm(self, kind: str, seconds: float) -> None:
        self._disarm()
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
        theirs = self.conn.their_state
        if kind == "head" and theirs is h11.IDLE:
            log.debug("%s: no complete request head in %.3g s", self._peer(), self.header_timeout)
            self._close()
        elif kind == "rest" and theirs is h11.SEND_BODY:
            self._close()
        elif kind == "body" and theirs is h11.SEND_BODY:
            cycle = self.cycle
            if (
                cycle is not None
                and not cycle.response_complete
                and (self.flow.read_paused or cycle.waiting_for_100_continue)
            ):
                # The application has not read what came (reading is paused), or has not asked
                # for the body that the client waits to be asked for (Expect: 100-continue): not
                # the client's doing; look again later.
                self._arm("body", self.body_timeout)
                return
            log.info("%s: request body stalled for %.3g s; 408", self._peer(), self.body_timeout)
            self._answer_408()
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

    def _answer_408(self) -> None:
        cycle = self.cycle
        if cycle is not None:
            # The application's receive() now returns http.disconnect and its send() does
            # nothing: the connection is this protocol's to answer.
            answer = not cycle.response_started and self.conn.our_state is h11.SEND_RESPONSE
            cycle.disconnected = True
            cycle.message_event.set()
            if answer:
                headers = [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(BODY_TIMEOUT_DETAIL)).encode()),
                    (b"connection", b"close"),
                ]
                try:
                    output = self.conn.send(
                        h11.Response(status_code=408, headers=headers, reason=b"Request Timeout")
                    )
                    output += self.conn.send(h11.Data(data=BODY_TIMEOUT_DETAIL))
                    output += self.conn.send(h11.EndOfMessage())
                    self.transport.write(output)
                except h11.LocalProtocolError:
                    pass
        self._shut()

    def _close(self) -> None:
        with contextlib.suppress(h11.LocalProtocolError):
            self.conn.send(h11.ConnectionClosed())
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
        oldest._close()
        return True

    def _refuse(self) -> None:
        self._warn("every one is busy with a request, so new ones get 503")
        self.transport.write(OVER_CAPACITY)
        self._shut()

    def _warn(self, what: str) -> None:
        now = time.monotonic()
        if now - GuardedH11Protocol._last_warned >= WARN_EVERY_S:
            GuardedH11Protocol._last_warned = now
            log.warning(
                "%d connections open (TRAINSERVE_MAX_CONNECTIONS): %s", self.max_connections, what
            )

    def _peer(self) -> str:
        return f"{self.client[0]}:{self.client[1]}" if self.client else "a client"


def protocol_class(settings: Settings, max_connections: int) -> type[GuardedH11Protocol]:
    """GuardedH11Protocol with this configuration's limits."""
    return type(
        "GuardedH11Protocol",
        (GuardedH11Protocol,),
        {
            "header_timeout": settings.header_timeout_seconds,
            "body_timeout": settings.body_timeout_seconds,
            "max_connections": max_connections,
            "waiting": {},
        },
    )


def raise_open_files_limit() -> int:
    """Raise the soft limit on open files to the hard one; the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft if soft != resource.RLIM_INFINITY else target
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        log.warning("cannot raise the open files limit from %d to %d: %s", soft, target, exc)
        return soft
    return target


def connection_cap(max_connections: int, open_files: int) -> int:
    """TRAINSERVE_MAX_CONNECTIONS, lowered to leave FD_RESERVE of the open files for the rest."""
    room = max(open_files - FD_RESERVE, 2)
    if max_connections > room:
        log.warning(
            "TRAINSERVE_MAX_CONNECTIONS=%d is over what %d open files allow; using %d",
            max_connections,
            open_files,
            room,
        )
        return room
    return max_connections


def uvicorn_options(settings: Settings, max_connections: int) -> dict[str, Any]:
    """uvicorn's settings for the limits (also for tests that run uvicorn in a thread)."""
    return {
        "http": protocol_class(settings, max_connections),
        "timeout_keep_alive": settings.keep_alive_seconds,
        # uvicorn's own cap (503 to a request while this many connections or tasks are open):
        # a backstop, one over the protocol's, which counts the new connection before it makes
        # room for it.
        "limit_concurrency": max_connections + 1,
        "h11_max_incomplete_event_size": MAX_HEAD_BYTES,
        "ws": "none",  # no WebSocket routes: an upgrade request is answered as plain HTTP
        "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN_S,
    }


def serve(app: Any, settings: Settings) -> None:
    """Run `app` on settings.host:port until SIGINT or SIGTERM."""
    max_connections = connection_cap(settings.max_connections, raise_open_files_limit())
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        **uvicorn_options(settings, max_connections),
    )


def serve_processes(settings: Settings, processes: int) -> None:
    """`processes` uvicorn processes on one socket (uvicorn's supervisor restarts one that
    dies); each builds its own app (`process_app`). The limits apply per process."""
    max_connections = connection_cap(settings.max_connections, raise_open_files_limit())
    options = uvicorn_options(settings, max_connections)
    # The child processes are spawned: the protocol goes by reference, and each process gives
    # the class its limits (process_app), as protocol_class does for one process.
    options["http"] = GuardedH11Protocol
    uvicorn.run(
        "app.api.server:process_app",
        factory=True,
        workers=processes,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        **options,
    )


def process_app() -> Any:
    """The app of one of `serve_processes`' processes, its protocol's limits set first."""
    from app.api.main import create_app
    from app.core.settings import get_settings

    settings = get_settings()
    max_connections = connection_cap(settings.max_connections, raise_open_files_limit())
    GuardedH11Protocol.header_timeout = settings.header_timeout_seconds
    GuardedH11Protocol.body_timeout = settings.body_timeout_seconds
    GuardedH11Protocol.max_connections = max_connections
    return create_app(settings)
