"""The one typed settings class (env prefix TRAINSERVE_), validated at start-up."""

from __future__ import annotations

import ipaddress
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRAINSERVE_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    data_dir: Path = Path(".trainserve")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; SQLite in data_dir if unset"
    )
    auto_migrate: bool = Field(
        False, description="apply pending migrations at start-up (the embedded default always does)"
    )
    broker_url: str | None = Field(None, description="Celery broker; files in data_dir if unset")
    broker_poll_seconds: float = Field(
        0.02,
        ge=0.005,
        le=10,
        description="the embedded file broker's poll interval: a job waits about half of it",
    )
    api_keys: str = Field("", description="comma-separated accepted API keys")
    allow_downloads: bool = False

    # The artifact store: weights, uploaded datasets, training checkpoints (app/core/artifacts.py).
    artifacts_url: str | None = Field(
        None,
        description="file:///path or s3://bucket/prefix; the data dir if unset. S3 credentials "
        "come from the standard AWS chain (env, profile, instance role), never from here",
    )
    s3_endpoint_url: str | None = Field(
        None,
        description="an S3-compatible server that is not AWS (MinIO, Ceph RGW, R2)",
        repr=False,  # it may carry a userinfo
    )
    artifacts_retry_seconds: float = Field(
        2.0, ge=0, description="how long the API retries a store that does not answer"
    )
    worker_artifacts_retry_seconds: float = Field(
        300.0, ge=0, description="how long a worker retries it before the job waits in the queue"
    )
    artifact_cache_bytes: int = Field(
        2 * 1024**3, ge=0, description="a worker's local cache of downloaded datasets (by sha256)"
    )
    log_level: str = "INFO"

    # Limits: a request over one gets a 413 or 422 naming it.
    max_body_bytes: int = Field(10 * 1024 * 1024, ge=1024)
    max_upload_bytes: int = Field(100 * 1024 * 1024, ge=1024)
    max_dataset_bytes: int = Field(
        512 * 1024 * 1024, ge=1024, description="values of an uploaded dataset once read"
    )
    max_parallel_uploads: int = Field(2, ge=1, le=64, description="uploads parsed at once")
    max_predict_samples: int = Field(1024, ge=1)
    max_predict_work_bytes: int = Field(  # memory is bounded by chunks; this bounds the work
        4 * 1024**3, ge=1024, description="samples x the model's activation bytes per sample"
    )
    predict_chunk_bytes: int = Field(
        64 * 1024**2, ge=1024, description="activation bytes of one forward (chunks of samples)"
    )
    max_epochs: int = Field(10_000, ge=1)
    max_batch_size: int = Field(65_536, ge=1)
    max_queued_jobs: int = Field(100, ge=1, description="queued jobs per API key")
    max_job_seconds: int = Field(6 * 3600, ge=10, description="longest a job may run")
    max_job_memory_bytes: int = Field(
        8 * 1024**3, ge=1024**2, description="estimated memory of one training step, at most"
    )

    # Connections: how long a client may take, and how many it may hold (app/api/server.py).
    header_timeout_seconds: float = Field(
        10.0, gt=0, description="a request head (line and headers) must arrive within this"
    )
    body_timeout_seconds: float = Field(
        30.0,
        gt=0,
        description="longest wait for the next chunk of a request body (then 408), or for the "
        "client to take in more of an answer (then the connection is dropped)",
    )
    keep_alive_seconds: float = Field(5.0, gt=0, description="an idle kept-alive connection")
    max_connections: int = Field(
        512, ge=2, description="open connections; idle ones make room, then 503 (open files cap it)"
    )
    max_streams_per_key: int = Field(
        20, ge=1, description="GET /v1/jobs/{id}/events streams open at once per API key"
    )

    # Workers and inference.
    heartbeat_seconds: float = Field(5.0, gt=0)
    heartbeat_timeout_seconds: float = Field(
        30.0, gt=0, description="a running job whose heartbeat is older is re-sent"
    )
    max_attempts: int = Field(3, ge=1, description="runs of a job before it is failed")
    db_retry_seconds: float = Field(
        2.0, ge=0, description="how long the API retries a dropped database connection"
    )
    worker_db_retry_seconds: float = Field(
        120.0, ge=0, description="how long a worker retries it (a restart, a failover)"
    )
    reaper_interval_seconds: float = Field(5.0, gt=0)
    resend_after_seconds: float = Field(
        60.0, gt=0, description="a queued job not picked up for this long is sent again"
    )
    checkpoint_every: int = Field(1, ge=1, description="epochs between training checkpoints")
    model_cache_models: int = Field(8, ge=1)
    model_cache_bytes: int = Field(1024**3, ge=1024)
    inference_threads: int = Field(
        2,
        ge=1,
        le=64,
        description="forwards running at once (each one batch; of one model "
        "version too, so that a batch runs while the last one's answers are sent)",
    )
    inference_intra_op_threads: int = Field(
        0,
        ge=0,
        le=256,
        description="torch intra-op threads of the API's forwards (0: one per core); "
        "OMP_WAIT_POLICY is PASSIVE in the API unless set",
    )
    predict_backend: Literal["auto", "eager", "onnx"] = Field(
        "auto",
        description="how loaded versions run: eager PyTorch, ONNX Runtime (the version's ONNX "
        "export, made by the worker that published it (export_on_publish) or else once by a "
        "child process of the API, kept in the artifact store, checked against eager when it "
        "is loaded; eager answers until then), or auto: ONNX Runtime for the "
        "built-in architectures where it measured at least 1.3x faster (docs/benchmarks.md), "
        "else eager",
    )
    export_timeout_seconds: float = Field(
        300.0,
        gt=0,
        le=3600,
        description="how long the child process that makes an ONNX or pt2 export may run "
        "before it is killed (the export then fails: 503 for a download, eager for predictions)",
    )
    export_on_publish: bool = Field(
        True,
        description="workers make the ONNX export of each version they publish that the API "
        "serves with ONNX Runtime (predict_backend), so that its first predictions do not wait "
        "for it and API hosts never run the exporter; off: the API makes it on first use",
    )
    predict_max_batch: int = Field(
        32, ge=1, le=65_536, description="samples in one batched forward, at most"
    )
    predict_max_wait_ms: float = Field(
        0.0,
        ge=0,
        le=10_000,
        description="how long a batch waits for more requests after its first one (0: batch "
        "only what is already waiting)",
    )
    predict_max_queue: int = Field(
        256, ge=1, description="requests waiting per model version; beyond, 503 + Retry-After"
    )
    registry_check_ms: float = Field(
        50.0,
        gt=0,
        le=60_000,
        description="how often the API asks the job store whether models, versions or aliases "
        "changed (another process) to refresh the versions it has resolved",
    )
    worker_stale_seconds: float = Field(
        60.0, gt=0, description="a worker whose device heartbeat is older is not counted"
    )
    delete_pause_seconds: float = Field(
        0.0,
        ge=0,
        le=600,
        description="fault tests only: pause between a deletion's rows and its files",
    )
    worker_liveness_file: Path = Field(
        Path(tempfile.gettempdir()) / "trainserve-worker.alive",
        description="touched every few seconds by a live worker; its health check reads it",
    )

    @field_validator("artifacts_url")
    @classmethod
    def _artifacts_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        scheme, _, rest = value.partition("://")
        if scheme == "file" and rest.startswith("/"):
            return value
        if scheme == "s3" and rest.split("/", 1)[0]:
            return value
        raise ValueError(
            "TRAINSERVE_ARTIFACTS_URL must be file:///absolute/path or s3://bucket/prefix"
        )

    @field_validator("s3_endpoint_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        return value or None  # compose passes an unset variable as ""

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @model_validator(mode="after")
    def _keys_beyond_loopback(self) -> Settings:
        """Listening beyond loopback needs configured keys (a generated key file is for one
        machine). Checked here, so `uvicorn --factory` cannot skip it."""
        try:
            loopback = ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            loopback = self.host == "localhost"
        if not loopback and not self.keys:
            raise ValueError(
                f"refusing to listen on {self.host} without configured keys: "
                "set TRAINSERVE_API_KEYS (comma-separated) or listen on 127.0.0.1"
            )
        return self

    @property
    def keys(self) -> list[str]:
        return [k.strip() for k in self.api_keys.split(",") if k.strip()]

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'trainserve.db'}"

    @property
    def effective_broker_url(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def broker_dir(self) -> Path:
        return self.data_dir / "broker"

    @property
    def broker_queue_dir(self) -> Path:
        return self.broker_dir / "queue"

    @property
    def broker_control_dir(self) -> Path:
        """kombu's exchange tables (by default it writes them to ./control of any folder)."""
        return self.broker_dir / "control"

    def make_dirs(self) -> None:
        """The data dir's folders (the embedded broker's too), created when missing."""
        for directory in (self.weights_dir, self.uploads_dir, self.checkpoints_dir):
            directory.mkdir(parents=True, exist_ok=True)
        if self.broker_url is None:
            self.broker_queue_dir.mkdir(parents=True, exist_ok=True)
            self.broker_control_dir.mkdir(parents=True, exist_ok=True)

    @property
    def weights_dir(self) -> Path:
        return self.data_dir / "weights"

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "datasets"

    @property
    def checkpoints_dir(self) -> Path:
        return self.data_dir / "checkpoints"

    @property
    def cache_dir(self) -> Path:
        """A worker's cache of objects downloaded from a remote artifact store."""
        return self.data_dir / "cache"

    @property
    def api_key_file(self) -> Path:
        """The key generated when TRAINSERVE_API_KEYS is unset (the API writes it, the client
        reads it)."""
        return self.data_dir / "api_key"

    @property
    def metrics_dir(self) -> Path:
        """prometheus-client's multiprocess files of the API's processes (emptied at start)."""
        return self.data_dir / "prometheus"


@lru_cache
def get_settings() -> Settings:
    return Settings()
