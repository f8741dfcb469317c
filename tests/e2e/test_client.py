"""The client commands (`trainserve jobs | models | datasets`), run as programs against a real
`trainserve serve`: exit codes, JSON output, the connection's defaults, errors without traces."""

import json
import os
import re
import signal
import subprocess
import time

import httpx
import numpy as np
import onnxruntime
import pytest

from models.weights_file import read_card
from tests.e2e.processes import TRAINSERVE, embedded_serve, free_port, wait_until

pytestmark = pytest.mark.e2e

HOUSE = ["--architecture", "house_prices_mlp", "--dataset", "boston_housing", "--device", "cpu"]
FIRST_HOUSE = "0.00632,18,2.31,0,0.538,6.575,65.2,4.09,1,296,15.3,396.9,4.98"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("client")
    with embedded_serve(cwd) as (proc, url):
        yield proc, url, cwd


def cli(served, *args, input=None, env=None, timeout=180):
    """`trainserve ARGS` from the served folder: the URL from TRAINSERVE_PORT and the key from
    `.trainserve/api_key`, as on the machine that runs `trainserve serve`. (`script ...`: that
    command instead.)"""
    proc, url, cwd = served
    base = {k: v for k, v in os.environ.items() if not k.startswith("TRAINSERVE_")}
    base["TRAINSERVE_PORT"] = url.rsplit(":", 1)[1]
    argv = list(args) if args[0] == "script" else [TRAINSERVE, *args]
    return subprocess.run(
        argv,
        cwd=cwd,
        env={**base, **(env or {})},
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def submit(served, name: str, epochs: int, *flags: str):
    """`trainserve jobs submit` of a house-prices job: model NAME, EPOCHS epochs, and FLAGS."""
    request = ["--model-name", name, *HOUSE, "--epochs", str(epochs)]
    return cli(served, "jobs", "submit", *request, *flags)


def submit_id(served, name: str, epochs: int, *flags: str) -> str:
    """Submit as `submit` does, without waiting; the new job's id."""
    submitted = submit(served, name, epochs, *flags, "-o", "json")
    assert submitted.returncode == 0, (submitted.stdout, submitted.stderr)
    return json.loads(submitted.stdout)["id"]


def long_job(served, name: str) -> str:
    """The id of a job that trains for minutes (5000 epochs of batches of 1)."""
    return submit_id(served, name, 5000, "--batch-size", "1")


def watcher(served, job_id: str, *flags: str) -> subprocess.Popen:
    """`trainserve jobs watch JOB_ID` running in the background, the URL from TRAINSERVE_URL."""
    _proc, url, cwd = served
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINSERVE_")}
    env["TRAINSERVE_URL"] = url
    return subprocess.Popen(
        [TRAINSERVE, "jobs", "watch", job_id, *flags],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def no_trace(result) -> None:
    assert "Traceback" not in result.stderr + result.stdout


def test_submit_wait_predict_download_round_trip(served):
    _proc, _url, cwd = served
    submitted = submit(served, "house", 5, "--wait", "-o", "json")
    assert submitted.returncode == 0, (submitted.stdout, submitted.stderr)
    job = json.loads(submitted.stdout)  # stdout is the job alone; progress went to stderr
    assert job["status"] == "succeeded" and job["model_version"] == 1
    assert f"job {job['id']}: succeeded epoch 5/5" in submitted.stderr

    (cwd / "houses.csv").write_text(
        f"crim,zn,indus,chas,nox,rm,age,dis,rad,tax,ptratio,b,lstat\n{FIRST_HOUSE}\n{FIRST_HOUSE}\n"
    )
    predicted = cli(served, "models", "predict", "house", "--input", "houses.csv", "-o", "json")
    assert predicted.returncode == 0, predicted.stderr
    answer = json.loads(predicted.stdout)
    assert answer["version"] == 1 and len(answer["predictions"]) == 2
    assert 5 < answer["predictions"][0] < 50  # about 24.0: the price of the first house
    stdin = cli(
        served,
        "models",
        "predict",
        "house",
        input=json.dumps({"inputs": [[float(v) for v in FIRST_HOUSE.split(",")]]}),
    )
    assert stdin.returncode == 0 and "house v1" in stdin.stdout, stdin.stderr

    downloaded = cli(served, "models", "download", "house", "--out", "w.safetensors", "-o", "json")
    assert downloaded.returncode == 0, downloaded.stderr
    info = json.loads(downloaded.stdout)
    card = read_card((cwd / "w.safetensors").read_bytes())
    assert card.architecture == "house_prices_mlp" and info["bytes"] > 0
    # the portable export, run outside trainserve, answers what predict answered
    exported = cli(served, "models", "download", "house", "--format", "onnx", "--out", "h.onnx")
    assert exported.returncode == 0, exported.stderr
    session = onnxruntime.InferenceSession(str(cwd / "h.onnx"))
    row = np.array([[float(v) for v in FIRST_HOUSE.split(",")]], dtype=np.float32)
    (outside,) = session.run(None, {"input": row})
    assert abs(float(outside[0][0]) - answer["predictions"][0]) < 1e-4

    aliased = cli(served, "models", "alias", "house", "production", "1", "-o", "json")
    assert json.loads(aliased.stdout) == {
        "model_name": "house",
        "alias": "production",
        "version": 1,
    }
    model = json.loads(cli(served, "models", "get", "house", "-o", "json").stdout)
    assert model["aliases"] == {"production": 1}
    listed = json.loads(cli(served, "models", "list", "-o", "json").stdout)
    assert [m["name"] for m in listed] == ["house"]
    jobs = json.loads(cli(served, "jobs", "list", "--status", "succeeded", "-o", "json").stdout)
    assert job["id"] in [j["id"] for j in jobs["items"]]
    got = json.loads(cli(served, "jobs", "get", job["id"], "-o", "json").stdout)
    assert got["metrics"] == job["metrics"]
    # a job that has ended: watch answers at once, in plain lines (stdout is not a terminal)
    watched = cli(served, "jobs", "watch", job["id"])
    assert watched.returncode == 0
    assert f"job {job['id']}: succeeded epoch 5/5 train_loss=" in watched.stdout
    # on a terminal (a pseudo-terminal from `script`): rich's progress bar
    on_tty = cli(served, "script", "-qec", f"{TRAINSERVE} jobs watch {job['id']}", "/dev/null")
    assert on_tty.returncode == 0, on_tty.stdout
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", on_tty.stdout)  # colours, cursor
    assert "\u2501" in screen and "5/5" in screen  # the bar's segments, epoch/epochs
    assert f"job {job['id']}: succeeded" not in screen  # no plain lines


def test_submit_from_a_file_and_upload_a_dataset(served):
    _proc, _url, cwd = served
    rows = "\n".join(f"{i},{2 * i + 1}" for i in range(40))
    (cwd / "line.csv").write_text("x,y\n" + rows + "\n")
    uploaded = cli(
        served, "datasets", "upload", "line.csv", "--name", "line", "--target", "y", "-o", "json"
    )
    assert uploaded.returncode == 0, uploaded.stderr
    assert json.loads(uploaded.stdout)["n_samples"] == 40
    names = [d["name"] for d in json.loads(cli(served, "datasets", "list", "-o", "json").stdout)]
    assert "line" in names and "boston_housing" in names

    request = {"model_name": "line", "architecture": "mlp", "dataset": "line", "epochs": 2}
    (cwd / "request.json").write_text(json.dumps(request))
    result = cli(served, "jobs", "submit", "--file", "request.json", "--epochs", "3", "--wait")
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert "succeeded: model line v1" in result.stdout  # --epochs overrode the file's 2
    assert "epoch 3/3" in result.stdout


def test_a_failed_job_exits_1_with_its_error(served):
    result = submit(served, "diverges", 5, "--optimizer", "sgd", "--lr", "10", "--wait")
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "failed: diverged at epoch 1" in result.stderr
    no_trace(result)


def test_timeout_detach_and_cancel_exit_codes(served):
    job_id = long_job(served, "long")

    timed_out = cli(served, "jobs", "watch", job_id, "--timeout", "1.5")
    assert timed_out.returncode == 4, (timed_out.stdout, timed_out.stderr)
    assert f"Re-attach with: trainserve jobs watch {job_id}" in timed_out.stderr

    # Ctrl-C detaches: the job goes on
    watching = watcher(served, job_id)
    wait_until(lambda: "running" in get_status(served, job_id), 60, "the job to run")
    time.sleep(1.0)
    watching.send_signal(signal.SIGINT)
    out, err = watching.communicate(timeout=30)
    assert watching.returncode == 130, (out, err)
    assert f"detached from job {job_id}" in err and "Traceback" not in err
    assert get_status(served, job_id) == "running"

    watching = watcher(served, job_id, "-o", "json")
    cancelled = cli(served, "jobs", "cancel", job_id)
    assert cancelled.returncode == 0, cancelled.stderr
    out, err = watching.communicate(timeout=60)
    assert watching.returncode == 3, (out, err)
    assert json.loads(out)["status"] == "cancelled"

    deleted = cli(served, "jobs", "delete", job_id)
    assert deleted.returncode == 0, deleted.stderr
    gone = cli(served, "jobs", "get", job_id)
    assert gone.returncode == 2 and "does not exist" in gone.stderr, gone.stderr
    no_trace(gone)


def test_deleting_a_running_job_exits_2_with_the_servers_reason(served):
    job_id = long_job(served, "busy")
    refused = cli(served, "jobs", "delete", job_id)
    assert refused.returncode == 2 and "cancel it" in refused.stderr, refused.stderr
    no_trace(refused)
    assert cli(served, "jobs", "cancel", job_id).returncode == 0


def get_status(served, job_id) -> str:
    return json.loads(cli(served, "jobs", "get", job_id, "-o", "json").stdout)["status"]


def test_refusals_exit_2_with_the_servers_detail(served):
    wrong_key = cli(served, "jobs", "list", "--api-key", "not-the-key")
    assert wrong_key.returncode == 2
    assert wrong_key.stderr.startswith("trainserve: 401 Unauthorized: ")
    no_trace(wrong_key)

    unknown = cli(
        served,
        "jobs",
        "submit",
        "--model-name",
        "x",
        "--architecture",
        "resnet99",
        "--dataset",
        "boston_housing",
    )
    assert unknown.returncode == 2
    assert "422" in unknown.stderr and "architecture 'resnet99' is unknown" in unknown.stderr
    no_trace(unknown)

    missing = cli(served, "jobs", "get", "nope")
    assert missing.returncode == 2 and "404 Not Found: job 'nope' does not exist" in missing.stderr

    usage = cli(served, "jobs", "submit", "--epochs", "many")
    assert usage.returncode == 2 and "'many' is not a valid integer" in usage.stderr

    no_samples = cli(served, "models", "predict", "house", input="")
    assert no_samples.returncode == 2 and "no samples" in no_samples.stderr


def test_a_server_that_is_down_exits_2(served):
    down = f"http://127.0.0.1:{free_port()}"
    result = cli(served, "jobs", "list", "--url", down, "-o", "json")
    assert result.returncode == 2
    assert f"cannot reach the trainserve API at {down}" in result.stderr
    assert result.stdout == ""
    no_trace(result)


def test_watch_polls_when_it_gets_no_stream(tmp_path):
    """All of the key's event streams are taken (429): watch follows the job by polling."""
    with embedded_serve(tmp_path, {"TRAINSERVE_MAX_STREAMS_PER_KEY": "1"}) as (proc, url):
        served = (proc, url, tmp_path)
        job_id = submit_id(served, "polled", 300)
        key = (tmp_path / ".trainserve" / "api_key").read_text().strip()
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.stream("GET", f"{url}/v1/jobs/{job_id}/events", headers=headers) as held:
            assert held.status_code == 200  # the one stream this key may have
            watched = cli(served, "jobs", "watch", job_id, "--timeout", "120")
        assert watched.returncode == 0, (watched.stdout, watched.stderr)
        assert "the event stream ended early; polling instead" in watched.stdout
        assert "epoch 300/300" in watched.stdout
