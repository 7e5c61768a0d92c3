"""The whole suite as real processes on free ports (PostgreSQL, one schema per
service), and a real Prometheus server (Debian's package) scraping it with
deploy/prometheus/prometheus.yml rewritten to those ports and a 1 s interval.

Shared by every test in this folder: starting four services and Prometheus
takes a while on two cores, so it happens once per session.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import psycopg
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.client import dial
from services.common.testing import REPO_ROOT, dev_tokens, free_port, start_service_process, wait_for_port

SERVICES = ("tiering", "assignment", "scoring", "benefits")
GHOST = "ghost"  # an extra scrape target with no server behind it
START_TIMEOUT = 180.0
PROMETHEUS_CONFIG = REPO_ROOT / "deploy" / "prometheus" / "prometheus.yml"
ALERTS = REPO_ROOT / "deploy" / "prometheus" / "alerts.yml"


def _missing(what: str):
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} (bash .ci/ops.sh installs it)", pytrace=False)
    pytest.skip(what)


@dataclass
class Service:
    name: str
    grpc_port: int
    metrics_port: int
    log_path: Path
    process: subprocess.Popen | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def log_lines(self) -> list[dict]:
        """The JSON lines this service wrote to stderr so far (non-JSON lines skipped)."""
        out = []
        for line in self.log_path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out


@dataclass
class Suite:
    services: dict[str, Service]
    tokens: dict[str, str]
    _channels: dict[str, grpc.Channel] = field(default_factory=dict)

    def channel(self, name: str, role: str = "admin") -> grpc.Channel:
        key = f"{name}/{role}"
        if key not in self._channels:
            self._channels[key] = dial(self.services[name].target, self.tokens[role])
        return self._channels[key]

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()


def _serving(target: str) -> bool:
    try:
        with grpc.insecure_channel(target) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
            return reply.status == health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError:
        return False


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def pg_schemas(_pg_database):
    """One fresh PostgreSQL schema per service; name -> SQLAlchemy URL."""
    base = _pg_database.ensure()
    libpq = "postgresql" + base[base.index("://"):]
    urls = {}
    with psycopg.connect(libpq, autocommit=True) as conn:
        for name in SERVICES:
            schema = f"ops_{name}_{secrets.token_hex(4)}"
            conn.execute(f'CREATE SCHEMA "{schema}"')
            sep = "&" if "?" in base else "?"
            urls[name] = base + sep + "options=" + urllib.parse.quote(f"-csearch_path={schema}")
    return urls


@pytest.fixture(scope="session")
def kequn_suite(tmp_path_factory, pg_schemas):
    """The four services as `kequn up` runs them, each `python -m services.<name>`."""
    missing = [n for n in SERVICES if not (REPO_ROOT / "services" / n / "__main__.py").exists()]
    if missing:
        pytest.fail(f"services not runnable yet (no __main__.py): {missing}", pytrace=False)
    root = tmp_path_factory.mktemp("kequn-suite")
    tokens = dev_tokens(root)
    services = {n: Service(n, free_port(), free_port(), root / f"{n}.log") for n in SERVICES}
    env = {
        "KEQUN_DATA_DIR": str(root),
        "KEQUN_TOKENS_FILE": str(tokens.path),
        "KEQUN_SERVICE_TOKEN": tokens["service"],
        "KEQUN_HOST": "127.0.0.1",
        "KEQUN_DEMO": "0",
        "KEQUN_RULES_POLL_SECONDS": "1",
        "KEQUN_LOG_LEVEL": "INFO",
    }
    for s in services.values():
        prefix = f"KEQUN_{s.name.upper()}_"
        env[prefix + "GRPC_PORT"] = str(s.grpc_port)
        env[prefix + "METRICS_PORT"] = str(s.metrics_port)
        env[prefix + "DATABASE_URL"] = pg_schemas[s.name]
        env[prefix + "TARGET"] = s.target
    suite = Suite(services, dict(tokens))
    try:
        for s in services.values():
            s.process = start_service_process(f"services.{s.name}", env, stderr=s.log_path.open("w"),
                                              stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        for s in services.values():
            while not _serving(s.target):
                if s.process.poll() is not None:
                    pytest.fail(f"{s.name} exited with {s.process.returncode} during start-up:\n"
                                + s.log_path.read_text()[-4000:], pytrace=False)
                if time.monotonic() > deadline:
                    pytest.fail(f"{s.name} not SERVING after {START_TIMEOUT}s:\n"
                                + s.log_path.read_text()[-4000:], pytrace=False)
                time.sleep(0.3)
            wait_for_port("127.0.0.1", s.metrics_port)
        yield suite
    finally:
        suite.close()
        for s in services.values():
            if s.process is not None:
                _stop(s.process)


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def api(self, path: str, **params) -> dict:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as reply:
            body = json.load(reply)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        return self.api("query", query=expr)["result"]

    def value(self, expr: str) -> float | None:
        """The single value of a scalar-like query (None when empty)."""
        result = self.query(expr)
        assert len(result) <= 1, f"{expr}: more than one series: {result}"
        return float(result[0]["value"][1]) if result else None

    def wait_until(self, what: str, check, timeout: float = 90.0, interval: float = 0.5):
        """Poll until check() returns something truthy (Prometheus scrapes every second)."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = check()
            if last:
                return last
            time.sleep(interval)
        raise AssertionError(f"{what}: not within {timeout}s (last: {last!r})")


def prometheus_config(services: dict[str, Service]) -> dict:
    """deploy/prometheus/prometheus.yml, pointed at the suite's metrics ports."""
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    config["global"]["scrape_interval"] = "1s"
    config["global"]["evaluation_interval"] = "1s"
    config["rule_files"] = [str(ALERTS)]
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "kequn"]
    for static in job["static_configs"]:
        static["targets"] = [f"127.0.0.1:{services[static['labels']['service']].metrics_port}"]
    # A target nothing listens on: what a dead service looks like to Prometheus.
    job["static_configs"].append({"targets": [f"127.0.0.1:{free_port()}"], "labels": {"service": GHOST}})
    return config


@pytest.fixture(scope="session")
def prometheus(kequn_suite, tmp_path_factory):
    binary = shutil.which("prometheus")
    if binary is None:
        _missing("the prometheus server is not installed (Debian package `prometheus`)")
    root = tmp_path_factory.mktemp("prometheus")
    config_path = root / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(prometheus_config(kequn_suite.services)))
    port = free_port()
    log = (root / "prometheus.log").open("w")
    process = subprocess.Popen(
        [binary, f"--config.file={config_path}", f"--storage.tsdb.path={root / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--web.enable-lifecycle"],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        server = Prometheus(f"http://127.0.0.1:{port}")

        def ready():
            if process.poll() is not None:
                pytest.fail("prometheus exited:\n" + (root / "prometheus.log").read_text()[-3000:], pytrace=False)
            try:
                with urllib.request.urlopen(f"{server.url}/-/ready", timeout=2) as reply:
                    return reply.status == 200
            except OSError:
                return False
        server.wait_until("prometheus ready", ready, timeout=60)
        yield server
    finally:
        _stop(process)
        log.close()
