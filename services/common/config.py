"""Service configuration from the environment (12-factor).

A setting is looked up as KEQUN_<SERVICE>_<NAME> first, then KEQUN_<NAME>,
so one env file can configure every service and still override one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from services.common.tls import TlsFiles, tls_from_env

# CONTRACT.md: default ports (gRPC, metrics HTTP).
DEFAULT_PORTS: dict[str, tuple[int, int]] = {
    "tiering": (50051, 9101),
    "assignment": (50052, 9102),
    "scoring": (50053, 9103),
    "benefits": (50054, 9104),
}
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class ConfigError(ValueError):
    """A setting in the environment is missing or malformed."""


def _lookup(env: Mapping[str, str], service: str, name: str) -> tuple[str, str | None]:
    for key in (f"KEQUN_{service.upper()}_{name}", f"KEQUN_{name}"):
        value = env.get(key)
        if value not in (None, ""):
            return key, value
    return f"KEQUN_{name}", None


def _int(env, service, name, default: int, lo: int = 0, hi: int | None = None) -> int:
    key, raw = _lookup(env, service, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{key}={raw!r}: not an integer") from None
    if value < lo or (hi is not None and value > hi):
        raise ConfigError(f"{key}={value}: must be in [{lo}, {hi if hi is not None else '∞'}]")
    return value


def _float(env, service, name, default: float) -> float:
    key, raw = _lookup(env, service, name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{key}={raw!r}: not a number") from None
    if value < 0:
        raise ConfigError(f"{key}={value}: must not be negative")
    return value


def service_target(name: str, env: Mapping[str, str] | None = None) -> str:
    """Where to reach service `name`: KEQUN_<NAME>_TARGET or localhost:<default port>."""
    env = os.environ if env is None else env
    if name not in DEFAULT_PORTS:
        raise ConfigError(f"unknown service {name!r}")
    return env.get(f"KEQUN_{name.upper()}_TARGET") or f"127.0.0.1:{DEFAULT_PORTS[name][0]}"


@dataclass(frozen=True)
class ServiceConfig:
    service: str
    host: str
    grpc_port: int
    metrics_port: int
    database_url: str
    data_dir: Path
    tokens_file: Path
    rules_poll_seconds: float = 2.0
    max_concurrent_rpcs: int = 64
    # Calls that wait for a worker once max_concurrent_rpcs run (admission.py).
    max_queued_rpcs: int = 128
    # Database connections (0: max_concurrent_rpcs + background threads).
    db_pool_size: int = 0
    # Server processes sharing the gRPC port (services/common/workers.py).
    workers: int = 1
    # Set in a worker started by the supervisor (KEQUN_WORKER_INDEX), else None.
    worker_index: int | None = None
    # Where /metrics listens (default: host); a worker's is private.
    metrics_host: str | None = None
    shutdown_grace_seconds: float = 10.0
    log_level: str = "INFO"
    # Bearer token this service sends when calling other services.
    service_token: str | None = field(default=None, repr=False)
    # Cross-service targets, resolved once from the same environment.
    targets: Mapping[str, str] = field(default_factory=dict, hash=False, compare=False)
    # mTLS (optional): KEQUN_TLS_CERT / KEQUN_TLS_KEY / KEQUN_TLS_CLIENT_CA, all or none.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None

    @property
    def tls(self) -> TlsFiles | None:
        """The server's TLS files when mTLS is configured, else None (plaintext)."""
        if self.tls_cert and self.tls_key and self.tls_client_ca:
            return TlsFiles(self.tls_cert, self.tls_key, self.tls_client_ca)
        return None

    def service_target(self, name: str) -> str:
        if name in self.targets:
            return self.targets[name]
        return service_target(name, {})

    @classmethod
    def from_env(cls, service: str, env: Mapping[str, str] | None = None) -> "ServiceConfig":
        env = os.environ if env is None else env
        if service not in DEFAULT_PORTS:
            raise ConfigError(f"unknown service {service!r}; one of {sorted(DEFAULT_PORTS)}")
        grpc_default, metrics_default = DEFAULT_PORTS[service]
        data_dir = Path(_lookup(env, service, "DATA_DIR")[1] or "./.kequn").expanduser().resolve()
        tokens_file = Path(_lookup(env, service, "TOKENS_FILE")[1] or data_dir / "tokens.yaml")
        level = (_lookup(env, service, "LOG_LEVEL")[1] or "INFO").upper()
        if level not in LOG_LEVELS:
            raise ConfigError(f"KEQUN_LOG_LEVEL={level!r}: one of {LOG_LEVELS}")
        try:
            tls = tls_from_env(env, service)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        return cls(
            service=service,
            host=_lookup(env, service, "HOST")[1] or "127.0.0.1",
            grpc_port=_int(env, service, "GRPC_PORT", grpc_default, 0, 65535),
            metrics_port=_int(env, service, "METRICS_PORT", metrics_default, 0, 65535),
            # Per-service only: a shared KEQUN_DATABASE_URL would mix services'
            # tables; they may share a database only through explicit URLs.
            database_url=env.get(f"KEQUN_{service.upper()}_DATABASE_URL")
            or f"sqlite:///{data_dir / (service + '.db')}",
            data_dir=data_dir,
            tokens_file=tokens_file.expanduser(),
            rules_poll_seconds=_float(env, service, "RULES_POLL_SECONDS", 2.0),
            max_concurrent_rpcs=_int(env, service, "MAX_CONCURRENT_RPCS", 64, 1),
            max_queued_rpcs=_int(env, service, "MAX_QUEUED_RPCS", 128, 0),
            db_pool_size=_int(env, service, "DB_POOL_SIZE", 0, 0),
            workers=_int(env, service, "WORKERS", 1, 1, 256),
            worker_index=_int(env, service, "WORKER_INDEX", 0) if _lookup(env, service, "WORKER_INDEX")[1] else None,
            metrics_host=_lookup(env, service, "METRICS_HOST")[1],
            shutdown_grace_seconds=_float(env, service, "SHUTDOWN_GRACE_SECONDS", 10.0),
            log_level=level,
            service_token=env.get("KEQUN_SERVICE_TOKEN") or None,
            targets={name: service_target(name, env) for name in DEFAULT_PORTS},
            tls_cert=tls.cert if tls else None,
            tls_key=tls.key if tls else None,
            tls_client_ca=tls.ca if tls else None,
        )
