"""The `trainserve` command line, run as a real program."""

import subprocess
import sys

from models.weights_file import read_card
from tests.e2e.processes import TRAINSERVE


def run(*args, cwd):
    return subprocess.run([TRAINSERVE, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_train_writes_weights_and_prints_metrics(tmp_path):
    result = run(
        "train",
        "--architecture",
        "house_prices_mlp",
        "--dataset",
        "boston_housing",
        "--epochs",
        "30",
        "--optimizer",
        "sgd",
        "--lr",
        "0.01",
        "--momentum",
        "0.9",
        "--param",
        "hidden_size=16",
        "--eval-every",
        "10",
        "--device",
        "cpu",
        "--out",
        "house.safetensors",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "val_rmse=" in result.stdout and "val_r2=" in result.stdout
    assert "30/30" in result.stderr  # the progress bar reached the last epoch
    card = read_card((tmp_path / "house.safetensors").read_bytes())
    assert card.architecture_params == {"hidden_size": 16}
    assert card.dataset == "boston_housing"


def test_train_explains_a_bad_request(tmp_path):
    result = run("train", "--architecture", "resnet99", "--dataset", "boston_housing", cwd=tmp_path)
    assert result.returncode == 2
    assert "architecture 'resnet99' is unknown; known:" in result.stderr
    assert "Traceback" not in result.stderr


def test_api_refuses_a_public_address_without_keys(tmp_path):
    env_cmd = [
        "env",
        "-u",
        "TRAINSERVE_API_KEYS",
        "TRAINSERVE_HOST=0.0.0.0",
        f"TRAINSERVE_DATA_DIR={tmp_path}",
        TRAINSERVE,
        "api",
    ]
    result = subprocess.run(env_cmd, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "TRAINSERVE_API_KEYS" in result.stderr


def test_every_field_of_the_training_request_is_a_flag(tmp_path):
    from models.request import OPTIMIZER_CLASSES, TrainingRequest

    text = run("train", "--help", cwd=tmp_path).stdout
    renamed = {"architecture_params": "--param", "dataset_params": "--dataset-param"}
    fields = set(TrainingRequest.model_fields) | {
        name for cls in OPTIMIZER_CLASSES for name in cls.model_fields if name != "name"
    }
    for name in fields:
        assert renamed.get(name, "--" + name.replace("_", "-")) in text, name


def test_optimizer_settings_follow_the_optimizer(tmp_path):
    common = ["train", "--architecture", "mlp", "--dataset", "diabetes", "--epochs", "1"]
    refused = run(*common, "--optimizer", "adam", "--momentum", "0.9", cwd=tmp_path)
    assert refused.returncode == 2
    assert "optimizer.momentum: Extra inputs are not permitted" in refused.stderr
    assert "Traceback" not in refused.stderr
    betas = run(*common, "--optimizer", "adamw", "--betas", "0.8,0.99", "--out", "w", cwd=tmp_path)
    assert betas.returncode == 0, betas.stderr


def test_train_reports_a_diverged_run_and_writes_no_weights(tmp_path):
    common = ["train", "--architecture", "house_prices_mlp", "--dataset", "boston_housing"]
    result = run(
        *common,
        *("--optimizer", "sgd", "--lr", "10", "--epochs", "5", "--device", "cpu"),
        *("--out", "house.safetensors"),
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert (
        "trainserve train: diverged at epoch 1: the loss became infinite; lower lr or enable "
        "grad_clip_norm" in result.stderr
    )
    assert "Traceback" not in result.stderr and not (tmp_path / "house.safetensors").exists()


def test_help_version_and_the_client_load_no_torch(tmp_path):
    helped = run("--help", cwd=tmp_path)
    assert helped.returncode == 0
    for command in ("train", "serve", "api", "worker", "db", "jobs", "models", "datasets"):
        assert f"  {command} " in helped.stdout
    assert run("--version", cwd=tmp_path).stdout.startswith("trainserve, version ")
    script = (
        "import sys; from app.cli import cli, main; import app.client.commands, "
        "app.client.http, app.client.follow, app.client.connection, app.training_flags; "
        "main(['jobs', 'submit', '--help']); "
        "heavy = {'torch', 'fastapi', 'sqlalchemy', 'celery'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "--model-name" in result.stdout and "--momentum" in result.stdout


def test_a_usage_error_exits_2_without_a_trace(tmp_path):
    result = run("jobs", "watch", cwd=tmp_path)
    assert result.returncode == 2
    assert "Missing argument 'JOB_ID'" in result.stderr and "Traceback" not in result.stderr
