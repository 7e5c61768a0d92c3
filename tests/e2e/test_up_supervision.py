"""`kequn up` supervises: kill -9 one service and the others keep answering,
the killed one is restarted (with backoff) and answers again, and the output
names the death. Ctrl-C still stops everything."""
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kequn.rules.v1 import rules_pb2, rules_pb2_grpc
from services.cli.up import RESTART_MAX_SECONDS, death_reason, restart_delay
from services.common.client import dial
from services.common.testing import free_port

pytestmark = pytest.mark.e2e
SERVICES = ("tiering", "scoring")


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except FileNotFoundError:  # a thread that just ended
            continue
    return found


def _pid_of(up_pid: int, service: str) -> int:
    for pid in _children(up_pid):
        if f"services.{service}" in Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " "):
            return pid
    raise AssertionError(f"no {service} process under kequn up")


def _serving(port: int) -> bool:
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            return health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=1).status == health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError:
        return False


def _rulesets(port: int, token: str) -> list[str]:
    stub = rules_pb2_grpc.RuleStoreServiceStub(dial(f"127.0.0.1:{port}", token))
    return [r.name for r in stub.ListRulesets(rules_pb2.ListRulesetsRequest(), timeout=10).rulesets]


def _up_env(tmp_path: Path) -> tuple[dict, dict[str, int]]:
    """Environment for `kequn up` on free ports, its own data dir and dev tokens."""
    env = {**os.environ, "KEQUN_DATA_DIR": str(tmp_path / "data")}
    env.pop("KEQUN_TOKENS_FILE", None)
    ports = {}
    for service in ("tiering", "assignment", "scoring", "benefits"):
        ports[service] = free_port()
        env[f"KEQUN_{service.upper()}_GRPC_PORT"] = str(ports[service])
        env[f"KEQUN_{service.upper()}_METRICS_PORT"] = str(free_port())
        env[f"KEQUN_{service.upper()}_TARGET"] = f"127.0.0.1:{ports[service]}"
    return env, ports


class _Up:
    """`kequn up ARGS` as a child process whose output one thread reads (no race with
    communicate()); wait_for() returns the first new line containing a text."""

    def __init__(self, args: list[str], env: dict, cwd: Path):
        self.process = subprocess.Popen([sys.executable, "-m", "services.cli.main", "up", *args], env=env, cwd=cwd,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.pid = self.process.pid
        self._lines: queue.Queue = queue.Queue()
        self.seen: list[str] = []
        self._reader = threading.Thread(target=lambda: [self._lines.put(line) for line in self.process.stdout],
                                        daemon=True)
        self._reader.start()

    def wait_for(self, text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.seen.append(self._lines.get(timeout=0.5))
            except queue.Empty:
                continue
            if text in self.seen[-1]:
                return self.seen[-1]
        raise AssertionError(f"{text!r} not printed; output:\n{''.join(self.seen)}")

    def stop(self) -> str:
        """Ctrl-C, then everything it printed."""
        self.process.send_signal(signal.SIGINT)
        self.process.wait(timeout=60)
        self._reader.join(timeout=10)
        while not self._lines.empty():
            self.seen.append(self._lines.get())
        return "".join(self.seen)


def test_backoff_is_exponential_and_capped():
    assert [restart_delay(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, RESTART_MAX_SECONDS, RESTART_MAX_SECONDS]
    assert death_reason(-9) == "killed by signal SIGKILL" and death_reason(3) == "exited with code 3"


def test_a_killed_service_is_restarted_and_the_others_keep_answering(tmp_path):
    env, ports = _up_env(tmp_path)
    up = _Up(["--no-demo", *SERVICES], env, tmp_path)
    try:
        up.wait_for("Press Ctrl-C to stop.", 180)
        import json
        token = json.loads((tmp_path / "data" / "dev-tokens.json").read_text())["rule_admin"]
        assert _rulesets(ports["scoring"], token) and _rulesets(ports["tiering"], token)

        victim = _pid_of(up.pid, "scoring")
        os.kill(victim, signal.SIGKILL)
        death = up.wait_for(f"scoring (pid {victim}) killed by signal SIGKILL", 30)
        assert "restarting it in" in death
        # While scoring is down, tiering is untouched: same process, answering.
        tiering_pid = _pid_of(up.pid, "tiering")
        assert _rulesets(ports["tiering"], token)

        up.wait_for("scoring restarted", 30)
        up.wait_for("scoring is serving again", 120)
        assert _pid_of(up.pid, "scoring") != victim
        assert _rulesets(ports["scoring"], token)
        assert _pid_of(up.pid, "tiering") == tiering_pid and _serving(ports["tiering"])
        journal = (tmp_path / "data" / "logs" / "up.log").read_text()
        assert "killed by signal SIGKILL" in journal and "scoring restarted" in journal
    finally:
        output = up.stop()
    if os.environ.get("KEQUN_SHOW_UP_OUTPUT"):
        print(output)
    assert up.process.returncode == 0, output
    assert "stopped." in output
    for service in SERVICES:  # nothing left serving
        assert not _serving(ports[service])


def _http_ok(url: str) -> bool:
    import urllib.request
    try:
        with urllib.request.urlopen(url, timeout=1) as reply:
            return reply.status == 200
    except OSError:
        return False


def test_the_console_starts_last_on_its_healthz_and_is_restarted_when_killed(tmp_path):
    env, _ = _up_env(tmp_path)
    console_port = free_port()
    env["KEQUN_CONSOLE_PORT"] = str(console_port)
    healthz = f"http://127.0.0.1:{console_port}/healthz"
    up = _Up(["--no-demo", "tiering", "console"], env, tmp_path)
    try:
        up.wait_for("Press Ctrl-C to stop.", 180)
        output = "".join(up.seen)
        # Started after the service it calls, announced with its URL once /healthz answers.
        assert output.index("  tiering ") < output.index(f"  console     http://127.0.0.1:{console_port}/")
        assert f"Console: http://127.0.0.1:{console_port}/" in output
        assert _http_ok(healthz)

        victim = _pid_of(up.pid, "console")
        os.kill(victim, signal.SIGKILL)
        up.wait_for(f"console (pid {victim}) killed by signal SIGKILL", 30)
        up.wait_for("console restarted", 30)
        up.wait_for("console is serving again", 120)
        assert _pid_of(up.pid, "console") != victim and _http_ok(healthz)
    finally:
        up.stop()
    assert up.process.returncode == 0
    assert not _http_ok(healthz)
