"""Every RPC of every kequn service, read from the generated descriptors (so
a new RPC is attacked the moment it is generated), and a generic way to call
one with a message or with raw wire bytes."""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Iterable

import grpc
from google.protobuf import message_factory

AREAS = ("tiering", "assignment", "scoring", "benefits", "rules")
SERVICES = ("tiering", "assignment", "scoring", "benefits")
RULES_SERVICE = "kequn.rules.v1.RuleStoreService"
AUDIT_SERVICE = "kequn.common.v1.AuditService"


@dataclass(frozen=True)
class Rpc:
    area: str
    service: str          # full proto service name
    name: str             # method name
    input: Any            # request message class
    output: Any
    client_streaming: bool
    server_streaming: bool

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.name}"

    def __str__(self) -> str:  # readable pytest ids
        return f"{self.service.rsplit('.', 1)[-1]}.{self.name}"


def _rpcs_of(area: str) -> list[Rpc]:
    # "audit": the audit trail service of kequn.common.v1, on every service's port.
    module = importlib.import_module("kequn.common.v1.audit_pb2" if area == "audit" else f"kequn.{area}.v1.{area}_pb2")
    out = []
    for service in module.DESCRIPTOR.services_by_name.values():
        for m in service.methods:
            out.append(Rpc(area, service.full_name, m.name, message_factory.GetMessageClass(m.input_type),
                           message_factory.GetMessageClass(m.output_type), m.client_streaming,
                           m.server_streaming))
    return out


def all_rpcs() -> list[Rpc]:
    return [rpc for area in (*AREAS, "audit") for rpc in _rpcs_of(area)]


def rpcs_served_by(service: str) -> list[Rpc]:
    """What one service's port serves: its own API, the rule store for its kinds and its audit trail."""
    return _rpcs_of(service) + _rpcs_of("rules") + _rpcs_of("audit")


def is_mutation(rpc: Rpc) -> bool:
    return not rpc.name.startswith(("Get", "List", "Watch", "Validate", "Test", "Simulate"))


def call(channel: grpc.Channel, rpc: Rpc, request, *, metadata=(), timeout: float = 5.0,
         raw: bool = False, max_responses: int = 50):
    """Call `rpc` with a message (or, raw=True, wire bytes; a list of either
    for client streams). Returns the response, or the list of responses
    read (at most `max_responses`, then the stream is cancelled)."""
    ser = None if raw else (lambda m: m.SerializeToString())
    de = rpc.output.FromString
    if rpc.client_streaming and rpc.server_streaming:
        stub = channel.stream_stream(rpc.path, request_serializer=ser, response_deserializer=de)
    elif rpc.client_streaming:
        stub = channel.stream_unary(rpc.path, request_serializer=ser, response_deserializer=de)
    elif rpc.server_streaming:
        stub = channel.unary_stream(rpc.path, request_serializer=ser, response_deserializer=de)
    else:
        stub = channel.unary_unary(rpc.path, request_serializer=ser, response_deserializer=de)
    if rpc.client_streaming:
        request = iter(list(request) if isinstance(request, Iterable) and not isinstance(request, bytes)
                       else [request])
    answer = stub(request, metadata=metadata, timeout=timeout)
    if not rpc.server_streaming:
        return answer
    responses = []
    try:
        for item in answer:
            responses.append(item)
            if len(responses) >= max_responses:
                break
    finally:
        answer.cancel()
    return responses


def code_of(fn) -> grpc.StatusCode:
    """The status code `fn()` ends with (OK when it returns)."""
    try:
        fn()
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK
