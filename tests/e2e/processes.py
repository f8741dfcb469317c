"""Real processes for end-to-end tests: Redis, PostgreSQL databases, the API and workers.

Every process is started in its own session so that it and its children (Celery's pool) can
be stopped together, and every fixture stops what it started, also when a test fails.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx

VENV_BIN = Path(sys.executable).parent
TRAINSERVE = str(VENV_BIN / "trainserve")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def wait_until(predicate, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


class Process:
    """A child process in its own session, with its output in a log file."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path, cwd: Path | None = None):
        self.argv, self.log = argv, log
        self._log_file = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            os.killpg(self.popen.pid, sig)

    def stop(self, timeout: float = 20.0) -> None:
        try:
            self.signal(signal.SIGTERM)
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        finally:
            # The session may hold children (Celery's pool) even after the leader exited.
            with suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait()
            self._log_file.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def redis_server(tmp: Path):
    """The machine's Redis on 127.0.0.1:6379 (database 13, or TRAINSERVE_TEST_REDIS_DB; the
    next ones for pytest-xdist's further workers), else one we start."""
    if answers("127.0.0.1", 6379):
        import redis

        db = int(os.environ.get("TRAINSERVE_TEST_REDIS_DB", "13"))  # parallel checkouts differ
        db += int(os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:])
        client = redis.Redis(port=6379, db=db)
        client.flushdb()
        try:
            yield f"redis://127.0.0.1:6379/{db}"
        finally:
            client.flushdb()
        return
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("no Redis on 127.0.0.1:6379 and no redis-server: run `make test`")
    port = free_port()
    proc = Process(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        dict(os.environ),
        tmp / "redis.log",
    )
    try:
        wait_until(lambda: answers("127.0.0.1", port), 10, "redis-server")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.stop()


@contextmanager
def postgres_database():
    """A fresh database, dropped afterwards, on the server of TEST_POSTGRES_URL (an admin URL)
    or the local one (127.0.0.1:5432, trust auth); the test is skipped only where none exists."""
    import psycopg
    import pytest

    admin_url = os.environ.get("TEST_POSTGRES_URL")
    if admin_url is None:
        if not answers("127.0.0.1", 5432):
            pytest.skip(
                "no PostgreSQL server answers on 127.0.0.1:5432 (this machine kind has one)"
            )
        admin_url = "postgresql://postgres@127.0.0.1:5432/postgres"
    name = f"trainserve_test_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=3) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Service:
    """`trainserve api` and workers as real processes, talked to over HTTP."""

    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.key = "e2e-" + uuid.uuid4().hex
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("TRAINSERVE_")},
            "TRAINSERVE_DATA_DIR": str(tmp / "data"),
            "TRAINSERVE_PORT": str(self.port),
            "TRAINSERVE_API_KEYS": self.key,
            "TRAINSERVE_HEARTBEAT_SECONDS": "1",
            # No child process exporting each version before its job ends (seconds of CPU
            # per job): the API makes an export where a test asks for one. The default (on)
            # runs under `trainserve serve` (test_embedded.py).
            "TRAINSERVE_EXPORT_ON_PUBLISH": "false",
            **env,
        }
        self.url = f"http://127.0.0.1:{self.port}"
        self.processes: list[Process] = []
        self.api: Process | None = None
        self.migrated = False

    def start_api(self) -> Process:
        self.api = self._start([TRAINSERVE, "api"], "api")
        wait_until(self._ready, 60, f"the API to be ready ({self.api.log})")
        return self.api

    def start_worker(self, name: str = "worker", env: dict[str, str] | None = None) -> Process:
        """`env` is laid over the service's (a worker on another host: its own data dir)."""
        return self._start([TRAINSERVE, "worker", "--concurrency", "1"], name, env)

    def migrate(self) -> None:
        """`trainserve db upgrade`, as an operator runs it before starting the service."""
        result = subprocess.run(
            [TRAINSERVE, "db", "upgrade"], env=self.env, capture_output=True, text=True, timeout=120
        )
        if result.returncode != 0:
            raise RuntimeError(f"trainserve db upgrade failed:\n{result.stdout}{result.stderr}")
        self.migrated = True

    def _start(self, argv: list[str], name: str, env: dict[str, str] | None = None) -> Process:
        if not self.migrated:
            self.migrate()
        env = {**self.env, **(env or {})}
        proc = Process(argv, env, self.tmp / f"{name}-{len(self.processes)}.log")
        self.processes.append(proc)
        return proc

    def _ready(self) -> bool:
        if self.api and not self.api.alive():
            raise RuntimeError(f"the API exited:\n{self.api.output()[-3000:]}")
        try:
            return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def client(self, key: str | None = "default") -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.key if key == 'default' else key}"}
        return httpx.Client(base_url=self.url, headers=headers if key else {}, timeout=30)

    def stop(self) -> None:
        for proc in reversed(self.processes):
            proc.stop()

    def logs(self) -> str:
        return "\n".join(f"--- {p.log.name}\n{p.output()[-4000:]}" for p in self.processes)


@contextmanager
def embedded_serve(cwd: Path, env: dict[str, str] | None = None):
    """`trainserve serve` on its embedded defaults (plus `env`), run from `cwd` (its data dir is
    `cwd/.trainserve`), until the block ends; yields (process, URL) once it is ready."""
    port = free_port()
    extra = env or {}
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINSERVE_")}
    env.update(extra)
    env["TRAINSERVE_PORT"] = str(port)
    proc = Process([TRAINSERVE, "serve"], env, cwd / "serve.log", cwd=cwd)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert proc.alive(), proc.output()
        try:
            return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(ready, 60, "trainserve serve to be ready")
        yield proc, url
    finally:
        proc.stop()


def wait_for_job(client: httpx.Client, job_id: str, statuses: set[str], timeout: float = 120):
    def status():
        job = client.get(f"/v1/jobs/{job_id}").json()
        return job if job["status"] in statuses else None

    return wait_until(status, timeout, f"job {job_id} to reach {sorted(statuses)}", 0.3)
