"""The Dockerfile is multi-stage and non-root and builds through
deploy/docker/build-steps.sh (which CI runs: .ci/ops.sh → dry-build.sh);
docker-compose.yml validates (docker-compose config) and its shell glue works."""
from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from services.common.config import DEFAULT_PORTS
from services.console.config import DEFAULT_PORT as CONSOLE_PORT

REPO = Path(__file__).resolve().parents[3]
DEPLOY = REPO / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "docker-compose.yml"


def _stages() -> list[list[str]]:
    """Dockerfile instructions per stage (continuation lines joined)."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def test_dockerfile_is_multi_stage_and_runs_as_non_root():
    build, runtime = _stages()
    assert build[0].endswith(" AS build") and runtime[0].endswith(" AS runtime")
    users = [line.split()[1] for line in runtime if line.startswith("USER ")]
    assert users and users[-1].split(":")[0].isdigit() and int(users[-1].split(":")[0]) != 0
    # the runtime stage takes only the built environment, no source tree
    copies = [line for line in runtime if line.startswith("COPY ")]
    assert copies and all("--from=build" in line for line in copies)
    assert any(line.startswith("ENTRYPOINT") and '"kequn"' in line for line in runtime)
    exposed = {int(p) for line in runtime if line.startswith("EXPOSE ") for p in line.split()[1:]}
    assert exposed == {p for pair in DEFAULT_PORTS.values() for p in pair} | {CONSOLE_PORT}


def test_build_stage_runs_build_steps_on_what_it_copies():
    build, _ = _stages()
    assert "RUN sh deploy/docker/build-steps.sh /opt/kequn /src" in build
    for line in build:
        if line.startswith("COPY "):
            *sources, dest = line.split()[1:]
            for source in sources:
                assert (REPO / source).exists(), source
                # dry-build.sh stages each source at the same path
                assert dest in ("./", f"./{source}"), line
    assert os.access(DEPLOY / "docker" / "build-steps.sh", os.R_OK)


@pytest.fixture(scope="module")
def compose(require_tool):
    """The compose file as docker-compose resolves it (anchors, merges, variables)."""
    result = subprocess.run([require_tool("docker-compose"), "-f", str(COMPOSE), "config"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_compose_runs_postgres_migrations_services_prometheus_grafana(compose):
    services = compose["services"]
    assert set(services) == {"postgres", "tokens", "migrate", *DEFAULT_PORTS, "console", "prometheus", "grafana"}
    assert services["migrate"]["command"] == ["migrate"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name, (grpc_port, metrics_port) in DEFAULT_PORTS.items():
        service = services[name]
        assert service["command"] == [name]
        assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert service["read_only"] is True
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
        published = {(int(p["target"]), int(p["published"])) for p in service["ports"]}
        assert published == {(grpc_port, grpc_port), (metrics_port, metrics_port)}
        env = service["environment"]
        assert env[f"KEQUN_{name.upper()}_DATABASE_URL"].endswith(f"@postgres:5432/kequn_{name}")
        assert env[f"KEQUN_{name.upper()}_TARGET"] == f"{name}:{grpc_port}"


def test_compose_runs_the_console_after_the_services_without_a_database_or_a_token(compose):
    console = compose["services"]["console"]
    assert console["command"] == ["serve", "console"] and console["read_only"] is True
    assert {(int(p["target"]), int(p["published"])) for p in console["ports"]} == {(CONSOLE_PORT, CONSOLE_PORT)}
    assert set(DEFAULT_PORTS) | {"tokens"} <= set(console["depends_on"])
    env = console["environment"]
    assert env["KEQUN_CONSOLE_PORT"] == str(CONSOLE_PORT) and "KEQUN_SERVICE_TOKEN" not in env
    for name, (grpc_port, _) in DEFAULT_PORTS.items():
        assert env[f"KEQUN_{name.upper()}_TARGET"] == f"{name}:{grpc_port}"


def test_compose_mounts_existing_files(compose):
    mounted = []
    for service in compose["services"].values():
        for volume in service.get("volumes", []):  # long or short syntax, by docker-compose version
            source = volume["source"] if isinstance(volume, dict) else volume.split(":")[0]
            if source.startswith("/"):
                mounted.append(source)
    assert mounted
    for source in mounted:
        assert Path(source).exists(), source
    prometheus = compose["services"]["prometheus"]
    config = next(a for a in prometheus["command"] if a.startswith("--config.file="))
    assert config.endswith("prometheus-compose.yml")
    init = (DEPLOY / "docker" / "postgres-init.sql").read_text()
    assert all(f"CREATE DATABASE kequn_{n};" in init for n in DEFAULT_PORTS)


def test_compose_prometheus_scrapes_the_compose_services():
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus-compose.yml").read_text())
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert set(jobs) == {"kequn", "kequn-console"}
    targets = {sc["labels"]["service"]: sc["targets"] for sc in jobs["kequn"]["static_configs"]}
    assert targets == {n: [f"{n}:{m}"] for n, (_, m) in DEFAULT_PORTS.items()}
    (console,) = jobs["kequn-console"]["static_configs"]
    assert console["targets"] == [f"console:{CONSOLE_PORT}"] and jobs["kequn-console"]["metrics_path"] == "/metrics"


def _shell(entrypoint: list[str], args: list[str], data_dir: Path, bin_dir: Path) -> subprocess.CompletedProcess:
    """Run a compose entrypoint with /var/lib/kequn moved to data_dir and our python as `python`."""
    script = entrypoint[2].replace("/var/lib/kequn", str(data_dir)).replace("$$", "$")
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "KEQUN_DATA_DIR": str(data_dir),
           "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "gen" / "python")])}
    return subprocess.run([*entrypoint[:2], script, *args], env=env, capture_output=True, text=True, timeout=60)


def test_compose_token_and_serve_glue_work(compose, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    python = bin_dir / "python"  # this venv's python (a symlink would lose the venv)
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    fake = bin_dir / "kequn"  # stands in for the real command: prints what it was given
    fake.write_text('#!/bin/sh\necho "token=$KEQUN_SERVICE_TOKEN args=$*"\n')
    for script in (python, fake):
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
    data = tmp_path / "data"
    data.mkdir()

    tokens = compose["services"]["tokens"]["entrypoint"]
    assert _shell(tokens, [], data, bin_dir).returncode == 0
    written = json.loads((data / "dev-tokens.json").read_text())
    hashed = (data / "tokens.yaml").read_text()
    assert written["service"] and written["service"] not in hashed
    first = (data / "tokens.yaml").stat().st_mtime_ns
    assert _shell(tokens, [], data, bin_dir).returncode == 0
    assert (data / "tokens.yaml").stat().st_mtime_ns == first, "a restart must not rotate the tokens"

    serve = compose["services"]["tiering"]
    result = _shell(serve["entrypoint"], serve["command"], data, bin_dir)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"token={written['service']} args=serve tiering"
