"""How long a new version's first predictions wait for ONNX Runtime, and what that costs the job:
the worker's export at publish (TRAINSERVE_EXPORT_ON_PUBLISH, the default) against the API
making the export on first use, side by side in one run.

Each round trains a 2-epoch house_prices_mlp job in this process (SQLite, a local artifact
store), then starts the API in this process (predict_backend auto: ONNX Runtime for this
architecture) and sends one prediction, which loads the version; the figure is the time from
that request until the version answers from ONNX Runtime (eager answers until then).

    .venv/bin/python bench/first_onnx_answer.py [--rounds 2]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fastapi.testclient import TestClient  # noqa: E402

from app.api.main import create_app  # noqa: E402
from app.core.services import build_services  # noqa: E402
from tests.app.api.test_batching import served_of, settings_for  # noqa: E402
from tests.app.conftest import AUTH  # noqa: E402
from workers.runner import run_job  # noqa: E402

JOB = {
    "model_name": "house",
    "architecture": "house_prices_mlp",
    "dataset": "boston_housing",
    "epochs": 2,
    "device": "cpu",
}


def one_round(export_on_publish: bool) -> tuple[float, float, str]:
    """(job seconds, seconds to ONNX Runtime answers, the backend that answers then)."""
    tmp = Path(tempfile.mkdtemp(prefix="trainserve-bench-"))
    settings = settings_for(tmp, predict_backend="auto", export_on_publish=export_on_publish)
    services = build_services(settings, upgrade=True)
    job, _ = services.store.create_job(JOB)
    started = time.monotonic()
    assert run_job(job.id, services) == "succeeded"
    job_s = time.monotonic() - started
    app = create_app(settings)
    with TestClient(app) as client:
        started = time.monotonic()
        answer = client.post(
            "/v1/models/house/predict", headers=AUTH, json={"inputs": [[0.0] * 13]}
        )
        assert answer.status_code == 200, answer.text
        served = served_of(app, "house")
        assert served.ready.wait(300)
        return job_s, time.monotonic() - started, type(served.predictor).__name__


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    results: dict[bool, list[tuple[float, float, str]]] = {False: [], True: []}
    for _ in range(args.rounds):
        for on in (False, True):
            results[on].append(one_round(on))
    header = ["export made by", "job s", "first prediction -> ONNX Runtime s", "backend"]
    print("| " + " | ".join(header) + " |")
    print("|---|---|---|---|")
    for on, rows in results.items():
        who = "the worker, at publish" if on else "the API, on first use"
        job_s = statistics.median(r[0] for r in rows)  # medians of the rounds
        ready_s = statistics.median(r[1] for r in rows)
        print(f"| {who} | {job_s:.1f} | {ready_s:.2f} | {rows[-1][2]} |")


if __name__ == "__main__":
    main()
