"""Every Prometheus metric of the service, defined once (prometheus-client), with the small
functions that record them; the API and the workers share this module. Conventions: base units
(`_seconds`, `_bytes`), `_total` for counters, label values from bounded sets (route templates,
statuses, reasons, model names; job ids only on the gauge of running jobs' heartbeats).

Processes: `trainserve api` and `serve` run in prometheus-client's multiprocess mode
(PROMETHEUS_MULTIPROC_DIR = <data dir>/prometheus, emptied at start by
app/core/metrics_dir.py before this module is imported), so GET /metrics sums every process that
writes there (several uvicorn processes; `serve`'s worker). A worker on another host serves
its own metrics (`trainserve worker --metrics-port`). Job counts, queue depth and heartbeat
ages are read from the job store at scrape time (`StoreCollector`): the store is the truth.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from app.core.metrics_dir import multiprocess

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
JOB_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 3 * 3600, 6 * 3600, 24 * 3600)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
STAGES = ("queue_wait", "inference")
UNMATCHED_ROUTE = "unmatched"  # a request no route template matched (its 404)

# -- HTTP (recorded by app/api/metrics.py) ---------------------------------------------------
HTTP_REQUESTS = Counter(
    "trainserve_http_requests_total",
    "HTTP requests answered, by route template, method and status code",
    ["route", "method", "status"],
)
HTTP_DURATION = Histogram(
    "trainserve_http_request_duration_seconds",
    "time to answer an HTTP request (an event stream: its whole life), by route, method, status",
    ["route", "method", "status"],
    buckets=LATENCY_BUCKETS,
)

# -- jobs ------------------------------------------------------------------------------------
JOBS_SUBMITTED = Counter("trainserve_jobs_submitted_total", "training jobs created (POST /v1/jobs)")
JOB_QUEUE_WAIT = Histogram(
    "trainserve_job_queue_wait_seconds",
    "from submission to the first start of a job on a worker",
    buckets=JOB_BUCKETS,
)
JOB_RUN = Histogram(
    "trainserve_job_run_seconds",
    "from a job's first start to its end, by the status it ended with",
    ["status"],
    buckets=JOB_BUCKETS,
)
JOBS_FINISHED = Counter(
    "trainserve_jobs_finished_total", "jobs ended by a worker, by status", ["status"]
)
JOB_FAILURES = Counter(
    "trainserve_job_failures_total",
    "jobs that failed, by reason (diverged, invalid_request, data, dataset_unavailable, "
    "unavailable, timeout, out_of_memory, no_space, attempts_exhausted, error)",
    ["reason"],
)
EPOCHS = Counter(
    "trainserve_training_epochs_total",
    "training epochs completed, by architecture (rate(): epochs per second)",
    ["architecture"],
)

# -- workers ---------------------------------------------------------------------------------
WORKER_SLOTS = Gauge(
    "trainserve_worker_slots",
    "job slots of the workers (their concurrency), busy or idle",
    ["state"],
    multiprocess_mode="livesum",
)
WORKER_DEVICES = Gauge(
    "trainserve_worker_devices",
    "worker processes by the kind of device their jobs use by default (cuda, cpu)",
    ["device"],
    multiprocess_mode="livesum",
)

# -- predictions and the model cache (recorded by app/api/inference.py) ----------------------
PREDICTION_DURATION = Histogram(
    "trainserve_prediction_duration_seconds",
    "a prediction's time by stage: queue_wait (waiting for its batch), inference (the forward)",
    ["model", "stage"],
    buckets=LATENCY_BUCKETS,
)
PREDICTION_BATCH_SIZE = Histogram(
    "trainserve_prediction_batch_size",
    "samples in one forward pass (a batch of one or more requests)",
    ["model"],
    buckets=BATCH_BUCKETS,
)
MODEL_CACHE_LOADS = Counter(
    "trainserve_model_cache_loads_total", "model versions loaded into the cache", ["model"]
)
MODEL_CACHE_EVICTIONS = Counter(
    "trainserve_model_cache_evictions_total", "model versions evicted from the cache", ["model"]
)
MODEL_CACHE_BYTES = Gauge(
    "trainserve_model_cache_bytes",
    "bytes of the model versions held in the cache (summed over the API's processes)",
    multiprocess_mode="livesum",
)


# -- recording -------------------------------------------------------------------------------


def observe_request(route: str, method: str, status: int, seconds: float) -> None:
    labels = (route, method, str(status))
    HTTP_REQUESTS.labels(*labels).inc()
    HTTP_DURATION.labels(*labels).observe(seconds)


def job_submitted() -> None:
    JOBS_SUBMITTED.inc()


def job_started(queue_wait_seconds: float | None) -> None:
    """A worker claimed a job; the wait is given on its first start only."""
    if queue_wait_seconds is not None:
        JOB_QUEUE_WAIT.observe(max(queue_wait_seconds, 0.0))


def job_finished(status: str, run_seconds: float | None, reason: str | None = None) -> None:
    JOBS_FINISHED.labels(status).inc()
    if run_seconds is not None:
        JOB_RUN.labels(status).observe(max(run_seconds, 0.0))
    if status == "failed":
        JOB_FAILURES.labels(reason or "error").inc()


def epoch_done(architecture: str) -> None:
    EPOCHS.labels(architecture).inc()


def worker_started(concurrency: int, device: str) -> None:
    WORKER_SLOTS.labels("idle").set(concurrency)
    WORKER_SLOTS.labels("busy").set(0)
    WORKER_DEVICES.labels(device).set(1)


class busy_slot:
    """`with busy_slot():` around a job: one slot busy instead of idle."""

    def __enter__(self) -> None:
        WORKER_SLOTS.labels("busy").inc()
        WORKER_SLOTS.labels("idle").dec()

    def __exit__(self, *_exc: Any) -> None:
        WORKER_SLOTS.labels("busy").dec()
        WORKER_SLOTS.labels("idle").inc()


def observe_prediction(model: str, stage: str, seconds: float) -> None:
    """One request's time in a stage (`queue_wait` or `inference`)."""
    if stage not in STAGES:
        raise ValueError(f"stage {stage!r} is not one of {STAGES}")
    PREDICTION_DURATION.labels(model, stage).observe(seconds)


def observe_batch(model: str, samples: int) -> None:
    """One forward pass over `samples` samples."""
    PREDICTION_BATCH_SIZE.labels(model).observe(samples)


def model_loaded(model: str, cache_bytes: int) -> None:
    """A version was loaded into the cache; `cache_bytes`: the cache's size now."""
    MODEL_CACHE_LOADS.labels(model).inc()
    MODEL_CACHE_BYTES.set(cache_bytes)


def model_evicted(model: str, cache_bytes: int) -> None:
    """A version was evicted from the cache; `cache_bytes`: the cache's size now."""
    MODEL_CACHE_EVICTIONS.labels(model).inc()
    MODEL_CACHE_BYTES.set(cache_bytes)


# -- processes and exposition ----------------------------------------------------------------


def exposition(collectors: Iterable[Any] = ()) -> tuple[bytes, str]:
    """The text format of every metric of this process (every process, in multiprocess mode),
    then of `collectors` (read at scrape time); and its content type."""
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

    if multiprocess():
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    extra = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        extra.register(collector)
    return generate_latest(registry) + generate_latest(extra), CONTENT_TYPE_LATEST


# The gauges StoreCollector yields (read from the store at scrape time).
STORE_METRICS = (
    "trainserve_jobs",
    "trainserve_queue_depth",
    "trainserve_job_heartbeat_age_seconds",
    "trainserve_broker_messages",
)


def sample_names() -> set[str]:
    """Every sample name this service can expose (histograms' _bucket/_sum/_count, counters'
    _total): what dashboards and alerts may reference."""
    from prometheus_client.metrics import MetricWrapperBase

    names = set(STORE_METRICS)
    suffixes = {"histogram": ("_bucket", "_sum", "_count"), "counter": ("_total",)}
    for metric in globals().values():
        if isinstance(metric, MetricWrapperBase):
            for family in metric.describe():
                names.update(family.name + s for s in suffixes.get(family.type, ("",)))
    return names


class StoreCollector:
    """Job counts by status, the queue's depth (the store's queued jobs and the broker's
    waiting messages) and each running job's heartbeat age, read when scraped."""

    def __init__(self, store: Any, broker_waiting: Callable[[], int] | None = None) -> None:
        self.store = store
        self.broker_waiting = broker_waiting

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        try:
            counts = self.store.job_counts()
            ages = self.store.heartbeat_ages()
        except Exception as exc:  # the store is down: the scrape still answers, without these
            log.warning("metrics: the job store does not answer: %s", exc)
            return
        jobs = GaugeMetricFamily(
            "trainserve_jobs", "jobs in the store, by status", labels=["status"]
        )
        for status, count in sorted(counts.items()):
            jobs.add_metric([status], count)
        yield jobs
        yield GaugeMetricFamily(
            "trainserve_queue_depth", "jobs queued, waiting for a worker", value=counts["queued"]
        )
        age = GaugeMetricFamily(
            "trainserve_job_heartbeat_age_seconds",
            "seconds since each running job's worker last beat (stale past "
            "TRAINSERVE_HEARTBEAT_TIMEOUT_SECONDS: the job is re-sent)",
            labels=["job_id"],
        )
        for job_id, seconds in sorted(ages.items()):
            age.add_metric([job_id], seconds)
        yield age
        if self.broker_waiting is not None:
            try:
                waiting = self.broker_waiting()
            except Exception as exc:  # the broker is down
                log.warning("metrics: the broker does not answer: %s", exc)
                return
            yield GaugeMetricFamily(
                "trainserve_broker_messages",
                "training messages waiting in the broker (fewer than queued jobs: lost ones, "
                "which the reaper re-sends)",
                value=waiting,
            )
