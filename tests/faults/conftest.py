"""Fault injection with real processes: a Redis server of our own (so it can be restarted),
a PostgreSQL database, the API and workers, all stopped at the end, also on failure."""

import shutil

import pytest

from tests.e2e.processes import Process, Service, answers, free_port, postgres_database, wait_until

FAST_RECOVERY = {
    "TRAINSERVE_HEARTBEAT_SECONDS": "0.5",
    "TRAINSERVE_HEARTBEAT_TIMEOUT_SECONDS": "3",
    "TRAINSERVE_REAPER_INTERVAL_SECONDS": "0.5",
    "TRAINSERVE_RESEND_AFTER_SECONDS": "2",
    "TRAINSERVE_MAX_ATTEMPTS": "3",
}


class RedisServer:
    """A redis-server we own, on a free port, that a test may stop and start again."""

    def __init__(self, tmp):
        self.tmp, self.port = tmp, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = None

    def start(self):
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed: run `make test`, which installs it"
        self.proc = Process(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            {},
            self.tmp / "redis.log",
        )
        wait_until(lambda: answers("127.0.0.1", self.port), 10, "redis-server")

    def stop(self):
        if self.proc:
            self.proc.stop()
            self.proc = None


@pytest.fixture(scope="module")
def redis(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def service(tmp_path, redis):
    with postgres_database() as database_url:
        env = {
            "TRAINSERVE_DATABASE_URL": database_url,
            "TRAINSERVE_BROKER_URL": redis.url,
            **FAST_RECOVERY,
        }
        service = Service(tmp_path, env)
        try:
            yield service
        finally:
            service.stop()
