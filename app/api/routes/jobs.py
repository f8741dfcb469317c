"""Training jobs: submit (validated, committed, then enqueued), list, read, follow, cancel."""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Annotated

import anyio
from fastapi import APIRouter, Header, HTTPException, Path, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from kombu.exceptions import OperationalError as BrokerError

from app.api.deps import KeyDep, ServicesDep, StoreDep
from app.api.events import CLOSED, JobEvents, Update, job_update
from app.api.schemas import History, JobList, JobOut, JobRequest, error_responses
from app.api.schemas.jobs import JOB_OUT_EXAMPLE
from app.api.validation import validate_job
from app.core import deletion, metrics
from app.core.cleanup import remove_checkpoints
from app.core.db import JobStatus
from app.core.errors import Conflict, Invalid, NotFound, TooLarge, Unavailable
from app.core.names import SLUG_PATTERN, check_slug
from app.core.services import Services

log = logging.getLogger(__name__)
router = APIRouter(prefix="/jobs", tags=["jobs"])

JOB_ID_MAX = 64
JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
POLL_S = 0.5  # how often the poller of a followed job reads it (once for all its streams)
KEEPALIVE_S = 15.0
STREAM_RETRY_AFTER_S = 5
TOO_MANY_STREAMS = "TRAINSERVE_MAX_STREAMS_PER_KEY streams are open with this API key already"


JobId = Annotated[str, Path(description="a job id, as returned by POST /v1/jobs")]
NOT_FOUND = error_responses(404, 503, e404="no such job")
JOB_EVENT = {  # one server-sent event (OpenAPI 3.1: the schema of an event stream is per event)
    "type": "object",
    "properties": {
        "event": {"type": "string", "enum": ["job"]},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": {"$ref": "#/components/schemas/JobOut"},
            "description": "the job, as GET /v1/jobs/{job_id} returns it",
        },
    },
    "required": ["event", "data"],
}


def check_job_id(job_id: str) -> str:
    """Ids are short runs of letters, digits, '_' and '-': anything else names no job (and never
    reaches the job store)."""
    if not JOB_ID.fullmatch(job_id):
        shown = job_id[:JOB_ID_MAX].encode("unicode_escape").decode("ascii")
        raise NotFound(f"job '{shown}' does not exist (job ids are what POST /v1/jobs returned)")
    return job_id


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobOut,
    responses={
        200: {
            "model": JobOut,
            "description": "a job with this Idempotency-Key exists: it is returned as is",
        },
        **error_responses(
            400,
            409,
            413,
            422,
            503,
            e409="the Idempotency-Key was used for a different request",
            e422="the request fails validation against the catalogue or a limit "
            "(TRAINSERVE_MAX_EPOCHS, TRAINSERVE_MAX_BATCH_SIZE, TRAINSERVE_MAX_QUEUED_JOBS, ...)",
            e503="the job store or the broker is down",
        ),
    },
)
def submit_job(
    body: JobRequest,
    response: Response,
    services: ServicesDep,
    owner: KeyDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            min_length=1,
            max_length=255,
            pattern=r"^[\x20-\x7e]+$",
            description="repeat a submission safely: same key, same job (1-255 printable ASCII "
            "characters, scoped to the API key)",
        ),
    ] = None,
) -> JobOut:
    """Validate against the catalogue, commit a queued job, then send it to the workers.

    202 with `Location: /v1/jobs/{id}`. With an `Idempotency-Key` header already used by this
    API key for the same request, the existing job is returned with 200 (and sent again to
    the workers while it is still queued, which is harmless: tasks are idempotent).

    Beyond what the schema states, the catalogue decides (422): the architecture and dataset
    must exist, fit each other and the loss, their parameters must lie within the bounds that
    GET /v1/architectures and GET /v1/datasets list, and epochs, batch size and queued jobs are
    capped by the service's limits.
    """
    request = validate_job(body, services)
    try:
        job, created = services.store.create_job(
            request,
            owner=owner,
            idempotency_key=idempotency_key,
            max_queued=services.settings.max_queued_jobs,
        )
    except TooLarge as exc:  # the store's per-key queue limit: a request over a limit, 422
        raise Invalid(exc.detail) from None
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    if not created:
        if job.request != request:
            raise Conflict(
                f"Idempotency-Key '{idempotency_key}' was used for a different request "
                f"(job '{job.id}'); use a new key"
            )
        response.status_code = status.HTTP_200_OK
        if job.status != "queued":
            return JobOut.from_row(job)
        # Still queued: send the wake-up again (harmless twice; needed if the first send failed).
    _enqueue(services, job.id)
    if created:
        metrics.job_submitted()
        log.info("job %s queued: %s on %s", job.id, job.architecture, job.dataset)
    return JobOut.from_row(job)


def _enqueue(services: Services, job_id: str) -> None:
    try:
        services.enqueue(job_id)
    except (BrokerError, OSError) as exc:
        log.error("job %s is committed but could not be sent to the broker: %s", job_id, exc)
        raise Unavailable(
            f"broker unavailable: job '{job_id}' is saved as queued and will be sent when the "
            "broker is back"
        ) from None


@router.get("", response_model=JobList, responses=error_responses(422, 503))
def list_jobs(
    store: StoreDep,
    status_: Annotated[JobStatus | None, Query(alias="status")] = None,
    model_name: Annotated[
        str | None,
        Query(
            max_length=64,
            description="a model name (a slug)",
            json_schema_extra={"pattern": SLUG_PATTERN},
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
) -> JobList:
    """Jobs, newest first, filtered by status and model name."""
    if model_name is not None:
        try:
            check_slug(model_name, "model_name")
        except ValueError as exc:
            raise Invalid(str(exc)) from None
    jobs, total = store.list_jobs(status=status_, model_name=model_name, limit=limit, offset=offset)
    return JobList(items=[JobOut.from_row(job) for job in jobs], total=total)


@router.get("/{job_id}", response_model=JobOut, responses=NOT_FOUND)
def get_job(job_id: JobId, store: StoreDep) -> JobOut:
    """One job: status, progress, latest metrics, error, model version."""
    return JobOut.from_row(store.get_job(check_job_id(job_id)))


@router.get("/{job_id}/metrics", response_model=History, responses=NOT_FOUND)
def job_metrics(job_id: JobId, store: StoreDep) -> History:
    """One row per evaluation (every eval_every epochs and the last epoch)."""
    return History(history=store.history(check_job_id(job_id)))


@router.post(
    "/{job_id}/cancel",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobOut,
    responses=error_responses(404, 409, 503, e404="no such job", e409="the job has ended"),
)
def cancel_job(job_id: JobId, services: ServicesDep) -> JobOut:
    """A queued job is never started; a running one stops within one epoch, ending `cancelled`."""
    job = services.store.cancel(check_job_id(job_id))
    if job.status == JobStatus.cancelled:  # it may have run before: its checkpoints go
        remove_checkpoints(services, job.id)
    return JobOut.from_row(job)


@router.delete(
    "/{job_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(
        404, 409, 503, e404="no such job", e409="the job is queued or running: cancel it first"
    ),
)
def delete_job(job_id: JobId, services: ServicesDep) -> Response:
    """Delete an ended job: its row, its evaluations (metrics history) and any checkpoints.
    The model version it published stays (DELETE /v1/models/{name}/versions/{version})."""
    deletion.delete_job(services, check_job_id(job_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


async def _job_events(events: JobEvents, first: Update, store, job_id: str, poll_s: float):
    """`event: job` at once, then whenever status, progress or metrics change (the job's one
    shared poller reads it, app/api/events.py); a comment keeps the stream alive."""
    yield first.message
    if first.terminal:
        return
    last_state, last_sent = first.state, time.monotonic()
    with events.subscribe(store, job_id, poll_s) as subscription:
        while True:
            wait = max(last_sent + KEEPALIVE_S - time.monotonic(), poll_s)
            update = await subscription.next(wait)
            if update is CLOSED:
                return
            if update is not None and update.state != last_state:
                yield update.message
                last_state, last_sent = update.state, time.monotonic()
                if update.terminal:
                    return
            if time.monotonic() - last_sent >= KEEPALIVE_S:
                yield b": keep-alive\n\n"
                last_sent = time.monotonic()


class EventStream(StreamingResponse):
    """A StreamingResponse that, however it ends (finished, client gone, cancelled), closes its
    generator (so its subscription goes) and gives back the key's stream slot."""

    def __init__(self, content, on_close, **kwargs) -> None:
        super().__init__(content, **kwargs)
        self.on_close = on_close

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.on_close()
            with anyio.CancelScope(shield=True):
                await self.body_iterator.aclose()


@router.get(
    "/{job_id}/events",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "`event: job` with the job as JSON data, first at once, then whenever "
            "status, progress or metrics change; the stream ends after a terminal status",
            "content": {
                "text/event-stream": {
                    "schema": JOB_EVENT,
                    "example": f"event: job\ndata: {json.dumps(JOB_OUT_EXAMPLE)}\n\n"
                    ": keep-alive\n\n",
                }
            },
        },
        **NOT_FOUND,
        429: {
            **error_responses(429, e429=TOO_MANY_STREAMS)[429],
            "headers": {
                "Retry-After": {
                    "description": "seconds to wait before opening another stream",
                    "schema": {"type": "integer"},
                }
            },
        },
    },
)
async def job_events(
    job_id: JobId, request: Request, store: StoreDep, owner: KeyDep
) -> StreamingResponse:
    """Follow a job as server-sent events (at most TRAINSERVE_MAX_STREAMS_PER_KEY streams open
    at once per API key)."""
    check_job_id(job_id)
    events: JobEvents = request.app.state.job_events
    release = events.open_stream(owner)
    if release is None:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"{events.max_streams_per_key} event streams are open with this API key "
            "(TRAINSERVE_MAX_STREAMS_PER_KEY); close one, or wait",
            headers={"Retry-After": str(STREAM_RETRY_AFTER_S)},
        )
    try:  # the state the job's poller has (then the job exists), else a read: 404 or the state
        first = events.latest(job_id) or job_update(await run_in_threadpool(store.get_job, job_id))
    except BaseException:
        release()
        raise
    poll_s = getattr(request.app.state, "events_poll_s", POLL_S)
    return EventStream(
        _job_events(events, first, store, job_id, poll_s),
        on_close=release,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
