"""Predictions per second: trainserve's endpoint against a minimal hand-written FastAPI endpoint.

One run, one process tree: this script trains three small models (mnist_convnet on random
1x28x28 images, resnet18 on 1x28x28, house_prices_mlp on boston_housing; one or two epochs, the
numbers do not matter), publishes them into a fresh trainserve data dir as a worker does, and
starts side by side

- **trainserve**: `trainserve api` (SQLite, API key, uvicorn with its httptools protocol and
  the slow-client deadlines of app/api/protocol.py, dynamic batching), configured by the
  TRAINSERVE_* variables given with --env;
- **minimal**: bench/minimal_endpoint.py, a `def` FastAPI handler doing one forward per request
  on the same weights files, uvicorn's defaults (httptools).

For each model and each number of concurrent clients, `wrk` (one thread, keep-alive
connections, a Lua script posting one sample) loads one server for --duration seconds, then the
other (the order alternates per cell). Printed per cell: req/s, p50 and p99 latency (wrk's),
non-2xx answers, CPU seconds of the server per 1,000 requests, and trainserve / minimal.
Both servers' answers are first checked to be the same numbers (1e-5).

    python bench/predict.py                                   # 10 s cells, all models
    python bench/predict.py --duration 5 --models mnist_convnet --clients 1,32
    python bench/predict.py --env TRAINSERVE_PREDICT_MAX_WAIT_MS=2 --env ...
    python bench/predict.py --profile /tmp/prof              # py-spy of trainserve at 32 clients

Needs `wrk` (Debian: apt-get install wrk; `make system-packages` installs it).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402
import torch  # noqa: E402

from app.core.services import build_services  # noqa: E402
from app.core.settings import Settings  # noqa: E402
from models.datasets import Dataset  # noqa: E402
from models.request import TrainingRequest  # noqa: E402
from models.training import TrainingResult, run_training  # noqa: E402
from tests.e2e.processes import Process, Service, free_port, wait_until  # noqa: E402
from workers.runner import publish_result  # noqa: E402

MINIMAL = Path(__file__).with_name("minimal_endpoint.py")
TICK = os.sysconf("SC_CLK_TCK")
MODELS = ("mnist_convnet", "resnet18", "house_prices_mlp")
LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"
local f = io.open("{body}", "r")
wrk.body = f:read("*a")
f:close()
"""


def train(model: str) -> TrainingResult:
    torch.manual_seed(0)
    if model == "house_prices_mlp":
        request = TrainingRequest(architecture=model, dataset="boston_housing", epochs=2)
        return run_training(request)
    images = torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    data = Dataset(images, torch.arange(64) % 10, "classification")
    request = TrainingRequest(architecture=model, dataset="random", epochs=1, device="cpu")
    return run_training(request, dataset=data)


def sample(model: str) -> list:
    generator = torch.Generator().manual_seed(1)
    if model == "house_prices_mlp":
        return [[0.00632, 18, 2.31, 0, 0.538, 6.575, 65.2, 4.09, 1, 296, 15.3, 396.9, 4.98]]
    return torch.rand(1, 1, 28, 28, generator=generator).tolist()


def publish(settings: Settings, name: str, result: TrainingResult) -> Path:
    """Publish as a worker does; the weights file's path."""
    services = build_services(settings)
    card = result.card
    request = {"model_name": name, "architecture": card.architecture, "dataset": card.dataset}
    job, _ = services.store.create_job({**request, "epochs": 1})
    lease = services.store.claim(job.id, "bench")
    version = publish_result(services, job.id, lease, name, result)
    path = settings.data_dir / "bench" / f"{name}-v{version}.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(result.weights())
    return path


def make_onnx_export(url: str, key: str, model: str) -> None:
    """Have trainserve make and store the ONNX export of `model` version 1 (a download), so a
    backend that uses it (auto, onnx) switches seconds after the first prediction, not after an
    export of its own."""
    response = httpx.get(
        f"{url}/v1/models/{model}/versions/1/weights",
        params={"format": "onnx"},
        headers={"Authorization": f"Bearer {key}"},
        timeout=600,
    )
    response.raise_for_status()


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def parse_wrk(text: str) -> dict[str, float]:
    def latency(pct: str) -> float:
        value, unit = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M).groups()
        return float(value) * UNITS[unit]

    total = int(re.search(r"(\d+) requests in", text).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)),
        "p50": latency("50"),
        "p99": latency("99"),
        "requests": total,
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": sum(map(int, errors.groups())) if errors else 0,
    }


class Server:
    def __init__(self, label: str, url: str, pid: int, lua_dir: Path, key: str) -> None:
        self.label, self.url, self.pid, self.key = label, url, pid, key
        self.lua_dir = lua_dir

    def lua(self, model: str, body: Path) -> Path:
        path = self.lua_dir / f"{self.label}-{model}.lua"
        path.write_text(LUA.replace("{key}", self.key).replace("{body}", str(body)))
        return path

    def load(self, model: str, body: Path, clients: int, duration: float) -> dict[str, float]:
        url = f"{self.url}/v1/models/{model}/predict"
        argv = ["wrk", "-t1", f"-c{clients}", f"-d{duration:g}s", "--latency", "-s"]
        before = cpu_seconds(self.pid)
        out = subprocess.run(
            [*argv, str(self.lua(model, body)), url], capture_output=True, text=True, check=True
        ).stdout
        result = parse_wrk(out)
        cpu = cpu_seconds(self.pid) - before
        result["cpu_ms_per_req"] = 1e3 * cpu / max(1, result["requests"])
        return result


def up(url: str, process: Process) -> bool:
    if not process.alive():
        raise SystemExit(f"the minimal endpoint exited:\n{process.output()[-3000:]}")
    try:
        return httpx.get(url + "/docs", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def check_same_answers(servers: list[Server], model: str, body: dict) -> None:
    answers = []
    for server in servers:
        headers = {"Authorization": f"Bearer {server.key}"}
        response = httpx.post(
            f"{server.url}/v1/models/{model}/predict", json=body, headers=headers, timeout=60
        )
        response.raise_for_status()
        answers.append(response.json())
    first, second = answers
    key = "probabilities" if first.get("probabilities") else "predictions"
    a, b = torch.tensor(first[key], dtype=torch.float64), torch.tensor(second[key])
    if not torch.allclose(a, b.double(), atol=1e-5, rtol=0):
        raise SystemExit(f"{model}: the servers answer differently: {first} vs {second}")


def profile(pid: int, seconds: float, out: Path) -> subprocess.Popen:
    py_spy = Path(sys.executable).with_name("py-spy")
    argv = [str(py_spy), "record", "--pid", str(pid), "--duration", str(int(seconds))]
    argv += ["--rate", "200", "--threads", "--format", "raw", "--output", str(out)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per cell")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for trainserve")
    parser.add_argument("--profile", type=Path, help="py-spy trainserve at the most clients here")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: apt-get install wrk (or make system-packages)")
    models = args.models.split(",")
    clients = [int(c) for c in args.clients.split(",")]
    extra = dict(item.split("=", 1) for item in args.env)

    with tempfile.TemporaryDirectory(prefix="trainserve-predict-") as tmp, ExitStack() as stack:
        root = Path(tmp)
        service = Service(root, {"TRAINSERVE_LOG_LEVEL": "WARNING", **extra})
        stack.callback(service.stop)
        service.start_api()
        settings = Settings(data_dir=root / "data", api_keys=service.key)
        weights = {m: publish(settings, m, train(m)) for m in models}
        for model in models:  # made once and stored: ONNX Runtime takes over within the warm-up
            make_onnx_export(service.url, service.key, model)
        port = free_port()
        argv = [sys.executable, str(MINIMAL), str(port)] + [f"{m}={p}" for m, p in weights.items()]
        minimal = Process(argv, dict(os.environ), root / "minimal.log")
        stack.callback(minimal.stop)
        minimal_url = f"http://127.0.0.1:{port}"
        wait_until(lambda: up(minimal_url, minimal), 60, "the minimal endpoint")
        servers = [
            Server("trainserve", service.url, service.api.popen.pid, root, service.key),
            Server("minimal", minimal_url, minimal.popen.pid, root, "none"),
        ]
        bodies = {}
        for model in models:
            body = {"inputs": sample(model)}
            bodies[model] = root / f"{model}.json"
            bodies[model].write_text(json.dumps(body))
            check_same_answers(servers, model, body)
            for server in servers:  # warm-up: first forwards, thread pools, connections
                server.load(model, bodies[model], max(clients), 2)

        rows = []
        for i, (model, n) in enumerate((m, c) for m in models for c in clients):
            order = servers if i % 2 == 0 else servers[::-1]
            cell = {}
            for server in order:
                spy = None
                if args.profile and server.label == "trainserve" and n == max(clients):
                    args.profile.mkdir(parents=True, exist_ok=True)
                    out = args.profile / f"trainserve-{model}-{n}.folded"
                    spy = profile(server.pid, args.duration, out)
                cell[server.label] = server.load(model, bodies[model], n, args.duration)
                if spy is not None:
                    spy.wait(60)
            rows.append((model, n, cell))
            time.sleep(0.5)

    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at the end")
    print(f"cells of {args.duration:g} s, wrk -t1; trainserve settings: {extra or 'defaults'}")
    print()
    print(
        "| model | clients | trainserve req/s | p50 ms | p99 ms | CPU ms/req | minimal req/s | "
        "p50 ms | p99 ms | CPU ms/req | req/s ratio | p50 ratio |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for model, n, cell in rows:
        t, m = cell["trainserve"], cell["minimal"]
        bad = {k: v["non2xx"] + v["socket_errors"] for k, v in cell.items()}
        flag = f" (errors: {bad})" if any(bad.values()) else ""
        print(
            f"| {model} | {n} | {t['rps']:.0f} | {t['p50']:.2f} | {t['p99']:.2f} | "
            f"{t['cpu_ms_per_req']:.2f} | {m['rps']:.0f} | {m['p50']:.2f} | {m['p99']:.2f} | "
            f"{m['cpu_ms_per_req']:.2f} | {t['rps'] / m['rps']:.2f}x | "
            f"{t['p50'] / m['p50']:.2f}x{flag} |"
        )


if __name__ == "__main__":
    main()
