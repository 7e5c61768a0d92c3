"""The gRPC server every service runs: interceptors, health, reflection,
metrics endpoint, readiness loop and graceful shutdown."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Sequence
from concurrent import futures
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

from services.common.admission import Admission, AdmissionInterceptor
from services.common.auth import AuthInterceptor, Policy, TokenStore
from services.common.bounds import BoundsInterceptor
from services.common.config import ServiceConfig
from services.common.grpc_errors import ErrorInterceptor
from services.common.guards import GuardInterceptor
from services.common.logging import LoggingInterceptor
from services.common.metrics import MetricsInterceptor, start_metrics_http
from services.common.reflection import enable_server_reflection
from services.common.tls import server_credentials
from services.common.tracing import server_interceptors as tracing_interceptors

log = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
READINESS_INTERVAL_SECONDS = 2.0
# A health name that answers SERVING while the process is up, whatever the
# database says: Kubernetes' liveness probe asks it, so an outage of a
# dependency flips readiness (the "" and service names) without restarts.
LIVENESS = "liveness"

AddToServer = Callable[[Any, grpc.Server], None]


class ServiceServer:
    """A configured, not yet started server. `start()`, then `stop()` or
    `serve_forever()`. `.port` / `.metrics_port` are the bound ports."""

    def __init__(
        self,
        config: ServiceConfig,
        *,
        registry: CollectorRegistry,
        servicers: Sequence[tuple[AddToServer, object]],
        service_names: Sequence[str],
        token_store: TokenStore,
        policy: Policy,
        readiness: Callable[[], bool] | None = None,
        serve_metrics: bool = True,
        readiness_interval: float = READINESS_INTERVAL_SECONDS,
    ) -> None:
        self.config = config
        self.registry = registry
        self.service_names = list(service_names)
        self._readiness = readiness
        self._readiness_interval = readiness_interval
        self._serve_metrics = serve_metrics
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._ready: bool | None = None
        self._metrics_http = None
        self.metrics_port: int | None = None
        self.started = False

        # max_concurrent_rpcs calls run at once; max_queued_rpcs more wait in
        # the admission queue (each on its own idle thread) and are shed by
        # deadline. A few threads more than that serve the refusals of a full
        # queue; grpc's hard limit refuses without details only past them.
        self.admission = Admission(config.max_concurrent_rpcs, config.max_queued_rpcs)
        hard_limit = config.max_concurrent_rpcs + config.max_queued_rpcs + max(8, config.max_concurrent_rpcs // 4)
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=hard_limit, thread_name_prefix=f"{config.service}-rpc"),
            # Outermost first: logs and metrics see the final code of auth
            # refusals and mapped errors alike.
            interceptors=[
                *tracing_interceptors(),  # none unless OTEL_TRACES_EXPORTER is set
                LoggingInterceptor(config.service),
                MetricsInterceptor(registry),
                AdmissionInterceptor(self.admission, registry),
                AuthInterceptor(token_store, policy),
                GuardInterceptor(),  # expired deadlines, undecodable requests
                BoundsInterceptor(),  # every field within services/common/limits.py
                ErrorInterceptor(),
            ],
            maximum_concurrent_rpcs=hard_limit,
            # Workers of one service share the port (workers.py); the kernel
            # spreads connections over them.
            options=[("grpc.so_reuseport", 1)] if config.worker_index is not None else None,
        )
        for add_to_server, servicer in servicers:
            add_to_server(servicer, self.server)

        # Non-blocking health: Watch streams must not hold worker threads.
        self._health_pool = futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="health")
        self.health = health.HealthServicer(experimental_non_blocking=True,
                                            experimental_thread_pool=self._health_pool)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        enable_server_reflection((*self.service_names, health.SERVICE_NAME), self.server)  # v1 and v1alpha

        address = f"{config.host}:{config.grpc_port}"
        tls = config.tls
        # With mTLS configured the port speaks TLS only: no plaintext fallback.
        self.port = (self.server.add_secure_port(address, server_credentials(tls)) if tls
                     else self.server.add_insecure_port(address))
        if not self.port:
            raise RuntimeError(f"cannot bind {config.host}:{config.grpc_port}")

    # -- health ------------------------------------------------------------

    def set_serving(self, serving: bool) -> None:
        if self._stopping.is_set():
            return
        status = SERVING if serving else NOT_SERVING
        for name in ("", *self.service_names):
            self.health.set(name, status)

    def _check_ready(self) -> bool:
        if self._readiness is None:
            return True
        try:
            return bool(self._readiness())
        except Exception:
            log.exception("readiness check failed")
            return False

    def _readiness_loop(self) -> None:
        while not self._stopping.wait(self._readiness_interval):
            ready = self._check_ready()
            if ready != self._ready:
                log.warning("readiness changed: %s", "SERVING" if ready else "NOT_SERVING")
                self._ready = ready
                self.set_serving(ready)

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> "ServiceServer":
        self.started = True
        self._ready = self._check_ready()
        self.set_serving(self._ready)
        self.health.set(LIVENESS, SERVING)
        self.server.start()
        if self._serve_metrics:
            self._metrics_http = start_metrics_http(self.config.metrics_port, self.registry,
                                                    self.config.metrics_host or self.config.host)
            self.metrics_port = self._metrics_http.server_port
        threading.Thread(target=self._readiness_loop, name=f"{self.config.service}-readiness",
                         daemon=True).start()
        log.info("%s serving gRPC on %s:%d, metrics on %s", self.config.service, self.config.host,
                 self.port, self.metrics_port)
        return self

    def stop(self, grace: float | None = None) -> None:
        """Report NOT_SERVING, refuse new RPCs, let running ones finish
        within `grace` seconds (default: config.shutdown_grace_seconds)."""
        if self._stopping.is_set():
            self._stopped.wait()
            return
        grace = self.config.shutdown_grace_seconds if grace is None else grace
        self.health.enter_graceful_shutdown()  # every name NOT_SERVING, for good
        self._stopping.set()
        self.server.stop(grace).wait()
        self._health_pool.shutdown(wait=False)
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
            self._metrics_http.server_close()
        self._stopped.set()
        log.info("%s stopped", self.config.service)

    def wait(self, timeout: float | None = None) -> bool:
        return self._stopped.wait(timeout)


def build_server(config: ServiceConfig, **kwargs) -> ServiceServer:
    """See ServiceServer for the keyword arguments."""
    return ServiceServer(config, **kwargs)


def serve_forever(server: ServiceServer) -> int:
    """Run until SIGTERM/SIGINT, then drain gracefully. Returns the exit code (0)."""
    stop_requested = threading.Event()

    def on_signal(signum, _frame):
        log.info("received %s, shutting down", signal.Signals(signum).name)
        stop_requested.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    if not server.started:
        server.start()
    # Wake periodically: signal handlers run only in the main thread between
    # bytecodes, and Event.wait without timeout can delay them.
    while not stop_requested.wait(0.5) and not server._stopped.is_set():
        pass
    server.stop()
    return 0
