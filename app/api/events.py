"""Job event streams: one poller per followed job, shared by all its streams; streams per key.

Every stream of `GET /v1/jobs/{id}/events` subscribes to the job's feed. The first subscriber
starts the feed's poller, an asyncio task that reads the job once per interval and puts each new
state (status, epoch, metrics, model version, error) into every subscriber's queue; the last
subscriber to leave stops it. So N streams of one job cost one read per interval, not N, and
the event is rendered once for all of them. A feed ends after a terminal status (its
subscribers end their streams with it) or when the job is gone.

`JobEvents` also counts the streams open per API key: `open_stream(owner)` gives a release
callable, or None when the key holds TRAINSERVE_MAX_STREAMS_PER_KEY already.

One instance per application (`app.state.job_events`), used from its event loop only.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import anyio

from app.api.schemas import JobOut
from app.core.db import TERMINAL
from app.core.errors import NotFound

log = logging.getLogger(__name__)

QUEUE_MAX = 16  # updates a subscriber may lag behind; beyond it its oldest are dropped


@dataclass(frozen=True, slots=True)
class Update:
    """One state of a job, rendered once as a server-sent event for every stream."""

    state: tuple[Any, ...]
    message: bytes
    terminal: bool


CLOSED = Update(state=(), message=b"", terminal=True)  # the feed ended: the job is gone


def job_update(job: Any) -> Update:
    state = (job.status, job.epoch, job.metrics, job.model_version, job.error)
    data = JobOut.from_row(job).model_dump_json()
    return Update(state, f"event: job\ndata: {data}\n\n".encode(), job.status in TERMINAL)


class Subscription:
    """One stream's queue of updates."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Update] = asyncio.Queue(QUEUE_MAX)

    def offer(self, update: Update) -> None:
        if self.queue.full():  # a slow reader: it misses intermediate states, not the last
            self.queue.get_nowait()
        self.queue.put_nowait(update)

    async def next(self, timeout: float) -> Update | None:
        """The next update, or None when none came within `timeout` seconds."""
        with anyio.move_on_after(timeout):
            return await self.queue.get()
        return None


class Feed:
    """The poller of one job and its subscribers."""

    def __init__(self, store: Any, job_id: str, poll_s: float) -> None:
        self.store, self.job_id, self.poll_s = store, job_id, poll_s
        self.subscribers: set[Subscription] = set()
        self.latest: Update | None = None
        self.ended = False
        self.reads = 0
        self.loop = asyncio.get_running_loop()
        self.task = self.loop.create_task(self._poll(), name=f"job-events-{job_id}")

    def usable(self) -> bool:
        """Still polling, on this event loop (a test's loop may be gone with its feeds)."""
        try:
            return not self.ended and self.loop is asyncio.get_running_loop()
        except RuntimeError:
            return False

    def add(self, subscription: Subscription) -> None:
        self.subscribers.add(subscription)
        if self.latest is not None:  # what the others have seen, at once
            subscription.offer(self.latest)

    def stop(self) -> None:
        self.ended = True
        self.task.cancel()

    async def _poll(self) -> None:
        failing = False
        try:
            while True:
                try:
                    self.reads += 1
                    job = await anyio.to_thread.run_sync(self.store.get_job, self.job_id)
                except NotFound:
                    self._publish(CLOSED)
                    return
                except Exception as exc:  # the job store is down: the streams stay, and wait
                    if not failing:
                        log.warning("events of job %s: cannot read it: %s", self.job_id, exc)
                    failing = True
                else:
                    failing = False
                    update = job_update(job)
                    if self.latest is None or update.state != self.latest.state:
                        self.latest = update
                        self._publish(update)
                    if update.terminal:
                        return
                await asyncio.sleep(self.poll_s)
        finally:
            self.ended = True

    def _publish(self, update: Update) -> None:
        for subscription in tuple(self.subscribers):
            subscription.offer(update)


class JobEvents:
    """The feeds of followed jobs, and the streams open per API key."""

    def __init__(self, max_streams_per_key: int) -> None:
        self.max_streams_per_key = max_streams_per_key
        self.feeds: dict[str, Feed] = {}
        self.streams: Counter[str] = Counter()

    def open_stream(self, owner: str) -> Callable[[], None] | None:
        """Count one more stream of `owner`: the callable that uncounts it (once), or None when
        the key's streams are at the limit."""
        if self.streams[owner] >= self.max_streams_per_key:
            return None
        self.streams[owner] += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.streams[owner] -= 1
                if self.streams[owner] <= 0:
                    del self.streams[owner]

        return release

    def latest(self, job_id: str) -> Update | None:
        """The state of the job as its live feed last read it (None: no feed, or no read yet)."""
        feed = self.feeds.get(job_id)
        return feed.latest if feed is not None and feed.usable() else None

    @contextmanager
    def subscribe(self, store: Any, job_id: str, poll_s: float) -> Iterator[Subscription]:
        """A subscription to the job's feed (started here when it has none) until the block
        ends; the feed stops with its last subscriber."""
        feed = self.feeds.get(job_id)
        if feed is None or not feed.usable():
            feed = self.feeds[job_id] = Feed(store, job_id, poll_s)
        subscription = Subscription()
        feed.add(subscription)
        try:
            yield subscription
        finally:
            feed.subscribers.discard(subscription)
            if not feed.subscribers:
                feed.stop()
                if self.feeds.get(job_id) is feed:
                    del self.feeds[job_id]
