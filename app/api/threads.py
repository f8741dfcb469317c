"""Threads of the API process's inference, set on purpose (`trainserve api` and `serve`).

- OpenMP's wait policy: after a parallel region, libgomp's worker threads spin (ACTIVE) for a
  while before they sleep; on a small machine that spin costs more CPU than the forward of a
  small model (about 2.3 ms of a core per request, measured for the issue). PASSIVE makes them
  sleep at once. libgomp reads it once, when torch is imported: `before_torch` sets it unless
  the environment already does (OMP_WAIT_POLICY=ACTIVE keeps the spin).
- intra-op threads (TRAINSERVE_INFERENCE_INTRA_OP_THREADS, 0: one per core): the threads one
  forward may use. Batches make forwards larger, so more than one thread pays off once there
  are several clients; bench/predict.py measures both.

Only the API process: a worker's training keeps torch's defaults.
"""

from __future__ import annotations

import logging
import os

from app.core.settings import Settings

log = logging.getLogger(__name__)


def before_torch() -> None:
    """Call before torch is imported (it is read when libgomp loads)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def set_torch_threads(settings: Settings) -> int:
    import torch

    threads = settings.inference_intra_op_threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    log.info(
        "inference: %d intra-op threads, OMP_WAIT_POLICY=%s, %d forwards at once",
        threads,
        os.environ.get("OMP_WAIT_POLICY", "(default)"),
        settings.inference_threads,
    )
    return threads
