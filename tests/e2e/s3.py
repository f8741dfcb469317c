"""An S3 server for tests: moto's server mode on a free loopback port, spoken to over HTTP.

It runs in the test process (a thread), so a test may stop it and start it again on the same
port with its objects kept, as a real S3 outage would leave them.
"""

from __future__ import annotations

import logging
import uuid
from contextlib import contextmanager

import boto3
from moto.server import ThreadedMotoServer

from tests.e2e.processes import answers, free_port, wait_until

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "trainserve-test-key",
    "AWS_SECRET_ACCESS_KEY": "trainserve-test-secret-do-not-echo",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class MotoS3:
    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.server: ThreadedMotoServer | None = None
        logging.getLogger("werkzeug").setLevel(logging.ERROR)

    def start(self) -> None:
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()
        wait_until(lambda: answers("127.0.0.1", self.port), 10, "the moto S3 server")

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    @property
    def running(self) -> bool:
        return self.server is not None

    def client(self):
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
        )

    def new_bucket(self) -> str:
        name = f"trainserve-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def env(self, bucket: str, prefix: str = "artifacts") -> dict[str, str]:
        """What a trainserve process needs to use `bucket` (credentials by the AWS chain)."""
        return {
            **CREDENTIALS,
            "TRAINSERVE_ARTIFACTS_URL": f"s3://{bucket}/{prefix}",
            "TRAINSERVE_S3_ENDPOINT_URL": self.endpoint,
        }


@contextmanager
def moto_s3():
    server = MotoS3()
    server.start()
    try:
        yield server
    finally:
        server.stop()
