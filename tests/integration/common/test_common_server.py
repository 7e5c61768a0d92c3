"""A real gRPC server built with build_server, on a free port, called over a
real channel: health, reflection, auth, error mapping, metrics, logs,
concurrency limit, readiness and graceful stop."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import urllib.request

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from services.common import errors
from services.common.auth import Policy, TokenStore, bearer_metadata, current_principal
from services.common.client import dial
from services.common.config import ServiceConfig
from services.common.logging import current_request_id
from services.common.server import build_server
from services.common.testing import dev_tokens

SERVICE = "kequn.test.v1.EchoService"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class EchoService:
    """A generic-handler service over raw bytes (no generated protos needed)."""

    def __init__(self):
        self.release = threading.Event()
        self.entered = threading.Semaphore(0)

    def echo(self, request, context):
        return request

    def whoami(self, request, context):
        return f"{current_principal().name}|{current_request_id()}".encode()

    def fail(self, request, context):
        kind = request.decode()
        if kind == "invalid":
            raise errors.InvalidArgument(violations=[("customer.customer_id", "required")])
        if kind == "precondition":
            raise errors.FailedPrecondition("book locked")
        if kind == "abort":
            context.abort(grpc.StatusCode.NOT_FOUND, "no such customer")
        raise RuntimeError("secret internals")

    def count(self, request, context):
        for i in range(int(request)):
            yield str(i).encode()
        raise errors.ResourceExhausted("out of stock")

    def collect(self, request_iterator, context):
        return b",".join(request_iterator)

    def slow(self, request, context):
        self.entered.release()
        self.release.wait(10)
        return b"done"

    def handler(self):
        return grpc.method_handlers_generic_handler(SERVICE, {
            "Echo": grpc.unary_unary_rpc_method_handler(self.echo),
            "Whoami": grpc.unary_unary_rpc_method_handler(self.whoami),
            "Fail": grpc.unary_unary_rpc_method_handler(self.fail),
            "Count": grpc.unary_stream_rpc_method_handler(self.count),
            "Collect": grpc.stream_unary_rpc_method_handler(self.collect),
            "Slow": grpc.unary_unary_rpc_method_handler(self.slow),
            "Unlisted": grpc.unary_unary_rpc_method_handler(self.echo),
        })


POLICY = Policy({
    f"/{SERVICE}/*": frozenset({"operations"}),
    f"/{SERVICE}/Echo": frozenset({"operations", "hr"}),
    f"/{SERVICE}/Unlisted": frozenset(),
})


def _add(servicer, server):
    server.add_generic_rpc_handlers((servicer.handler(),))


def make_server(tmp_path, *, readiness=None, **config_overrides):
    tokens = dev_tokens(tmp_path)
    cfg = dataclasses.replace(
        ServiceConfig.from_env("tiering", {"KEQUN_DATA_DIR": str(tmp_path)}),
        grpc_port=0, metrics_port=0, shutdown_grace_seconds=1, **config_overrides)
    echo = EchoService()
    srv = build_server(
        cfg, registry=CollectorRegistry(), servicers=[(_add, echo)], service_names=[SERVICE],
        token_store=TokenStore(tokens.path), policy=POLICY, readiness=readiness, readiness_interval=0.05)
    srv.start()
    return srv, echo, tokens


@pytest.fixture
def running(tmp_path):
    srv, echo, tokens = make_server(tmp_path)
    channel = grpc.insecure_channel(f"127.0.0.1:{srv.port}")
    yield srv, echo, tokens, channel
    echo.release.set()
    channel.close()
    srv.stop(0)


def call(channel, method, request=b"", token=None, **kw):
    md = bearer_metadata(token) if token else ()
    return channel.unary_unary(f"/{SERVICE}/{method}")(request, metadata=md, timeout=10, **kw)


def error_info(err: grpc.RpcError) -> error_details_pb2.ErrorInfo:
    for detail in rpc_status.from_call(err).details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info
    raise AssertionError("no ErrorInfo")


def code_of(fn):
    with pytest.raises(grpc.RpcError) as info:
        fn()
    return info.value


def scrape(srv):
    body = urllib.request.urlopen(f"http://127.0.0.1:{srv.metrics_port}/metrics", timeout=5).read().decode()
    samples = {}
    for fam in text_string_to_metric_families(body):
        for s in fam.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def handled(samples, method, code, kind="unary"):
    key = ("grpc_server_handled_total", tuple(sorted({
        "grpc_type": kind, "grpc_service": SERVICE, "grpc_method": method, "grpc_code": code}.items())))
    return samples.get(key, 0)


def test_health_serving_for_overall_and_each_service(running):
    srv, _, _, channel = running
    stub = health_pb2_grpc.HealthStub(channel)
    for name in ("", SERVICE):
        assert stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status == SERVING


def test_reflection_lists_services_without_token(running):
    _, _, _, channel = running
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    [resp] = list(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                            timeout=5))
    names = {s.name for s in resp.list_services_response.service}
    assert {SERVICE, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names


def test_authentication_and_authorization(running, tmp_path):
    _, _, tokens, channel = running
    assert code_of(lambda: call(channel, "Echo")).code() == grpc.StatusCode.UNAUTHENTICATED
    assert code_of(lambda: call(channel, "Echo", token="not-a-token")).code() == grpc.StatusCode.UNAUTHENTICATED
    bad_scheme = (("authorization", f"Basic {tokens['operations']}"),)
    err = code_of(lambda: channel.unary_unary(f"/{SERVICE}/Echo")(b"", metadata=bad_scheme, timeout=5))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert code_of(lambda: call(channel, "Echo", token=tokens["mobile_banking"])).code() == \
        grpc.StatusCode.PERMISSION_DENIED
    assert call(channel, "Echo", b"hi", token=tokens["operations"]) == b"hi"
    assert call(channel, "Echo", b"hi", token=tokens["hr"]) == b"hi"  # exact entry
    assert code_of(lambda: call(channel, "Fail", b"invalid", token=tokens["hr"])).code() == \
        grpc.StatusCode.PERMISSION_DENIED  # wildcard only allows operations
    # Listed with no roles: nobody but admin.
    assert code_of(lambda: call(channel, "Unlisted", token=tokens["operations"])).code() == \
        grpc.StatusCode.PERMISSION_DENIED
    assert call(channel, "Unlisted", b"x", token=tokens["admin"]) == b"x"


def test_principal_and_request_id_reach_the_handler(running):
    _, _, tokens, channel = running
    md = (*bearer_metadata(tokens["operations"]), ("x-request-id", "req-123"))
    assert channel.unary_unary(f"/{SERVICE}/Whoami")(b"", metadata=md, timeout=5) == b"operations|req-123"


def test_client_helper_attaches_token_and_request_id(running):
    srv, _, tokens, _ = running
    with dial(f"127.0.0.1:{srv.port}", tokens["operations"]) as ch:
        name, rid = ch.unary_unary(f"/{SERVICE}/Whoami")(b"", timeout=5).decode().split("|")
    assert name == "operations" and len(rid) == 32


def test_errors_map_to_codes_with_bad_request_details(running):
    _, _, tokens, channel = running
    tok = tokens["operations"]
    err = code_of(lambda: call(channel, "Fail", b"invalid", token=tok))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(err)
    bad = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad)
    assert [(v.field, v.description) for v in bad.field_violations] == [("customer.customer_id", "required")]

    err = code_of(lambda: call(channel, "Fail", b"precondition", token=tok))
    assert (err.code(), err.details()) == (grpc.StatusCode.FAILED_PRECONDITION, "book locked")

    err = code_of(lambda: call(channel, "Fail", b"abort", token=tok))
    assert (err.code(), err.details()) == (grpc.StatusCode.NOT_FOUND, "no such customer")

    err = code_of(lambda: call(channel, "Fail", b"boom", token=tok))
    assert err.code() == grpc.StatusCode.INTERNAL
    assert "secret" not in err.details() and "error id" in err.details()


def test_server_stream_error_after_items(running):
    _, _, tokens, channel = running
    stream = channel.unary_stream(f"/{SERVICE}/Count")(b"3", metadata=bearer_metadata(tokens["operations"]),
                                                        timeout=5)
    got = []
    with pytest.raises(grpc.RpcError) as info:
        for item in stream:
            got.append(item)
    assert got == [b"0", b"1", b"2"]
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_metrics_scraped_over_http(running):
    srv, _, tokens, channel = running
    tok = tokens["operations"]
    call(channel, "Echo", b"a", token=tok)
    call(channel, "Echo", b"b", token=tok)
    code_of(lambda: call(channel, "Echo"))
    code_of(lambda: call(channel, "Fail", b"invalid", token=tok))
    code_of(lambda: call(channel, "Fail", b"abort", token=tok))
    with pytest.raises(grpc.RpcError):
        list(channel.unary_stream(f"/{SERVICE}/Count")(b"2", metadata=bearer_metadata(tok), timeout=5))
    assert channel.stream_unary(f"/{SERVICE}/Collect")(iter([b"x", b"y", b"z"]),
                                                        metadata=bearer_metadata(tok), timeout=5) == b"x,y,z"
    health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)

    s = scrape(srv)
    assert handled(s, "Echo", "OK") == 2
    assert handled(s, "Echo", "Unauthenticated") == 1
    assert handled(s, "Fail", "InvalidArgument") == 1
    assert handled(s, "Fail", "NotFound") == 1
    assert handled(s, "Count", "ResourceExhausted", "server_stream") == 1
    assert handled(s, "Collect", "OK", "client_stream") == 1
    lab = lambda m, k="unary", svc=SERVICE: tuple(sorted(  # noqa: E731
        {"grpc_type": k, "grpc_service": svc, "grpc_method": m}.items()))
    assert s[("grpc_server_started_total", lab("Echo"))] == 3
    assert s[("grpc_server_msg_sent_total", lab("Count", "server_stream"))] == 2
    assert s[("grpc_server_msg_received_total", lab("Collect", "client_stream"))] == 3
    assert s[("grpc_server_handling_seconds_count", lab("Echo"))] == 3
    assert s[("grpc_server_started_total", lab("Check", svc="grpc.health.v1.Health"))] == 1


def test_one_json_log_line_per_rpc(running, caplog):
    _, _, tokens, channel = running
    caplog.set_level(logging.INFO, logger="kequn.rpc")
    md = (*bearer_metadata(tokens["operations"]), ("x-request-id", "rid-9"))
    channel.unary_unary(f"/{SERVICE}/Echo")(b"", metadata=md, timeout=5)
    deadline = time.time() + 2
    while not caplog.records and time.time() < deadline:
        time.sleep(0.01)
    [rec] = [r for r in caplog.records if r.name == "kequn.rpc"]
    f = rec.fields
    assert (f["service"], f["method"], f["code"], f["principal"], f["request_id"]) == \
        ("tiering", "Echo", "OK", "operations", "rid-9")
    assert f["duration_ms"] >= 0


def test_past_the_limit_and_a_full_queue_calls_are_refused_overloaded(tmp_path):
    srv, echo, tokens = make_server(tmp_path, max_concurrent_rpcs=2, max_queued_rpcs=0)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as channel:
            slow = channel.unary_unary(f"/{SERVICE}/Slow")
            md = bearer_metadata(tokens["operations"])
            busy = [slow.future(b"", metadata=md, timeout=10) for _ in range(2)]
            for _ in busy:
                assert echo.entered.acquire(timeout=5)
            err = code_of(lambda: call(channel, "Echo", token=tokens["operations"]))
            assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert error_info(err).reason == "OVERLOADED"
            echo.release.set()
            assert [f.result() for f in busy] == [b"done", b"done"]
            assert call(channel, "Echo", b"ok", token=tokens["operations"]) == b"ok"
    finally:
        echo.release.set()
        srv.stop(0)


def test_past_the_limit_calls_wait_in_the_queue_and_are_served(tmp_path):
    srv, echo, tokens = make_server(tmp_path, max_concurrent_rpcs=2, max_queued_rpcs=4)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as channel:
            slow = channel.unary_unary(f"/{SERVICE}/Slow")
            md = bearer_metadata(tokens["operations"])
            busy = [slow.future(b"", metadata=md, timeout=10) for _ in range(2)]
            for _ in busy:
                assert echo.entered.acquire(timeout=5)
            queued = [channel.unary_unary(f"/{SERVICE}/Echo").future(b"q", metadata=md, timeout=10)
                      for _ in range(3)]
            deadline = time.monotonic() + 10
            while srv.admission.queued < 3 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert srv.admission.queued == 3 and not any(f.done() for f in queued)
            echo.release.set()
            assert [f.result() for f in busy] == [b"done", b"done"]
            assert [f.result() for f in queued] == [b"q", b"q", b"q"]
    finally:
        echo.release.set()
        srv.stop(0)


def test_readiness_flips_health(tmp_path):
    ready = threading.Event()
    ready.set()
    srv, echo, _ = make_server(tmp_path, readiness=ready.is_set)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)

            def wait_status(want):
                deadline = time.time() + 5
                while time.time() < deadline:
                    got = stub.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=5).status
                    if got == want:
                        return
                    time.sleep(0.02)
                pytest.fail(f"health never became {want}")

            wait_status(SERVING)
            ready.clear()  # e.g. the database went away
            wait_status(NOT_SERVING)
            assert stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status == NOT_SERVING
            # Liveness ignores readiness: Kubernetes must not restart the pod for a DB outage.
            assert stub.Check(health_pb2.HealthCheckRequest(service="liveness"), timeout=5).status == SERVING
            ready.set()
            wait_status(SERVING)
    finally:
        srv.stop(0)


def test_stop_flips_health_to_not_serving_then_closes(tmp_path):
    srv, _, _ = make_server(tmp_path)
    channel = grpc.insecure_channel(f"127.0.0.1:{srv.port}")
    watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""), timeout=10)
    assert next(watch).status == SERVING
    stopper = threading.Thread(target=srv.stop, args=(1,))
    stopper.start()
    assert next(watch).status == NOT_SERVING
    stopper.join(10)
    assert not stopper.is_alive() and srv.wait(0)
    with pytest.raises(grpc.RpcError):
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
    channel.close()
