"""`trainserve serve` on embedded defaults (SQLite, files, no Redis) and the README walkthrough."""

import os
import re
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.e2e.processes import TRAINSERVE, Process, free_port, wait_until

pytestmark = pytest.mark.e2e

README = Path(__file__).resolve().parents[2] / "README.md"


def walkthrough() -> str:
    """The bash blocks between the README's walkthrough markers, verbatim."""
    text = README.read_text()
    section = text.split("<!-- walkthrough -->")[1].split("<!-- /walkthrough -->")[0]
    return "\n".join(re.findall(r"```bash\n(.*?)```", section, flags=re.S))


@pytest.fixture
def served(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINSERVE_")}
    env["TRAINSERVE_PORT"] = str(port)
    proc = Process([TRAINSERVE, "serve"], env, tmp_path / "serve.log", cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"

    def ready():
        assert proc.alive(), proc.output()
        try:
            return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(ready, 60, "trainserve serve to be ready")
        yield proc, url, tmp_path
    finally:
        proc.stop()


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
