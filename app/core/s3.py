"""The artifact store in an S3-compatible bucket (AWS S3, MinIO, Ceph RGW, R2, GCS interop).

Same keys and contract as `LocalArtifactStore`, under `s3://bucket/prefix`:

- a put is one PutObject (S3 makes it atomic: readers see the old object or the new one), with
  its MD5 for the server to check in transit and its sha256 in the object's metadata; it
  returns only once a HEAD shows the object readable with that size and sha256;
- transient failures (connection refused or reset, timeouts, 5xx, SlowDown) are retried with
  exponential backoff for `retry_seconds`, then raise StoreUnavailable naming the store;
  refused credentials raise it at once;
- credentials come from boto3's standard chain (environment, profile, instance role) and are
  never logged nor put in a message; neither is the endpoint URL (it may carry a userinfo).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import tempfile
import time
from typing import BinaryIO

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from app.core.artifacts import ArtifactMissing, StoreUnavailable, check_key
from models.files import sha256_hex

log = logging.getLogger(__name__)

MISSING = {"404", "NoSuchKey", "NotFound"}
DENIED = {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"}
NO_BUCKET = {"NoSuchBucket"}
SPOOL_BYTES = 64 * 1024**2  # `open` keeps up to this much in memory, the rest in a temp file
# At DEBUG these log request headers, whose Authorization names the access key: they are held
# at WARNING unless set to INFO or above on purpose.
QUIET_LOGGERS = ("botocore", "boto3", "s3transfer", "urllib3")


def _quiet_client_logs() -> None:
    for name in QUIET_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level < logging.INFO:  # NOTSET (inherits, maybe DEBUG) or DEBUG
            logger.setLevel(logging.WARNING)


class S3ArtifactStore:
    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        retry_seconds: float = 2.0,
        client=None,
    ) -> None:
        if not bucket:
            raise ValueError("the artifact store URL s3://bucket/prefix names no bucket")
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.name = f"s3://{bucket}/{self.prefix}"
        self.retry_seconds = retry_seconds
        _quiet_client_logs()
        config = Config(
            connect_timeout=3,
            read_timeout=30,
            retries={"max_attempts": 1, "mode": "standard"},  # our own loop retries
            s3={"addressing_style": "path"} if endpoint_url else None,
        )
        self.client = client or boto3.session.Session().client(
            "s3", endpoint_url=endpoint_url, config=config
        )

    # -- the contract -----------------------------------------------------------------------

    def put(self, key: str, data: bytes) -> str:
        full = self._key(key)
        sha256 = sha256_hex(data)
        md5 = base64.b64encode(hashlib.md5(data).digest()).decode()  # noqa: S324 - S3's check

        def write() -> None:
            self.client.put_object(
                Bucket=self.bucket,
                Key=full,
                Body=data,
                ContentMD5=md5,
                Metadata={"sha256": sha256},
            )
            head = self.client.head_object(Bucket=self.bucket, Key=full)
            if head["ContentLength"] != len(data) or head["Metadata"].get("sha256") != sha256:
                raise StoreUnavailable(
                    f"the artifact store {self.name} did not keep {key} as written"
                )

        self._retry(f"store {key}", write)
        return sha256

    def get(self, key: str) -> bytes:
        full = self._key(key)

        def read() -> bytes:
            response = self.client.get_object(Bucket=self.bucket, Key=full)
            data = response["Body"].read()
            if len(data) != response["ContentLength"]:  # the connection dropped mid-body
                raise ConnectionError(f"short read of {key}")
            return data

        return self._retry(f"read {key}", read, key)

    def open(self, key: str) -> BinaryIO:
        full = self._key(key)

        def download() -> BinaryIO:
            handle = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115
            try:
                self.client.download_fileobj(self.bucket, full, handle)
                handle.seek(0)
            except BaseException:
                handle.close()
                raise
            return handle

        return self._retry(f"read {key}", download, key)

    def exists(self, key: str) -> bool:
        full = self._key(key)

        def head() -> bool:
            self.client.head_object(Bucket=self.bucket, Key=full)
            return True

        try:
            return self._retry(f"look up {key}", head, key)
        except ArtifactMissing:
            return False

    def delete(self, key: str) -> None:
        full = self._key(key)
        self._retry(
            f"delete {key}", lambda: self.client.delete_object(Bucket=self.bucket, Key=full)
        )

    def list(self, prefix: str) -> list[str]:
        def scan() -> list[str]:
            found = []
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix + prefix
            )
            for page in pages:
                found.extend(item["Key"][len(self.prefix) :] for item in page.get("Contents", []))
            return sorted(found)

        return self._retry(f"list {prefix!r}", scan)

    def where(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def check(self) -> None:
        self._retry("reach the bucket", lambda: self.client.head_bucket(Bucket=self.bucket))

    # -- retries and errors -----------------------------------------------------------------

    def _key(self, key: str) -> str:
        return self.prefix + check_key(key)

    def _retry(self, what: str, call, key: str | None = None):
        """`call()`, retried with backoff while the failure is transient; ArtifactMissing for a
        missing `key`, StoreUnavailable once retries run out or credentials are refused."""
        delay, deadline = 0.1, time.monotonic() + self.retry_seconds
        while True:
            try:
                return call()
            except ClientError as exc:
                error = exc.response.get("Error", {})
                code = str(error.get("Code", ""))
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
                if key is not None and (code in MISSING or status == 404):
                    raise ArtifactMissing(key) from None
                if code in NO_BUCKET or (key is None and status == 404):
                    raise StoreUnavailable(
                        f"the artifact store {self.name} has no bucket {self.bucket!r}: create it"
                    ) from None
                if code in DENIED or status == 403:
                    raise StoreUnavailable(
                        f"the artifact store {self.name} refused our credentials ({code}) to "
                        f"{what}: check the AWS credentials the service runs with"
                    ) from None
                if status and status < 500 and code not in {"SlowDown", "RequestTimeout"}:
                    raise StoreUnavailable(
                        f"the artifact store {self.name} refused to {what} ({code or status})"
                    ) from None
                reason = code or str(status)
            except (BotoCoreError, ConnectionError, OSError) as exc:
                reason = type(exc).__name__
            if time.monotonic() + delay > deadline:
                raise StoreUnavailable(
                    f"the artifact store {self.name} does not answer ({reason}) when asked to "
                    f"{what}, after {self.retry_seconds:.0f} s of retries; try again once it is "
                    "back"
                ) from None
            log.warning(
                "artifact store %s: %s failed (%s); retrying in %.2f s",
                self.name,
                what,
                reason,
                delay,
            )
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
