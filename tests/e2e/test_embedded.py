"""`trainserve serve` on embedded defaults (SQLite, files, no Redis) and the README walkthrough."""

import os
import re
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.e2e.processes import embedded_serve, wait_until

pytestmark = pytest.mark.e2e

README = Path(__file__).resolve().parents[2] / "README.md"
DONE = {"succeeded", "failed", "cancelled"}


def walkthrough() -> str:
    """The bash blocks between the README's walkthrough markers, verbatim."""
    text = README.read_text()
    section = text.split("<!-- walkthrough -->")[1].split("<!-- /walkthrough -->")[0]
    return "\n".join(re.findall(r"```bash\n(.*?)```", section, flags=re.S))


@pytest.fixture
def served(tmp_path):
    with embedded_serve(tmp_path) as (proc, url):
        yield proc, url, tmp_path


def test_readme_walkthrough_runs_verbatim_against_serve(served):
    proc, url, cwd = served
    key_file = cwd / ".trainserve" / "api_key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert key_file.read_text().strip() in proc.output()  # printed once at start

    script = "set -euo pipefail\n" + walkthrough()
    result = subprocess.run(
        ["bash", "-c", script],
        cwd=cwd,
        env={**os.environ, "TRAINSERVE_URL": url},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, (result.stdout, result.stderr, proc.output()[-4000:])
    assert '"status":"succeeded"' in result.stdout
    prediction = re.search(r'"predictions":\[([-0-9.e]+)\]', result.stdout)
    assert prediction, result.stdout
    assert 10 < float(prediction.group(1)) < 40  # the first Boston house sold for 24.0
    assert (cwd / "house-prices-v1.safetensors").stat().st_size > 0
    assert (cwd / "house-prices.onnx").stat().st_size > 0
    assert "'moved': False" in result.stdout and "is not better than" in result.stdout
    assert '"aliases":{"production":1}' in result.stdout
    # The worker made each version's ONNX export as it published it; the API made none.
    output = proc.output()
    assert output.count("made the ONNX export") == 2, output[-4000:]
    assert "exported house-prices v" not in output


def test_sigterm_stops_api_and_worker(served):
    proc, url, _cwd = served
    children = subprocess.run(
        ["pgrep", "-s", str(proc.popen.pid)], capture_output=True, text=True
    ).stdout.split()
    assert len(children) >= 2  # the API process and at least the worker
    os.kill(proc.popen.pid, signal.SIGTERM)
    proc.popen.wait(timeout=40)
    assert proc.popen.returncode == 0, proc.output()[-3000:]
    still = subprocess.run(["pgrep", "-s", str(proc.popen.pid)], capture_output=True, text=True)
    assert still.stdout.split() == [], "worker left running after serve stopped"
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/healthz", timeout=2)


def worker_pids(serve_pid: int) -> list[int]:
    found = subprocess.run(
        ["pgrep", "-P", str(serve_pid), "-f", "app.cli worker"], capture_output=True, text=True
    )
    return [int(pid) for pid in found.stdout.split()]


def test_a_killed_worker_is_started_again_and_readyz_says_so_meanwhile(served):
    """As when the kernel kills the worker for memory: /readyz answers 503 naming the worker
    until the supervisor has started another, which then trains."""
    proc, url, cwd = served
    (first,) = wait_until(lambda: worker_pids(proc.popen.pid), 30, "serve's worker")
    os.kill(first, signal.SIGKILL)
    refusal = wait_until(
        lambda: (r := httpx.get(f"{url}/readyz", timeout=2)).status_code == 503 and r,
        10,
        "readyz to notice the dead worker",
        interval=0.02,
    )
    assert "worker is not running" in refusal.json()["detail"]
    wait_until(lambda: httpx.get(f"{url}/readyz", timeout=2).status_code == 200, 30, "ready")
    (second,) = worker_pids(proc.popen.pid)
    assert second != first
    key = (cwd / ".trainserve" / "api_key").read_text().strip()
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as client:
        job = {"model_name": "after", "architecture": "mlp", "dataset": "diabetes", "epochs": 2}
        job_id = client.post("/v1/jobs", json=job).json()["id"]
        status = wait_until(
            lambda: (
                client.get(f"/v1/jobs/{job_id}").json()["status"] in DONE
                and client.get(f"/v1/jobs/{job_id}").json()["status"]
            ),
            120,
            "the job on the new worker",
        )
    assert status == "succeeded", proc.output()[-3000:]
    assert "the worker (pid" in proc.output() and "starting another" in proc.output()
