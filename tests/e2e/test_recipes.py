"""docs/recipes.md, each recipe run verbatim (after its setup block) against `trainserve serve`."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.e2e.processes import VENV_BIN, embedded_serve

pytestmark = pytest.mark.e2e

RECIPES = Path(__file__).resolve().parents[2] / "docs" / "recipes.md"
EXPORTS = Path(__file__).resolve().parents[2] / "docs" / "exports.md"


def bash_blocks(text: str) -> str:
    return "\n".join(re.findall(r"```bash\n(.*?)```", text, flags=re.S))


def recipes() -> dict[str, str]:
    """The recipes of docs/recipes.md, and the one of docs/exports.md."""
    text = RECIPES.read_text() + EXPORTS.read_text()
    found = re.findall(r"<!-- recipe (\w+) -->(.*?)<!-- /recipe -->", text, flags=re.S)
    return {name: bash_blocks(body) for name, body in found}


def setup_block() -> str:
    text = RECIPES.read_text()
    return bash_blocks(text.split("<!-- setup -->")[1].split("<!-- /setup -->")[0])


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("recipes")
    with embedded_serve(cwd) as (proc, url):
        yield proc, url, cwd


def run_recipe(name: str, served) -> str:
    proc, url, cwd = served
    script = "set -euo pipefail\n" + setup_block() + "\n" + recipes()[name]
    result = subprocess.run(
        ["bash", "-c", script],
        cwd=cwd,
        # python3 with torch and safetensors, as an activated virtualenv gives
        env={**os.environ, "TRAINSERVE_URL": url, "PATH": f"{VENV_BIN}:{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert result.returncode == 0, (result.stdout, result.stderr, proc.output()[-3000:])
    return result.stdout


def test_every_recipe_has_a_test():
    assert set(recipes()) == {"upload", "images", "cancel", "events", "weights", "exports"}


def test_upload_train_predict(served):
    out = run_recipe("upload", served)
    assert '"name":"plants"' in out and '"n_samples":300' in out
    (value,) = re.findall(r'"predictions":\[([-0-9.e]+)\]', out)
    assert abs(float(value) - 9.5) < 1.5  # 2*2 + 3*1 + 0.5*5


def test_classify_images(served):
    out = run_recipe("images", served)
    answer = json.loads(out.strip().splitlines()[-1])
    assert answer["classes"] == [str(i) for i in range(10)]
    assert len(answer["probabilities"][0]) == 10
    assert abs(sum(answer["probabilities"][0]) - 1) < 1e-4


def test_cancel(served):
    out = run_recipe("cancel", served)
    assert '"status":"cancelled"' in out
    assert "already ended" in out and "409, as it should be" in out


def test_follow_the_events(served):
    lines = run_recipe("events", served).strip().splitlines()
    assert lines[-1] == "succeeded 400 / 400", lines
    assert any(line.startswith("running") for line in lines)


def test_weights_in_plain_pytorch_answer_as_the_service(served):
    out = run_recipe("weights", served)
    (service,) = re.findall(r'"predictions":\[([-0-9.e]+)\]', out)
    plain = json.loads(out.strip().splitlines()[-1])["plain_pytorch"]
    assert abs(float(service) - plain) < 1e-3


def test_exports_run_outside_trainserve_and_answer_as_the_service(served):
    out = run_recipe("exports", served)
    lines = out.strip().splitlines()
    service = json.loads(lines[-2])["predictions"]
    exported = json.loads(lines[-1])
    for name in ("onnx", "pt2"):
        assert len(exported[name]) == len(service) == 2
        for got, expected in zip(exported[name], service, strict=True):
            assert abs(got - expected) <= 1e-5 * max(1.0, abs(expected)), (name, got, expected)
