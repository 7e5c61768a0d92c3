"""`KEQUN_<SERVICE>_WORKERS=N`: N server processes sharing one gRPC port.

One Python process runs one core at a time (the GIL; durable-rules and the
gRPC server hold it), so a pod with N cores runs N workers: gRPC's pre-fork
pattern with SO_REUSEPORT. The supervisor (this module) starts N copies of
the service as plain child processes (`python -m services.<name>`, fresh
interpreters: no gRPC state crosses a fork), each with KEQUN_WORKER_INDEX
set. Each worker binds the same gRPC port with grpc.so_reuseport, so the
kernel spreads incoming *connections* over them; each has its own engine,
pool, rule runtime and background threads, like a replica.

Metrics: one endpoint, on the service's metrics port, served by the
supervisor. Each worker serves its own registry on a private port on
127.0.0.1; a scrape of the supervisor reads every worker and exposes all
their samples with a `worker` label added (no summing here: counters and
histograms sum in PromQL, `sum without (worker, pid) (...)`, and a gauge
stays meaningful per worker). `kequn_worker_info{worker,pid}` names each.

Lifecycle: SIGTERM/SIGINT to the supervisor is passed to every worker, which
drains gracefully; if a worker dies, the supervisor stops the others and
exits non-zero, so the orchestrator restarts the pod whole. Workers die
with the supervisor (PR_SET_PDEATHSIG) even if it is killed with -9.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from services.common.config import ServiceConfig
from services.common.metrics import start_metrics_http

log = logging.getLogger(__name__)

WORKER_INDEX_ENV = "KEQUN_WORKER_INDEX"
SCRAPE_TIMEOUT = 3.0
PR_SET_PDEATHSIG = 1


def worker_index() -> int | None:
    """This process's worker number when started by the supervisor, else None."""
    raw = os.environ.get(WORKER_INDEX_ENV)
    return int(raw) if raw not in (None, "") else None


def _die_with_parent() -> None:  # runs in the child between fork and exec: no Python objects touched
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class WorkersCollector:
    """Every worker's samples, with a `worker` label, as one exposition."""

    def __init__(self, metrics_ports: Sequence[int]) -> None:
        self.metrics_ports = list(metrics_ports)

    def collect(self):
        families: dict[str, Metric] = {}
        for index, port in enumerate(self.metrics_ports):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=SCRAPE_TIMEOUT) as r:
                    text = r.read().decode()
            except OSError as exc:  # a worker starting or gone: its samples are absent, the rest still served
                log.debug("worker %d metrics unavailable: %s", index, exc)
                continue
            for family in text_string_to_metric_families(text):
                merged = families.get(family.name)
                if merged is None:
                    merged = families[family.name] = Metric(family.name, family.documentation, family.type,
                                                            family.unit)
                for s in family.samples:
                    merged.add_sample(s.name, {**s.labels, "worker": str(index)}, s.value, s.timestamp, s.exemplar)
        yield from families.values()


def supervise(config: ServiceConfig, argv: Sequence[str] | None = None,
              on_ready: Callable[[], None] | None = None) -> int:
    """Run config.workers copies of the service; returns the exit code."""
    if config.grpc_port == 0:
        raise SystemExit("KEQUN_%s_WORKERS > 1 needs a fixed gRPC port" % config.service.upper())
    argv = list(argv or [sys.executable, "-m", f"services.{config.service}"])
    prefix = f"KEQUN_{config.service.upper()}_"
    ports = [_free_port() for _ in range(config.workers)]
    children: list[subprocess.Popen] = []
    for index, port in enumerate(ports):
        env = {**os.environ, WORKER_INDEX_ENV: str(index), prefix + "METRICS_PORT": str(port),
               prefix + "METRICS_HOST": "127.0.0.1"}
        children.append(subprocess.Popen(argv, env=env, preexec_fn=_die_with_parent))
    registry = CollectorRegistry()
    registry.register(WorkersCollector(ports))
    http = start_metrics_http(config.metrics_port, registry, config.host)
    log.info("%s: %d workers %s on gRPC port %d, metrics on %d", config.service, len(children),
             [c.pid for c in children], config.grpc_port, http.server_port)
    if on_ready is not None:
        on_ready()

    stop = threading.Event()

    def on_signal(signum, _frame):
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    code = 0
    while not stop.wait(0.5):
        dead = [c for c in children if c.poll() is not None]
        if dead:
            log.error("%s worker pid %d exited with %s: stopping the others", config.service, dead[0].pid,
                      dead[0].returncode)
            code = 1
            break
    for c in children:
        if c.poll() is None:
            c.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + config.shutdown_grace_seconds + 10
    for c in children:
        try:
            c.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            c.kill()
            c.wait()
    http.shutdown()
    http.server_close()
    return code
