"""`kequn up`: the whole suite on this machine, one process per service."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.config import ServiceConfig
from services.console.config import ConsoleConfig

from . import registry
from .tokens import data_dir, dev_tokens_path, make_dev_tokens

START_TIMEOUT_SECONDS = 120


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


def _wait_healthy(name: str, process: subprocess.Popen, target: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    check = _http_healthy if target.startswith("http") else _healthy
    while not check(target):
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


def cmd_up(args) -> int:
    os.environ.setdefault("KEQUN_DATA_DIR", str(data_dir()))
    tokens = make_dev_tokens()
    env = {**os.environ, "KEQUN_SERVICE_TOKEN": tokens["service"], "KEQUN_DEMO": "0" if args.no_demo else "1"}
    names = args.services or [*registry.SERVICES, "console"]
    processes: dict[str, subprocess.Popen] = {}
    logs = data_dir() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    # Ctrl-C goes to the whole process group; the children get their own
    # (process_group=0, set without running Python in the forked child) and we
    # stop them ourselves, in order.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        for name in names:
            # One JSON line per RPC is for log shippers, not for this terminal.
            log = None if args.logs_here else open(logs / f"{name}.log", "ab")
            if name == "console":  # the web console (services/console), after the services it calls
                console = ConsoleConfig.from_env(env)
                processes[name] = subprocess.Popen([sys.executable, "-m", "services.console"], env=env,
                                                   stdout=log, stderr=log, process_group=0)
                _wait_healthy(name, processes[name], console.url + "healthz")
                print(f"  {name:<11} {console.url}   (sign in with a token below)", flush=True)
                continue
            config = ServiceConfig.from_env(name)
            processes[name] = subprocess.Popen([sys.executable, "-m", f"services.{name}"], env=env,
                                               stdout=log, stderr=log, process_group=0)
            _wait_healthy(name, processes[name], f"{config.host}:{config.grpc_port}")
            print(f"  {name:<11} gRPC {config.host}:{config.grpc_port}   metrics "
                  f"http://{config.host}:{config.metrics_port}/metrics   db {config.database_url}", flush=True)
        print("\nkequn is up. Development tokens (send as 'authorization: Bearer <token>'), "
              f"also in {dev_tokens_path()}:")
        for role, token in tokens.items():
            print(f"  {role:<16} {token}")
        if not args.logs_here:
            print(f"\nLogs (one JSON line per RPC): {logs}/<service>.log")
        if "console" in processes:
            print(f"\nConsole: {ConsoleConfig.from_env(env).url}  (sign in with one of the tokens above)")
        print("\nPress Ctrl-C to stop.", flush=True)
        stop = {"now": False}

        def request_stop(*_):
            stop["now"] = True
        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)
        while not stop["now"]:
            for name, process in processes.items():
                if process.poll() is not None:
                    print(f"{name} exited with code {process.returncode}; stopping the suite", file=sys.stderr)
                    stop["now"] = True
            time.sleep(0.5)
        return 0
    finally:
        print("\nstopping...", flush=True)
        _stop_all(processes)
        print("stopped.")


def register(subparsers) -> None:
    p = subparsers.add_parser("up", help="run all four services and the console locally with demo data")
    p.add_argument("services", nargs="*", help="only these (default: all four and the console)")
    p.add_argument("--no-demo", action="store_true", help="do not load demo data")
    p.add_argument("--logs-here", action="store_true", help="print the services' logs here instead of to files")
    p.set_defaults(func=cmd_up)
