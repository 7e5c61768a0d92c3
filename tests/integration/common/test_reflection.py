"""Server reflection answers under grpc.reflection.v1 and v1alpha: a real
server from build_server, real clients of each protocol version."""

from __future__ import annotations

import dataclasses

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from prometheus_client import CollectorRegistry

from kequn.tiering.v1 import tiering_pb2_grpc
from services.common.auth import Policy, TokenStore
from services.common.config import ServiceConfig
from services.common.reflection import v1_file_descriptor
from services.common.server import build_server
from services.common.testing import dev_tokens

TIERING = "kequn.tiering.v1.TieringService"
EXPECTED = {TIERING, "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection"}


@pytest.fixture(scope="module")
def channel(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reflection")
    cfg = dataclasses.replace(ServiceConfig.from_env("tiering", {"KEQUN_DATA_DIR": str(tmp)}),
                              grpc_port=0, metrics_port=0, shutdown_grace_seconds=1)
    srv = build_server(cfg, registry=CollectorRegistry(), token_store=TokenStore(dev_tokens(tmp).path),
                       policy=Policy({}), serve_metrics=False, service_names=[TIERING],
                       servicers=[(tiering_pb2_grpc.add_TieringServiceServicer_to_server,
                                   tiering_pb2_grpc.TieringServiceServicer())])
    srv.start()
    ch = grpc.insecure_channel(f"127.0.0.1:{srv.port}")
    yield ch
    ch.close()
    srv.stop(0)


def _v1_messages():
    """A v1 client as another language would build it: the messages of
    grpc/reflection/v1/reflection.proto in a pool of its own."""
    pool = descriptor_pool.DescriptorPool()
    pool.Add(v1_file_descriptor())
    get = lambda name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"grpc.reflection.v1.{name}"))  # noqa: E731
    return get("ServerReflectionRequest"), get("ServerReflectionResponse")


def _v1_call(channel, *requests):
    request_cls, response_cls = _v1_messages()
    call = channel.stream_stream("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                                 request_serializer=request_cls.SerializeToString,
                                 response_deserializer=response_cls.FromString)
    return list(call(iter([request_cls(**r) for r in requests]), timeout=10))


def test_v1_lists_every_service(channel):
    [answer] = _v1_call(channel, {"list_services": ""})
    assert {s.name for s in answer.list_services_response.service} == EXPECTED


def test_v1_describes_a_kequn_service_with_its_dependencies(channel):
    [answer] = _v1_call(channel, {"file_containing_symbol": TIERING})
    files = {}
    for raw in answer.file_descriptor_response.file_descriptor_proto:
        fd = descriptor_pb2.FileDescriptorProto.FromString(raw)
        files[fd.name] = fd
    tiering = files["kequn/tiering/v1/tiering.proto"]
    assert [s.name for s in tiering.service] == ["TieringService"]
    assert "GetCustomerTier" in {m.name for m in tiering.service[0].method}


def test_v1_can_describe_itself(channel):
    [answer] = _v1_call(channel, {"file_containing_symbol": "grpc.reflection.v1.ServerReflection"})
    [raw] = answer.file_descriptor_response.file_descriptor_proto
    fd = descriptor_pb2.FileDescriptorProto.FromString(raw)
    assert (fd.name, fd.package) == ("grpc/reflection/v1/reflection.proto", "grpc.reflection.v1")


def test_v1_unknown_symbol_is_a_not_found_answer(channel):
    [answer] = _v1_call(channel, {"file_containing_symbol": "kequn.nope.v1.Nothing"})
    assert answer.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]


def test_v1alpha_still_lists_every_service(channel):
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    [answer] = list(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                              timeout=10))
    assert {s.name for s in answer.list_services_response.service} == EXPECTED


def test_v1alpha_client_library_resolves_a_method(channel):
    db = ProtoReflectionDescriptorDatabase(channel)
    pool = descriptor_pool.DescriptorPool(db)
    method = pool.FindServiceByName(TIERING).methods_by_name["WatchTierChanges"]
    assert method.output_type.full_name == "kequn.tiering.v1.TierChange"
