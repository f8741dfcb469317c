"""What idle event streams cost the API: CPU seconds and job reads over a window.

The app is served by uvicorn in a thread of this process (SQLite, the in-memory broker); the
streams are raw sockets of this process that read nothing once their first event has come, so
what this process spends in the window is the server's. Jobs are queued with no worker: every
stream is idle (keep-alive comments only).

    python bench/event_streams.py                      # 200 streams of one job, 200 of 200 jobs
    python bench/event_streams.py --streams 50 --window 3
    python bench/event_streams.py --tree /tmp/old      # another checkout (before/after)
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--window", type=float, default=5.0, help="seconds measured")
    parser.add_argument("--tree", type=Path, default=Path(__file__).resolve().parents[1])
    args = parser.parse_args()
    sys.path.insert(0, str(args.tree.resolve()))
    os.environ["TRAINSERVE_MAX_STREAMS_PER_KEY"] = str(args.streams * 2)  # where it exists

    import httpx

    from app.api.main import create_app
    from app.core.services import build_services
    from tests.app.conftest import KEY, make_settings
    from tests.security.server import serve

    print(f"tree {args.tree}; {args.streams} streams; {args.window:.0f} s window")
    for jobs in (1, args.streams):
        with tempfile.TemporaryDirectory() as tmp:
            services = build_services(make_settings(Path(tmp), max_queued_jobs=100_000))
            reads = [0]
            get_job = services.store.get_job

            def counted(job_id, get_job=get_job, reads=reads):
                reads[0] += 1
                return get_job(job_id)

            services.store.get_job = counted
            app = create_app(services=services)
            with serve(app) as url, ExitStack() as stack:
                headers = {"Authorization": f"Bearer {KEY}"}
                job_ids = [
                    httpx.post(
                        f"{url}/v1/jobs",
                        headers=headers,
                        json={
                            "model_name": "house",
                            "architecture": "house_prices_mlp",
                            "dataset": "boston_housing",
                        },
                    ).json()["id"]
                    for _ in range(jobs)
                ]
                port = int(url.rsplit(":", 1)[1])
                for i in range(args.streams):
                    sock = stack.enter_context(socket.create_connection(("127.0.0.1", port)))
                    sock.sendall(
                        f"GET /v1/jobs/{job_ids[i % jobs]}/events HTTP/1.1\r\nHost: x\r\n"
                        f"Authorization: Bearer {KEY}\r\n\r\n".encode()
                    )
                    received = b""
                    while b"event: job" not in received:
                        chunk = sock.recv(65536)
                        if not chunk:
                            raise SystemExit(f"stream {i} refused: {received[:300]!r}")
                        received += chunk
                time.sleep(1.0)  # settle
                usage, before, start = resource.getrusage(resource.RUSAGE_SELF), reads[0], 0.0
                start = time.monotonic()
                time.sleep(args.window)
                after = resource.getrusage(resource.RUSAGE_SELF)
                elapsed = time.monotonic() - start
                cpu = (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime)
                print(
                    f"  {args.streams} idle streams of {jobs} job(s): "
                    f"{100 * cpu / elapsed:.1f} % of a core, "
                    f"{(reads[0] - before) / elapsed:.0f} job reads/s"
                )


if __name__ == "__main__":
    main()
