"""Calling other services: attach the bearer token and propagate x-request-id."""

from __future__ import annotations

import collections

import grpc

from services.common import service_config
from services.common.auth import bearer_metadata
from services.common.tracing import client_interceptors as tracing_interceptors
from services.common.tls import TlsFiles, client_credentials, tls_from_env
from services.common.logging import REQUEST_ID_HEADER, current_request_id, new_request_id


class _CallDetails(
    collections.namedtuple("_CallDetails", ("method", "timeout", "metadata", "credentials",
                                            "wait_for_ready", "compression")),
    grpc.ClientCallDetails,
):
    pass


class ClientAuthInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds `authorization: Bearer <token>` and the current x-request-id
    (the one of the RPC being served, so one id follows a request across
    services; a new one outside an RPC)."""

    def __init__(self, token: str | None) -> None:
        self._auth = bearer_metadata(token) if token else ()

    def _details(self, d: grpc.ClientCallDetails) -> _CallDetails:
        md = list(d.metadata or ())
        keys = {k for k, _ in md}
        if "authorization" not in keys:
            md += self._auth
        if REQUEST_ID_HEADER not in keys:
            md.append((REQUEST_ID_HEADER, current_request_id() or new_request_id()))
        return _CallDetails(d.method, d.timeout, md, d.credentials,
                            getattr(d, "wait_for_ready", None), getattr(d, "compression", None))

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation, details, request_iterator):
        return continuation(self._details(details), request_iterator)

    def intercept_stream_stream(self, continuation, details, request_iterator):
        return continuation(self._details(details), request_iterator)


def dial(target: str, token: str | None = None, *, options=None,
         tls: TlsFiles | grpc.ChannelCredentials | None | bool = None) -> grpc.Channel:
    """A channel to `target` that authenticates as `token`, with the kequn
    service config (deploy/grpc/service_config.json: deadlines, retries of
    reads and request_id RPCs on UNAVAILABLE) unless `options` sets its own.

    `tls`: None (default) uses the process's own KEQUN_TLS_* files when they
    are set — a service running with mTLS presents its certificate to the
    services it calls — and plaintext otherwise; False forces plaintext;
    TlsFiles (cert/key presented, ca trusted) or ready ChannelCredentials use TLS."""
    options = list(options or ())
    if not any(key == "grpc.service_config" for key, _ in options):
        options += service_config.channel_options()
    if tls is None:
        tls = tls_from_env()
    if isinstance(tls, TlsFiles):
        tls = client_credentials(tls.ca, tls.cert, tls.key)
    if tls:
        channel = grpc.secure_channel(target, tls, options=options)
    else:
        channel = grpc.insecure_channel(target, options=options)
    return grpc.intercept_channel(channel, *tracing_interceptors(), ClientAuthInterceptor(token))
