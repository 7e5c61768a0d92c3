"""Mutual TLS: server and client credentials, and who the peer's certificate names.

Optional: a service binds with TLS only when KEQUN_TLS_CERT, KEQUN_TLS_KEY and
KEQUN_TLS_CLIENT_CA are all set (see ServiceConfig). The server then requires
a client certificate signed by KEQUN_TLS_CLIENT_CA; a client without one fails
the handshake before any RPC runs. The certificate's subject CN and SANs are
the caller's identities; auth.TokenStore maps them to a principal.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc

TLS_ENV = ("KEQUN_TLS_CERT", "KEQUN_TLS_KEY", "KEQUN_TLS_CLIENT_CA")


@dataclass(frozen=True)
class TlsFiles:
    """PEM files: this party's certificate and key, and the CA it trusts for the peer."""

    cert: Path
    key: Path
    ca: Path

    def read(self) -> tuple[bytes, bytes, bytes]:
        return self.cert.read_bytes(), self.key.read_bytes(), self.ca.read_bytes()


def server_credentials(files: TlsFiles) -> grpc.ServerCredentials:
    """TLS that refuses any client without a certificate signed by `files.ca`."""
    cert, key, ca = files.read()
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=True)


def client_credentials(ca: Path | bytes, cert: Path | bytes | None = None,
                       key: Path | bytes | None = None) -> grpc.ChannelCredentials:
    """Trust `ca` for the server; present `cert`/`key` when given."""
    def data(x):
        return x if x is None or isinstance(x, bytes) else Path(x).read_bytes()
    return grpc.ssl_channel_credentials(root_certificates=data(ca), private_key=data(key),
                                        certificate_chain=data(cert))


def tls_from_env(env: Mapping[str, str] | None = None, service: str | None = None) -> TlsFiles | None:
    """The process's own TLS files (KEQUN_<SERVICE>_TLS_* first, then KEQUN_TLS_*), or None.

    Raises ValueError when only some of the three are set: half a TLS
    configuration must not silently fall back to plaintext."""
    env = os.environ if env is None else env

    def get(name: str) -> str | None:
        keys = ([f"KEQUN_{service.upper()}_{name[6:]}"] if service else []) + [name]
        return next((env[k] for k in keys if env.get(k)), None)

    values = {name: get(name) for name in TLS_ENV}
    given = [n for n, v in values.items() if v]
    if not given:
        return None
    if len(given) != len(TLS_ENV):
        missing = sorted(set(TLS_ENV) - set(given))
        raise ValueError(f"mTLS needs {', '.join(TLS_ENV)} together; missing {', '.join(missing)}")
    return TlsFiles(*(Path(values[n]).expanduser() for n in TLS_ENV))


def peer_identities(context: grpc.ServicerContext) -> tuple[str, ...]:
    """The verified client certificate's subject CN and SANs (empty without TLS).

    grpc fills the auth context only after a handshake that verified the
    certificate against the client CA, so these names can be trusted."""
    try:
        auth = context.auth_context() or {}
    except Exception:  # noqa: BLE001 - no transport security info
        return ()
    if b"ssl" not in [v if isinstance(v, bytes) else str(v).encode() for v in auth.get("transport_security_type", ())]:
        return ()
    names: list[str] = []
    for key in ("x509_common_name", "x509_subject_alternative_name"):
        for value in auth.get(key, ()):
            name = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
            if name and name not in names:
                names.append(name)
    return tuple(names)
