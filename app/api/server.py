"""The API under uvicorn (`trainserve api`, `serve`): the guarded protocol (app/api/protocol.py)
with this configuration's limits, the connection cap within the open files limit, and one or
several processes on one socket."""

from __future__ import annotations

import logging
import resource
from typing import Any

import uvicorn

from app.api.protocol import GuardedHttpToolsProtocol, protocol_class
from app.core.settings import Settings

log = logging.getLogger(__name__)

FD_RESERVE = 128  # open files kept for the rest: database and broker connections, files, logs
GRACEFUL_SHUTDOWN_S = 8  # then open requests (event streams) are cancelled; Docker waits 10 s


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
    options["http"] = GuardedHttpToolsProtocol
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
    GuardedHttpToolsProtocol.header_timeout = settings.header_timeout_seconds
    GuardedHttpToolsProtocol.body_timeout = settings.body_timeout_seconds
    GuardedHttpToolsProtocol.max_connections = max_connections
    return create_app(settings)
