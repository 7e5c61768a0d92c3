"""A request whose deadline has passed stops its work: refused before the
handler runs, and a long loop that calls check_deadline() ends once the
caller is gone. Real gRPC server built by services.common.server."""
from __future__ import annotations

import threading
import time

import grpc
import pytest
from prometheus_client import CollectorRegistry

from services.common.auth import Policy, TokenStore, bearer_metadata
from services.common.config import ServiceConfig
from services.common.guards import GuardInterceptor, call_active, check_deadline
from services.common.server import build_server
from services.common.testing import dev_tokens

METHOD = "/kequn.test.v1.Slow/Loop"


class _Loop:
    """A handler that works in small steps until its caller is gone."""

    def __init__(self) -> None:
        self.steps = 0
        self.started = threading.Event()
        self.ended = threading.Event()

    def __call__(self, request: bytes, context) -> bytes:
        self.started.set()
        try:
            for _ in range(100_000):  # ~1000 s if nobody stopped it
                check_deadline()
                self.steps += 1
                time.sleep(0.01)
            return b""
        finally:
            self.ended.set()


@pytest.fixture
def server(tmp_path):
    tokens = dev_tokens(tmp_path)
    loop = _Loop()
    handler = grpc.method_handlers_generic_handler("kequn.test.v1.Slow", {
        "Loop": grpc.unary_unary_rpc_method_handler(loop)})
    config = ServiceConfig.from_env("tiering", {"KEQUN_GRPC_PORT": "0", "KEQUN_METRICS_PORT": "0",
                                                "KEQUN_DATA_DIR": str(tmp_path)})
    srv = build_server(config, registry=CollectorRegistry(),
                       servicers=[(lambda _s, server: server.add_generic_rpc_handlers((handler,)), None)],
                       service_names=["kequn.test.v1.Slow"], token_store=TokenStore(tokens.path),
                       policy=Policy({"/kequn.test.v1.Slow/*": frozenset({"operations"})}),
                       serve_metrics=False).start()
    channel = grpc.insecure_channel(f"127.0.0.1:{srv.port}")
    yield channel.unary_unary(METHOD), loop, bearer_metadata(tokens["operations"])
    channel.close()
    srv.stop(0)


def test_long_loop_stops_when_the_deadline_passes(server):
    call, loop, auth = server
    with pytest.raises(grpc.RpcError) as err:
        call(b"", metadata=auth, timeout=0.3)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert loop.ended.wait(5), "the handler kept working after its caller's deadline"
    steps = loop.steps
    time.sleep(0.3)
    assert loop.steps == steps


def test_long_loop_stops_when_the_caller_cancels(server):
    call, loop, auth = server
    future = call.future(b"", metadata=auth, timeout=60)
    assert loop.started.wait(5)
    future.cancel()
    assert loop.ended.wait(5), "the handler kept working after its caller cancelled"


class _FakeContext:
    def __init__(self, remaining):
        self.remaining, self.aborted = remaining, None

    def time_remaining(self):
        return self.remaining

    def is_active(self):
        return True

    def abort(self, code, details):
        self.aborted = code
        raise RuntimeError("aborted")

    def abort_with_status(self, status):
        self.aborted = status.code
        raise RuntimeError("aborted")


def _guarded(behavior):
    handler = grpc.unary_unary_rpc_method_handler(behavior)
    return GuardInterceptor().intercept_service(lambda _d: handler, None).unary_unary


def test_handler_never_runs_when_the_deadline_passed_before_it_started():
    ran = []
    guarded = _guarded(lambda req, ctx: ran.append(req))
    ctx = _FakeContext(remaining=-0.01)
    with pytest.raises(RuntimeError):
        guarded(b"x", ctx)
    assert ctx.aborted == grpc.StatusCode.DEADLINE_EXCEEDED and ran == []
    ctx = _FakeContext(remaining=None)  # no deadline at all: runs
    guarded(b"y", ctx)
    assert ran == [b"y"] and ctx.aborted is None


def test_check_deadline_outside_an_rpc_is_a_no_op():
    assert call_active()
    check_deadline()
