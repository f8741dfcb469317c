"""How long a job waits for an idle worker on the embedded default, and what the idle worker costs.

For each broker poll interval (TRAINSERVE_BROKER_POLL_SECONDS), a real `trainserve api` and
`trainserve worker` (solo pool) on embedded defaults: SQLite and kombu's filesystem broker in a
fresh data dir under a temp dir, listening on 127.0.0.1 only. All stacks run side by side, so
they share whatever else the machine is doing:

1. each worker runs one unmeasured warm-up job, then sits idle;
2. idle CPU: utime + stime of each worker process (/proc/<pid>/stat) over --idle seconds, in the
   same window for all of them, as a percentage of one core;
3. dispatch: --jobs tiny jobs (house_prices_mlp on boston_housing, 1 epoch), one at a time,
   taking turns between the stacks; before each submission a random pause (0 to --gap s,
   seeded) so that it lands at a random point of the worker's poll cycle. Measured: the
   server's own timestamps of the job, `created_at` (the row committed, just before the send)
   to `started_at` (the worker claimed it).

    python bench/dispatch.py                          # 1 s (kombu's default) vs 0.02 s
    python bench/dispatch.py --intervals 1,0.1,0.05,0.02,0.01,0.005 --jobs 20
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.processes import Service, wait_until  # noqa: E402

JOB = {
    "model_name": "dispatch-bench",
    "architecture": "house_prices_mlp",
    "dataset": "boston_housing",
    "epochs": 1,
    "device": "cpu",
}
DONE = {"succeeded", "failed", "cancelled"}
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (not its children), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # fields 14 and 15 of the whole line


def when(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


class Stack:
    def __init__(self, interval: float, tmp: Path) -> None:
        tmp.mkdir()
        self.interval = interval
        self.service = Service(
            tmp,
            {
                "TRAINSERVE_BROKER_POLL_SECONDS": repr(interval),
                "TRAINSERVE_WORKER_LIVENESS_FILE": str(tmp / "worker.alive"),
                "TRAINSERVE_HEARTBEAT_SECONDS": "5",
            },
        )
        self.waits: list[float] = []
        self.idle_cpu_percent = float("nan")

    def start(self) -> None:
        self.service.start_api()
        self.worker = self.service.start_worker()
        self.client = self.service.client()

    def run_job(self) -> float:
        """Submit one job, wait for it to end; seconds from created_at to started_at."""
        if not self.worker.alive():
            raise RuntimeError(f"the worker exited:\n{self.worker.output()[-3000:]}")
        response = self.client.post("/v1/jobs", json=JOB)
        if response.status_code != 202:
            raise RuntimeError(f"POST /v1/jobs: {response.status_code} {response.text}")
        job_id = response.json()["id"]

        def ended():
            job = self.client.get(f"/v1/jobs/{job_id}").json()
            return job if job["status"] in DONE else None

        job = wait_until(ended, 120, f"job {job_id} ({self.service.logs()[-2000:]})", 0.02)
        if job["status"] != "succeeded":
            raise RuntimeError(f"job {job_id} {job['status']}: {job}")
        return (when(job["started_at"]) - when(job["created_at"])).total_seconds()

    def stop(self) -> None:
        if hasattr(self, "client"):
            self.client.close()
        self.service.stop()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--intervals", default="1,0.02", help="poll seconds, comma-separated")
    parser.add_argument("--jobs", type=int, default=20, help="measured jobs per interval")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of idle CPU measured")
    parser.add_argument("--gap", type=float, default=1.0, help="random pause before a job, max")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    intervals = [float(x) for x in args.intervals.split(",")]
    rng = random.Random(args.seed)

    with tempfile.TemporaryDirectory(prefix="trainserve-dispatch-") as tmp, ExitStack() as stack:
        stacks = [Stack(interval, Path(tmp) / f"poll-{i}") for i, interval in enumerate(intervals)]
        for s in stacks:
            stack.callback(s.stop)
        for s in stacks:
            s.start()
        for s in stacks:  # warm-up: the worker's first job imports and builds what it needs
            s.run_job()
        time.sleep(2.0)  # settle: the last job's worker goes back to its poll loop

        before = {s: cpu_seconds(s.worker.popen.pid) for s in stacks}
        start = time.monotonic()
        time.sleep(args.idle)
        elapsed = time.monotonic() - start
        for s in stacks:
            s.idle_cpu_percent = 100 * (cpu_seconds(s.worker.popen.pid) - before[s]) / elapsed

        for _ in range(args.jobs):
            for s in stacks:
                time.sleep(rng.uniform(0, args.gap))
                s.waits.append(s.run_job())

    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
    print(f"jobs per interval: {args.jobs}, idle window: {args.idle:.0f} s")
    print()
    print("| poll interval (s) | wait p50 (ms) | p90 (ms) | max (ms) | mean (ms) | idle CPU (%) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for s in stacks:
        ms = [1000 * w for w in s.waits]
        print(
            f"| {s.interval:g} | {statistics.median(ms):.1f} | {percentile(ms, 0.9):.1f} | "
            f"{max(ms):.1f} | {statistics.fmean(ms):.1f} | {s.idle_cpu_percent:.2f} |"
        )


if __name__ == "__main__":
    main()
