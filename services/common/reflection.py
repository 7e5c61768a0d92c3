"""Server reflection under both names clients ask for: `grpc.reflection.v1`
(grpcurl, Postman and current grpc libraries try it first) and the older
`grpc.reflection.v1alpha`.

grpcio-reflection ships only the v1alpha module. The v1 proto is the same
file under another package (same messages, same field numbers), so the v1
service is the v1alpha servicer registered under the v1 name; its file
descriptor, derived here from v1alpha's by renaming the package, is added to
the default pool so a client can also reflect on the v1 service itself.
"""

from __future__ import annotations

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2

V1ALPHA_SERVICE_NAME = reflection.SERVICE_NAME  # grpc.reflection.v1alpha.ServerReflection
V1_PACKAGE = "grpc.reflection.v1"
V1_FILE = "grpc/reflection/v1/reflection.proto"
V1_SERVICE_NAME = f"{V1_PACKAGE}.ServerReflection"
_METHOD = "ServerReflectionInfo"


def v1_file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    """grpc/reflection/v1/reflection.proto, as gRPC publishes it."""
    alpha = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(alpha)
    old = f".{alpha.package}."
    v1 = descriptor_pb2.FileDescriptorProto()
    v1.CopyFrom(alpha)
    v1.name, v1.package = V1_FILE, V1_PACKAGE
    v1.options.Clear()
    v1.options.go_package = "google.golang.org/grpc/reflection/grpc_reflection_v1"
    v1.options.java_multiple_files = True
    v1.options.java_package = "io.grpc.reflection.v1"
    v1.options.java_outer_classname = "ServerReflectionProto"

    def rename(messages):
        for message in messages:
            for field in message.field:
                if field.type_name.startswith(old):
                    field.type_name = f".{V1_PACKAGE}." + field.type_name[len(old):]
            rename(message.nested_type)

    rename(v1.message_type)
    for service in v1.service:
        for method in service.method:
            method.input_type = method.input_type.replace(old, f".{V1_PACKAGE}.")
            method.output_type = method.output_type.replace(old, f".{V1_PACKAGE}.")
    return v1


def _register_v1_descriptor(pool: descriptor_pool.DescriptorPool) -> None:
    try:
        pool.FindFileByName(V1_FILE)
    except KeyError:
        pool.Add(v1_file_descriptor())


def enable_server_reflection(service_names, server: grpc.Server) -> None:
    """Serve reflection for `service_names` (plus health and both reflection
    services) under v1 and v1alpha."""
    _register_v1_descriptor(descriptor_pool.Default())
    names = (*service_names, V1_SERVICE_NAME, V1ALPHA_SERVICE_NAME)
    servicer = reflection.ReflectionServicer(names)
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    for service in (V1ALPHA_SERVICE_NAME, V1_SERVICE_NAME):
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, {_METHOD: handler}),))
