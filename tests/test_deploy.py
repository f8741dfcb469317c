"""The deployment files: docker-compose.yml (as `docker-compose config` resolves it) and Dockerfile.

No Docker daemon is needed: `docker-compose config` only validates and interpolates the file.
"""

import os
import re
import shlex
import shutil
import subprocess
import warnings
from pathlib import Path

import click
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SECRETS = {
    "REDIS_PASSWORD": "redis-secret",
    "POSTGRES_PASSWORD": "postgres-secret",
    "TRAINSERVE_API_KEYS": "key-one,key-two",
}


def compose_config(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.fail("docker-compose is not installed: run `make test`, which installs it")
    empty = tmp_path / "empty.env"  # so that a developer's .env cannot fill in the secrets
    empty.write_text("")
    cmd = [exe, "-f", str(REPO / "docker-compose.yml"), "--env-file", str(empty), "config"]
    base = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    return subprocess.run(cmd, env=base | env, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def services(tmp_path_factory) -> dict:
    result = compose_config(tmp_path_factory.mktemp("compose"), SECRETS)
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    config["services"]["_volumes"] = config.get("volumes") or {}
    return config["services"]


def argv(command: str | list[str]) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else [str(a) for a in command]


def mounts(service: dict) -> dict[str, str]:
    """{target: source} of a service's volumes, short or long syntax."""
    out = {}
    for v in service.get("volumes", []):
        if isinstance(v, str):
            source, target = v.split(":")[:2]
        else:
            source, target = v.get("source"), v["target"]
        out[target] = source
    return out


@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_compose_refuses_to_run_without_a_secret(tmp_path, missing):
    env = {k: v for k, v in SECRETS.items() if k != missing}
    result = compose_config(tmp_path, env)
    assert result.returncode != 0
    assert f"set {missing}" in result.stderr


def test_worker_reserves_a_gpu(services):
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)


def test_redis_is_persistent_and_needs_the_password(services):
    command = argv(services["redis"]["command"])
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--requirepass") + 1] == SECRETS["REDIS_PASSWORD"]
    assert "/data" in mounts(services["redis"])
    assert "/var/lib/postgresql/data" in mounts(services["postgres"])


def test_api_and_worker_reach_redis_and_postgres_with_the_secrets(services):
    for name in ("api", "worker"):
        env = services[name]["environment"]
        assert env["TRAINSERVE_BROKER_URL"] == f"redis://:{SECRETS['REDIS_PASSWORD']}@redis:6379/0"
        db = env["TRAINSERVE_DATABASE_URL"]
        assert db.startswith("postgresql+psycopg://") and f":{SECRETS['POSTGRES_PASSWORD']}@" in db
    assert services["api"]["environment"]["TRAINSERVE_API_KEYS"] == SECRETS["TRAINSERVE_API_KEYS"]


ONE_SHOT = ("_volumes", "migrate", "minio-bucket")


def test_every_service_is_health_checked_and_waits_for_healthy_dependencies(services):
    names = [n for n in services if n not in ONE_SHOT]
    assert {"api", "worker", "redis", "postgres"} <= set(names)
    for name in names:
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        for dep, spec in services[name].get("depends_on", {}).items():
            wanted = "service_completed_successfully" if dep == "migrate" else "service_healthy"
            assert spec == {"condition": wanted}, f"{name} -> {dep}"
    assert {"redis", "postgres"} <= set(services["api"]["depends_on"])
    assert {"redis", "postgres"} <= set(services["worker"]["depends_on"])


def test_migrations_run_once_before_the_api_and_the_workers(services):
    """`trainserve api` and `worker` refuse a database that is behind: a one-shot service runs
    `trainserve db upgrade` against the same database first."""
    migrate = services["migrate"]
    command = argv(migrate["command"])
    assert command[:3] == ["trainserve", "db", "upgrade"]
    assert parsed_command(command[1:]) == ["db", "upgrade"]
    assert (
        migrate["environment"]["TRAINSERVE_DATABASE_URL"]
        == (services["api"]["environment"]["TRAINSERVE_DATABASE_URL"])
    )
    assert migrate["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert str(migrate.get("restart", "no")) == "no"
    for name in ("api", "worker"):
        assert services[name]["depends_on"]["migrate"] == {
            "condition": "service_completed_successfully"
        }


def test_the_worker_health_check_needs_no_answer_from_the_busy_worker(services):
    """A solo-pool worker training a job answers no `inspect ping`: the check reads the file
    that the worker's liveness thread touches (workers/liveness.py)."""
    test = argv(services["worker"]["healthcheck"]["test"])
    assert "inspect" not in test and "ping" not in test, test
    assert test[-3:] == ["python", "-m", "workers.liveness"], test
    (check,) = [rest for op, rest in dockerfile_stages()["worker"] if op == "HEALTHCHECK"]
    assert "inspect" not in check and check.endswith("CMD python -m workers.liveness"), check


def test_api_and_worker_share_a_named_volume_at_the_data_dir(services):
    api, worker = services["api"], services["worker"]
    data_dir = api["environment"]["TRAINSERVE_DATA_DIR"]
    assert worker["environment"]["TRAINSERVE_DATA_DIR"] == data_dir
    source = mounts(api).get(data_dir)
    assert source in services["_volumes"], f"{data_dir} is not a named volume in api"
    assert mounts(worker).get(data_dir) == source


def test_the_artifact_store_is_the_shared_volume_unless_an_s3_url_is_set(services, tmp_path):
    """One host: nothing set, the API and the workers use the volume, and the s3 profile's
    services exist only in that profile. Several: the URL, endpoint and keys reach both."""
    from app.core.settings import Settings

    for name in ("api", "worker"):
        env = services[name]["environment"]
        assert env["TRAINSERVE_ARTIFACTS_URL"] == "" and env["AWS_SECRET_ACCESS_KEY"] == ""
        assert (
            Settings(data_dir=tmp_path, artifacts_url=env["TRAINSERVE_ARTIFACTS_URL"]).artifacts_url
            is None
        )
    for name in ("minio", "minio-bucket"):
        assert services[name]["profiles"] == ["s3"]
    assert "/data" in mounts(services["minio"])
    assert services["minio-bucket"]["depends_on"] == {"minio": {"condition": "service_healthy"}}

    several = {
        **SECRETS,
        "TRAINSERVE_ARTIFACTS_URL": "s3://trainserve/artifacts",
        "TRAINSERVE_S3_ENDPOINT_URL": "http://minio:9000",
        "AWS_ACCESS_KEY_ID": "trainserve",
        "AWS_SECRET_ACCESS_KEY": "s3-secret-of-16-chars",
    }
    result = compose_config(tmp_path, several)
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)["services"]
    for name in ("api", "worker"):
        env = config[name]["environment"]
        settings = Settings(
            data_dir=tmp_path,
            artifacts_url=env["TRAINSERVE_ARTIFACTS_URL"],
            s3_endpoint_url=env["TRAINSERVE_S3_ENDPOINT_URL"],
        )
        assert settings.artifacts_url == "s3://trainserve/artifacts"
        assert env["AWS_SECRET_ACCESS_KEY"] == several["AWS_SECRET_ACCESS_KEY"]
    assert config["minio"]["environment"]["MINIO_ROOT_PASSWORD"] == "s3-secret-of-16-chars"
    assert "store/trainserve" in " ".join(argv(config["minio-bucket"]["command"]))


@pytest.mark.parametrize(
    ("service", "subcommand"), [("api", "api"), ("worker", "worker")], ids=["api", "worker"]
)
def test_services_run_real_cli_commands(services, service, subcommand):
    command = argv(services[service]["command"])
    assert command[0] == "trainserve"
    assert parsed_command(command[1:]) == [subcommand]


def parsed_command(args: list[str]) -> list[str]:
    """The command path `trainserve ARGS` runs, parsed by the real command line (click): an
    unknown command or option fails here as it would in the container."""
    from app.cli import cli

    path, group, rest = [], cli, list(args)
    ctx = group.make_context("trainserve", list(rest), resilient_parsing=False)
    while isinstance(group, click.Group):
        with warnings.catch_warnings():  # click 8.2 deprecates protected_args (merged in 9)
            warnings.simplefilter("ignore", DeprecationWarning)
            tokens = [*ctx.protected_args, *ctx.args]
        name, command, rest = group.resolve_command(ctx, tokens)
        path.append(name)
        ctx = command.make_context(name, rest, parent=ctx)
        group = command
    return path


# ---------------------------------------------------------------- Dockerfile


def dockerfile_stages() -> dict[str, list[tuple[str, str]]]:
    """{stage name: [(INSTRUCTION, arguments), ...]}, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            match = re.search(r"\bAS\s+(\S+)", rest, re.IGNORECASE)
            current = stages.setdefault(match.group(1) if match else f"#{len(stages)}", [])
        current.append((instruction, rest.strip()))
    return stages


@pytest.mark.parametrize("target", ["api", "worker"])
def test_dockerfile_target(target):
    stages = dockerfile_stages()
    assert target in stages, f"no `FROM ... AS {target}` in Dockerfile"
    steps = stages[target]
    users = [rest for instruction, rest in steps if instruction == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "runs as root"
    assert any(instruction == "HEALTHCHECK" for instruction, _ in steps)

    copies = [rest.split() for instruction, rest in steps if instruction == "COPY"]
    sources = [src for *srcs, _dest in copies for src in srcs if not src.startswith("--")]
    for src in sources:
        assert (REPO / src).exists(), f"COPY {src}: no such file in the repository"
    assert sources.index("pyproject.toml") < min(
        sources.index(src) for src in ("app/", "workers/", "models/")
    ), "copy pyproject.toml and install dependencies before copying the source"
