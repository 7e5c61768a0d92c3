"""The suite as real processes on free ports, for end-to-end tests."""
from __future__ import annotations

import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kequn.assignment.v1 import assignment_pb2 as apb
from kequn.rules.v1 import rules_pb2, rules_pb2_grpc
from services.common.client import dial
from services.common.testing import dev_tokens, free_port, start_service_process

ORDER = ("tiering", "assignment", "scoring", "benefits")


class Suite:
    def __init__(self, workdir: Path, services=ORDER, database_urls: dict[str, str] | None = None,
                 extra_env: dict[str, str] | None = None):
        self.workdir = Path(workdir)
        self.services = [s for s in ORDER if s in services]
        self.tokens = dev_tokens(self.workdir)
        self.ports = {s: (free_port(), free_port()) for s in ORDER}
        self.env = {
            "KEQUN_DATA_DIR": str(self.workdir),
            "KEQUN_TOKENS_FILE": str(self.tokens.path),
            "KEQUN_SERVICE_TOKEN": self.tokens["service"],
            "KEQUN_RULES_POLL_SECONDS": "0.5",
            "KEQUN_SHUTDOWN_GRACE_SECONDS": "3",
            **(extra_env or {}),
        }
        for service, (grpc_port, metrics_port) in self.ports.items():
            prefix = f"KEQUN_{service.upper()}_"
            self.env[prefix + "GRPC_PORT"] = str(grpc_port)
            self.env[prefix + "METRICS_PORT"] = str(metrics_port)
            self.env[prefix + "TARGET"] = f"127.0.0.1:{grpc_port}"
            url = (database_urls or {}).get(service) or f"sqlite:///{self.workdir / (service + '.db')}"
            self.env[prefix + "DATABASE_URL"] = url
        self.processes: dict[str, subprocess.Popen] = {}
        self._channels: list[grpc.Channel] = []

    def target(self, service: str) -> str:
        return f"127.0.0.1:{self.ports[service][0]}"

    def start(self, service: str | None = None, timeout: float = 90) -> "Suite":
        for name in [service] if service else self.services:
            log = open(self.workdir / f"{name}.log", "ab")
            self.processes[name] = start_service_process(f"services.{name}", self.env, stdout=log, stderr=log)
            self.wait_serving(name, timeout)
        return self

    def wait_serving(self, service: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while self.health(service) != health_pb2.HealthCheckResponse.SERVING:
            process = self.processes.get(service)
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"{service} exited with {process.returncode}:\n{self.log(service)[-4000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{service} not SERVING after {timeout}s:\n{self.log(service)[-4000:]}")
            time.sleep(0.2)

    def health(self, service: str, name: str = "") -> int | None:
        try:
            with grpc.insecure_channel(self.target(service)) as channel:
                return health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=name), timeout=1).status
        except grpc.RpcError:
            return None

    def log(self, service: str) -> str:
        path = self.workdir / f"{service}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def channel(self, service: str, role: str | None = "admin") -> grpc.Channel:
        channel = dial(self.target(service), self.tokens[role] if role else None)
        self._channels.append(channel)
        return channel

    def metrics(self, service: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ports[service][1]}/metrics", timeout=5) as response:
            return response.read().decode()

    def stop(self, service: str | None = None, kill: bool = False) -> None:
        for name in [service] if service else list(self.processes):
            process = self.processes.pop(name, None)
            if process is None or process.poll() is not None:
                continue
            process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def close(self) -> None:
        for channel in self._channels:
            channel.close()
        self.stop()



def eventually(check, timeout: float = 120.0, interval: float = 0.3, what: str = "condition"):
    """Poll `check` until it returns something truthy (followers catch up
    asynchronously); fail the test if it never does within `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met in time")
        time.sleep(interval)


def seed_one_branch(ops) -> None:
    """Branch BR-1 > sub-branch SUB-11 > outlet OUT-111 with two wealth managers, a
    lobby manager and the development approver (principal name = staff id)."""
    for branch_id, parent, level in (("BR-1", "", apb.BRANCH_LEVEL_BRANCH),
                                     ("SUB-11", "BR-1", apb.BRANCH_LEVEL_SUB_BRANCH),
                                     ("OUT-111", "SUB-11", apb.BRANCH_LEVEL_OUTLET)):
        ops.UpsertBranch(apb.Branch(branch_id=branch_id, parent_branch_id=parent, level=level))
    for staff_id, branch_id, role in (("WM-1", "SUB-11", "WEALTH_MANAGER"), ("WM-2", "SUB-11", "WEALTH_MANAGER"),
                                      ("LM-1", "OUT-111", "LOBBY_MANAGER"),
                                      ("branch_approver", "BR-1", "BRANCH_APPROVER")):
        ops.UpsertStaff(apb.Staff(staff_id=staff_id, branch_id=branch_id, role=role, active=True))


def released(suite: "Suite", service: str, name: str, version: int, timeout: float = 30.0):
    """Four eyes over gRPC: the development rule owner 1 asks for the release of
    a version on `service`'s rule store, owner 2 approves it (active at once)."""
    one, two = (rules_pb2_grpc.RuleStoreServiceStub(suite.channel(service, owner))
                for owner in ("rule_owner_1", "rule_owner_2"))
    asked = one.RequestRelease(rules_pb2.RequestReleaseRequest(name=name, version=version, comment="e2e"),
                               timeout=timeout)
    return two.ApproveRelease(rules_pb2.DecideReleaseRequest(release_id=asked.release_id, comment="ok"),
                              timeout=timeout)

def metric_value(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in a Prometheus text exposition, or None."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            return float(value)
    return None


__all__ = ["Suite", "metric_value", "ORDER"]


@contextmanager
def suite_on_postgres(workdir: Path, pg_database, services=ORDER,
                      extra_env: dict[str, str] | None = None) -> Iterator[Suite]:
    """The services as real processes, each on a fresh PostgreSQL schema of
    the test database, dropped again afterwards."""
    from tests.conftest import _drop_schema, _fresh_schema_url

    schemas = {name: _fresh_schema_url(pg_database) for name in services}
    suite = Suite(workdir, services=services, database_urls={name: url for name, (url, _) in schemas.items()},
                  extra_env=extra_env)
    try:
        suite.start()
        yield suite
    finally:
        suite.close()
        for _, schema in schemas.values():
            _drop_schema(pg_database, schema)
