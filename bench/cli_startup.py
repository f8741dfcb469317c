"""How long `trainserve --help` and a client command take to start, beside the interpreter's own
start-up (the baseline) and the argparse entry point it replaced (main's, when a checkout of it
is given). Each command runs --runs times, interleaved, in fresh processes; printed: the median
and the minimum wall time of each. Target: `trainserve --help` under 300 ms on this machine.

    python bench/cli_startup.py
    python bench/cli_startup.py --runs 30 --baseline-checkout /path/to/an/older/checkout
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--baseline-checkout", type=Path, help="an older checkout's root")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    python = sys.executable
    cases = {
        "python -c pass (interpreter)": ([python, "-c", "pass"], env),
        "trainserve --help": ([python, "-m", "app.cli", "--help"], env),
        "trainserve jobs submit --help": (
            [python, "-m", "app.cli", "jobs", "submit", "--help"],
            env,
        ),
        "trainserve jobs list (server down)": (
            [
                python,
                "-m",
                "app.cli",
                "jobs",
                "list",
                "--url",
                "http://127.0.0.1:9",
                "--api-key",
                "k",
            ],
            env,
        ),
    }
    if args.baseline_checkout:
        old = {**os.environ, "PYTHONPATH": str(args.baseline_checkout)}
        cases["baseline checkout: trainserve --help"] = ([python, "-m", "app.cli", "--help"], old)
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.runs):
        for name, (argv, case_env) in cases.items():
            times[name].append(timed(argv, case_env))
    for name, values in times.items():
        print(
            f"{name:40s} median {statistics.median(values) * 1000:6.0f} ms   "
            f"min {min(values) * 1000:6.0f} ms"
        )


if __name__ == "__main__":
    main()
