"""serve_forever in a real process: SIGTERM -> NOT_SERVING, drain, exit 0."""

import signal
import textwrap

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.testing import free_port, start_service_process, wait_for_port

pytestmark = pytest.mark.e2e

SERVER_MODULE = textwrap.dedent("""
    import sys
    from prometheus_client import CollectorRegistry
    from services.common.auth import Policy, TokenStore
    from services.common.config import ServiceConfig
    from services.common.logging import configure_logging
    from services.common.server import build_server, serve_forever

    cfg = ServiceConfig.from_env("benefits")
    configure_logging(cfg.log_level, cfg.service)
    server = build_server(cfg, registry=CollectorRegistry(), servicers=[], service_names=["x.v1.X"],
                          token_store=TokenStore(cfg.tokens_file), policy=Policy({}))
    sys.exit(serve_forever(server))
""")


def test_sigterm_drains_and_exits_zero(tmp_path):
    (tmp_path / "kequn_probe_server.py").write_text(SERVER_MODULE)
    port, metrics_port = free_port(), free_port()
    proc = start_service_process("kequn_probe_server", {
        "PYTHONPATH": str(tmp_path),
        "KEQUN_DATA_DIR": str(tmp_path),
        "KEQUN_BENEFITS_GRPC_PORT": str(port),
        "KEQUN_BENEFITS_METRICS_PORT": str(metrics_port),
        "KEQUN_SHUTDOWN_GRACE_SECONDS": "1",
    })
    try:
        wait_for_port("127.0.0.1", port, timeout=20)
        wait_for_port("127.0.0.1", metrics_port, timeout=5)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            watch = stub.Watch(health_pb2.HealthCheckRequest(service="x.v1.X"), timeout=20)
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
            proc.send_signal(signal.SIGTERM)
            assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
