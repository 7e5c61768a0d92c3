"""`kequn up`: the whole suite on this machine, one process per service,
supervised: when one dies, the others keep running and it is restarted
with exponential backoff; why it died (exit code or signal, its last log
lines) is printed and written to ``logs/up.log``."""
from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.config import ServiceConfig
from services.console.config import ConsoleConfig

from . import registry
from .tokens import data_dir, dev_tokens_path, make_dev_tokens

START_TIMEOUT_SECONDS = 120
RESTART_BASE_SECONDS = 1.0     # first restart after 1 s, then 2, 4, 8...
RESTART_MAX_SECONDS = 30.0     # ... capped: a crash loop costs little
STABLE_SECONDS = 60.0          # up this long before dying: the backoff starts again from the base
LAST_LOG_LINES = 5


def _healthy(target: str) -> bool:
    try:
        with grpc.insecure_channel(target) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
            return reply.status == health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError:
        return False


def _http_healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as reply:
            return reply.status == 200
    except OSError:
        return False


def _serving(target: str) -> bool:
    """A gRPC service answers its health check; the console (an http:// target) its /healthz."""
    return _http_healthy(target) if target.startswith(("http://", "https://")) else _healthy(target)


def _wait_healthy(name: str, process: subprocess.Popen, target: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while not _serving(target):
        if process.poll() is not None:
            raise SystemExit(f"{name} exited with code {process.returncode} during start-up "
                             f"(see {data_dir() / 'logs' / (name + '.log')})")
        if time.monotonic() > deadline:
            raise SystemExit(f"{name} did not become healthy within {START_TIMEOUT_SECONDS}s")
        time.sleep(0.3)


def _stop_all(processes: dict[str, subprocess.Popen]) -> None:
    for process in processes.values():
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 20
    for name, process in processes.items():
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"{name} did not stop in time; killing it", file=sys.stderr)
            process.kill()


def death_reason(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"


def restart_delay(failures: int) -> float:
    """Seconds before the ``failures``-th restart in a row (1-based)."""
    return min(RESTART_MAX_SECONDS, RESTART_BASE_SECONDS * 2 ** max(0, failures - 1))


def _last_lines(path: Path | None, n: int = LAST_LOG_LINES) -> list[str]:
    if path is None or not path.exists():
        return []
    with open(path, "rb") as f:
        f.seek(max(0, f.seek(0, os.SEEK_END) - 64_000))
        lines = deque(f.read().decode("utf-8", "replace").splitlines(), maxlen=n)
    return [line[:400] for line in lines]


@dataclass
class _Child:
    name: str
    target: str
    log_path: Path | None
    process: subprocess.Popen
    started: float = field(default_factory=time.monotonic)
    failures: int = 0               # deaths in a row, each within STABLE_SECONDS of its start
    restart_at: float | None = None  # set while dead, waiting for its restart
    announced: bool = True          # "serving again" printed for this run


class Supervisor:
    """Watches the children from the main loop: no threads, no signals."""

    def __init__(self, env: dict[str, str], logs: Path, logs_here: bool):
        self.env = env
        self.logs = logs
        self.logs_here = logs_here
        self.children: dict[str, _Child] = {}
        self.journal = open(logs / "up.log", "a", encoding="utf-8")

    def say(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)
        self.journal.write(f"{dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')} {message}\n")
        self.journal.flush()

    def spawn(self, name: str) -> subprocess.Popen:
        # One JSON line per RPC is for log shippers, not for this terminal.
        log = None if self.logs_here else open(self.logs / f"{name}.log", "ab")
        try:
            return subprocess.Popen([sys.executable, "-m", f"services.{name}"], env=self.env,
                                    stdout=log, stderr=log, process_group=0)
        finally:
            if log is not None:
                log.close()  # the child has its own copy

    def start(self, name: str, target: str) -> None:
        process = self.spawn(name)
        self.children[name] = _Child(name, target, None if self.logs_here else self.logs / f"{name}.log", process)
        _wait_healthy(name, process, target)

    def processes(self) -> dict[str, subprocess.Popen]:
        return {name: child.process for name, child in self.children.items()}

    def tick(self) -> None:
        now = time.monotonic()
        for child in self.children.values():
            if child.restart_at is None:
                code = child.process.poll()
                if code is None:
                    if not child.announced and _serving(child.target):
                        child.announced = True
                        self.say(f"{child.name} is serving again (pid {child.process.pid})")
                    continue
                uptime = now - child.started
                child.failures = 1 if uptime >= STABLE_SECONDS else child.failures + 1
                delay = restart_delay(child.failures)
                child.restart_at = now + delay
                self.say(f"{child.name} (pid {child.process.pid}) {death_reason(code)} after {uptime:.0f}s; "
                         f"the other services keep running; restarting it in {delay:.0f}s "
                         f"(restart {child.failures} in a row)")
                for line in _last_lines(child.log_path):
                    self.say(f"  {child.name} log: {line}")
            elif now >= child.restart_at:
                child.process = self.spawn(child.name)
                child.started, child.restart_at, child.announced = now, None, False
                self.say(f"{child.name} restarted (pid {child.process.pid})")

    def close(self) -> None:
        self.journal.close()


def cmd_up(args) -> int:
    os.environ.setdefault("KEQUN_DATA_DIR", str(data_dir()))
    tokens = make_dev_tokens()
    env = {**os.environ, "KEQUN_SERVICE_TOKEN": tokens["service"], "KEQUN_DEMO": "0" if args.no_demo else "1"}
    names = args.services or [*registry.SERVICES, "console"]
    logs = data_dir() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    supervisor = Supervisor(env, logs, args.logs_here)
    # Ctrl-C goes to the whole process group; the children get their own
    # (process_group=0, set without running Python in the forked child) and we
    # stop them ourselves, in order.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        for name in names:
            if name == "console":  # the web console (services/console), after the services it calls
                console = ConsoleConfig.from_env(env)
                supervisor.start(name, console.url + "healthz")
                print(f"  {name:<11} {console.url}   (sign in with a token below)", flush=True)
                continue
            config = ServiceConfig.from_env(name)
            supervisor.start(name, f"{config.host}:{config.grpc_port}")
            print(f"  {name:<11} gRPC {config.host}:{config.grpc_port}   metrics "
                  f"http://{config.host}:{config.metrics_port}/metrics   db {config.database_url}", flush=True)
        print("\nkequn is up. Development tokens (send as 'authorization: Bearer <token>'), "
              f"also in {dev_tokens_path()}:")
        for role, token in tokens.items():
            print(f"  {role:<16} {token}")
        print("\nRule changes take two rule owners (four eyes): `kequn rules release FILE` asks as "
              "rule_owner_1,\n`kequn rules approve RELEASE_ID --as rule_owner_2` releases it.")
        if not args.logs_here:
            print(f"\nLogs (one JSON line per RPC): {logs}/<service>.log; supervision: {logs}/up.log")
        if "console" in supervisor.children:
            print(f"\nConsole: {ConsoleConfig.from_env(env).url}  (sign in with one of the tokens above)")
        print("\nA service that dies is restarted; the others keep running. Press Ctrl-C to stop.", flush=True)
        stop = {"now": False}

        def request_stop(*_):
            stop["now"] = True
        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)
        while not stop["now"]:
            supervisor.tick()
            time.sleep(0.5)
        return 0
    finally:
        print("\nstopping...", flush=True)
        _stop_all(supervisor.processes())
        supervisor.close()
        print("stopped.")


def register(subparsers) -> None:
    p = subparsers.add_parser("up", help="run all four services and the console locally with demo data")
    p.add_argument("services", nargs="*", help="only these (default: all four and the console)")
    p.add_argument("--no-demo", action="store_true", help="do not load demo data")
    p.add_argument("--logs-here", action="store_true", help="print the services' logs here instead of to files")
    p.set_defaults(func=cmd_up)
