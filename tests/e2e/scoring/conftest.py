"""Real server processes on real ports, on PostgreSQL (SQLite if it is absent)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.auth import generate_dev_tokens
from services.common.client import dial

ROOT = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, name: str, db_url: str, data_dir: Path, tokens: dict, tokens_file: Path, extra_env=None):
        self.name, self.port, self.metrics_port = name, free_port(), free_port()
        self.tokens = tokens
        env = dict(os.environ)
        env.update({
            f"KEQUN_{name.upper()}_DATABASE_URL": db_url,
            "KEQUN_DATA_DIR": str(data_dir),
            "KEQUN_TOKENS_FILE": str(tokens_file),
            f"KEQUN_{name.upper()}_GRPC_PORT": str(self.port),
            f"KEQUN_{name.upper()}_METRICS_PORT": str(self.metrics_port),
            "KEQUN_SERVICE_TOKEN": tokens["service"],
            "KEQUN_RULES_POLL_SECONDS": "0.5",
            "PYTHONPATH": os.pathsep.join([str(ROOT / "gen" / "python"), str(ROOT)]),
        })
        env.update(extra_env or {})
        self.log = open(data_dir / f"{name}.log", "w")
        self.proc = subprocess.Popen([sys.executable, "-m", f"services.{name}"], cwd=ROOT, env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        self.target = f"127.0.0.1:{self.port}"
        self._wait_serving()

    def _wait_serving(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        channel = grpc.insecure_channel(self.target)
        try:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited: see {self.log.name}")
                try:
                    answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""),
                                                                       timeout=1)
                    if answer.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.2)
            raise RuntimeError(f"{self.name} not serving after {timeout}s")
        finally:
            channel.close()

    def channel(self, role: str) -> grpc.Channel:
        return dial(self.target, self.tokens[role])

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


@pytest.fixture
def e2e_db(request, tmp_path):
    try:
        return request.getfixturevalue("pg_url")
    except pytest.skip.Exception:
        return f"sqlite:///{tmp_path / 'scoring.db'}"


@pytest.fixture
def tokens(tmp_path):
    path = tmp_path / "tokens.yaml"
    return generate_dev_tokens(path), path


@pytest.fixture
def start_server():
    """start_server(name, db_url, data_dir, tokens, tokens_file, extra_env) -> a running Server."""
    started = []

    def start(*args, **kwargs) -> Server:
        server = Server(*args, **kwargs)
        started.append(server)
        return server
    yield start
    for server in reversed(started):
        server.stop()


@pytest.fixture
def scoring_server(e2e_db, tmp_path, tokens):
    server = Server("scoring", e2e_db, tmp_path, tokens[0], tokens[1])
    yield server
    server.stop()
