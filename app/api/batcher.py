"""Dynamic batching of predictions: one batcher per loaded model version (Triton's dynamic
batcher, Ray Serve's `@serve.batch`).

Requests arrive validated (a bad sample is refused before it is queued, so it fails alone) and
wait in a bounded queue; a full queue refuses at once (`QueueFull`, a 503 with Retry-After). A
drain task, running only while there is work, takes a batch: the waiting requests in order, up
to `max_batch` samples, waiting at most `max_wait_s` after the batch's first request for more
(0: only what is already waiting; under load, requests pile up while the previous forward runs,
so batches grow with the load by themselves). Requests whose client has gone are dropped before
the forward; the rest run as one forward in the inference executor (the request's only thread
hop), and each request gets its slice of the answer, by index.

Up to `max_in_flight` batches of one version run at once (TRAINSERVE_INFERENCE_THREADS), so the
next batch's forward overlaps the hand-out of the last one's answers. A request larger than
`max_batch` runs alone. The forward is asked between its chunks whether
any client of the batch is still there, and stops when none is.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from app.core import metrics
from models.predictor import Abandoned, Prediction

log = logging.getLogger(__name__)

# run(samples, stop) -> Prediction: one forward over a batch, in the inference executor.
Run = Callable[[np.ndarray, Callable[[], bool]], Prediction]


class QueueFull(Exception):
    """The model version's queue holds `max_queue` requests; `retry_after` whole seconds."""

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.detail, self.retry_after = detail, retry_after


@dataclass(eq=False)
class Pending:
    samples: np.ndarray
    gone: threading.Event  # set once the client left (watched by the request's handler)
    future: asyncio.Future
    enqueued: float  # the loop's clock
    started: float = field(default=0.0)  # the loop's clock when its batch's forward began


@dataclass
class BatchStats:
    """What the last batches cost: for Retry-After, and for whoever reads them."""

    batches: int = 0
    samples: int = 0
    dropped: int = 0  # requests whose client left before their forward
    last_forward_s: float = 0.0


class Batcher:
    def __init__(
        self,
        run: Run,
        executor: Executor,
        *,
        max_batch: int,
        max_wait_s: float,
        max_queue: int,
        max_in_flight: int = 1,
        name: str = "",
        model: str = "",
    ) -> None:
        self._run = run
        self._executor = executor
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self.max_in_flight = max_in_flight
        self.name = name
        self.model = model  # the metrics' label: the model's name (bounded, unlike versions)
        self._queue: deque[Pending] = deque()
        self._arrived: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots: asyncio.Semaphore | None = None  # forwards in flight, at most max_in_flight
        self._forwards: set[asyncio.Task] = set()
        self.stats = BatchStats()

    def __len__(self) -> int:
        return len(self._queue)

    async def submit(self, samples: np.ndarray, gone: threading.Event) -> Prediction:
        """Queue validated `samples` (N, *input_shape) float32; their predictions, in order.
        Raises QueueFull at once when the queue is full, Abandoned when `gone` was set before
        the forward (or during it, for every request of the batch)."""
        if len(self._queue) >= self.max_queue:
            raise QueueFull(
                f"{len(self._queue)} requests are waiting for {self.name}, the limit is "
                f"{self.max_queue} (TRAINSERVE_PREDICT_MAX_QUEUE); retry shortly",
                self.retry_after(),
            )
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop (an app started again, in tests)
            self._loop, self._arrived, self._task = loop, None, None
            self._slots = asyncio.Semaphore(self.max_in_flight)
        pending = Pending(samples, gone, loop.create_future(), loop.time())
        self._queue.append(pending)
        if self._arrived is not None:
            self._arrived.set()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._drain(), name=f"batcher {self.name}")
        return await pending.future

    def retry_after(self) -> int:
        """Whole seconds in which the queue should have drained (at least 1)."""
        batches = len(self._queue) / self.max_batch + 1
        return max(1, math.ceil(batches * self.stats.last_forward_s))

    async def _drain(self) -> None:
        """Batches while requests wait, each started once a forward slot is free (up to
        `max_in_flight` forwards of this version at once: the next batch runs while the last
        one's answers are handed out)."""
        while self._queue:
            await self._slots.acquire()
            if not self._queue:
                self._slots.release()
                return
            batch = await self._collect()
            live = []
            for pending in batch:
                if pending.future.done():  # its handler was cancelled
                    continue
                if pending.gone.is_set():
                    self.stats.dropped += 1
                    pending.future.set_exception(Abandoned("the client left while it waited"))
                    continue
                live.append(pending)
            if not live:
                self._slots.release()
                continue
            forward = asyncio.get_running_loop().create_task(self._forward(live))
            self._forwards.add(forward)  # (a task nobody holds may be collected)
            forward.add_done_callback(self._forward_done)

    def _forward_done(self, task: asyncio.Task) -> None:
        self._forwards.discard(task)
        self._slots.release()

    async def _collect(self) -> list[Pending]:
        """The next batch: the first waiting request, then the next ones while they fit in
        `max_batch` samples, waiting for more until `max_wait_s` after the first arrived."""
        loop = asyncio.get_running_loop()
        first = self._queue.popleft()
        batch, size = [first], len(first.samples)
        deadline = first.enqueued + self.max_wait_s
        while size < self.max_batch:
            if not self._queue:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                if self._arrived is None:
                    self._arrived = asyncio.Event()
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), remaining)
                except TimeoutError:
                    break
                continue
            if size + len(self._queue[0].samples) > self.max_batch:
                break
            batch.append(self._queue.popleft())
            size += len(batch[-1].samples)
        return batch

    async def _forward(self, live: list[Pending]) -> None:
        loop = asyncio.get_running_loop()
        parts = [p.samples for p in live]
        samples = parts[0] if len(parts) == 1 else np.concatenate(parts)

        def stop() -> bool:
            return all(p.gone.is_set() for p in live)

        now = loop.time()
        for pending in live:
            pending.started = now
            metrics.observe_prediction(self.model, "queue_wait", now - pending.enqueued)
        started = time.perf_counter()
        try:
            result = await loop.run_in_executor(self._executor, self._run, samples, stop)
        except Exception as exc:  # Abandoned, or the forward failed: every request gets it
            for pending in live:
                if not pending.future.done():
                    pending.future.set_exception(exc)
            return
        finally:
            self.stats.last_forward_s = time.perf_counter() - started
        metrics.observe_batch(self.model, len(samples))
        for _ in live:
            metrics.observe_prediction(self.model, "inference", self.stats.last_forward_s)
        self.stats.batches += 1
        self.stats.samples += len(samples)
        offset = 0
        for pending in live:
            end = offset + len(pending.samples)
            if not pending.future.done():
                pending.future.set_result(_slice(result, offset, end))
            offset = end


def _slice(result: Prediction, start: int, end: int) -> Prediction:
    if start == 0 and end == len(result.predictions):
        return result
    probabilities = result.probabilities
    return Prediction(
        result.predictions[start:end],
        None if probabilities is None else probabilities[start:end],
    )
