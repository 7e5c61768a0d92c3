"""The console's settings from the environment (12-factor), looked up as
KEQUN_CONSOLE_<NAME> first, then KEQUN_<NAME>, like the services."""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from services.common.config import LOG_LEVELS, ConfigError, _float, _int, _lookup, service_target

SERVICE = "console"
DEFAULT_PORT = 8080  # CONTRACT.md: console (web), KEQUN_CONSOLE_PORT
COOKIE_SECURE = ("auto", "true", "false")


@dataclass(frozen=True)
class ConsoleConfig:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    targets: Mapping[str, str] = field(default_factory=dict)
    tokens_file: Path = Path(".kequn/tokens.yaml")
    # A session ends after this long without a request, and this long after sign-in at the latest.
    session_idle_seconds: float = 1800.0
    session_max_seconds: float = 8 * 3600.0
    # Production sign-in: the SSO gateway puts the person's kequn bearer token in this
    # header. Honoured only when set; the console must then be reachable only through
    # the gateway, which strips the header from what browsers send (docs/console.md).
    trusted_header: str = ""
    # The token form of development sign-in; on unless a trusted header is configured.
    token_signin: bool = True
    # HTTPS served by the console itself (uvicorn); "auto" cookies are Secure then.
    https_cert: Path | None = None
    https_key: Path | None = None
    cookie_secure: str = "auto"
    call_timeout_seconds: float = 10.0
    # SimulatePopulation (and the downstream dry runs) take longer than a call: the page waits this long.
    simulation_timeout_seconds: float = 120.0
    max_body_bytes: int = 2 * 1024 * 1024
    log_level: str = "INFO"

    @property
    def url(self) -> str:
        scheme = "https" if self.https_cert else "http"
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"{scheme}://{host}:{self.port}/"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "ConsoleConfig":
        env = os.environ if env is None else env
        get = lambda name: _lookup(env, SERVICE, name)[1]  # noqa: E731
        data_dir = Path(get("DATA_DIR") or "./.kequn").expanduser().resolve()
        header = (env.get("KEQUN_CONSOLE_TRUSTED_HEADER") or "").strip().lower()
        token_signin = (env.get("KEQUN_CONSOLE_TOKEN_SIGNIN") or ("0" if header else "1")).lower()
        if token_signin not in ("0", "1", "true", "false"):
            raise ConfigError(f"KEQUN_CONSOLE_TOKEN_SIGNIN={token_signin!r}: 0 or 1")
        secure = (env.get("KEQUN_CONSOLE_COOKIE_SECURE") or "auto").lower()
        if secure not in COOKIE_SECURE:
            raise ConfigError(f"KEQUN_CONSOLE_COOKIE_SECURE={secure!r}: one of {COOKIE_SECURE}")
        cert, key = env.get("KEQUN_CONSOLE_HTTPS_CERT"), env.get("KEQUN_CONSOLE_HTTPS_KEY")
        if bool(cert) != bool(key):
            raise ConfigError("KEQUN_CONSOLE_HTTPS_CERT and KEQUN_CONSOLE_HTTPS_KEY go together")
        level = (get("LOG_LEVEL") or "INFO").upper()
        if level not in LOG_LEVELS:
            raise ConfigError(f"KEQUN_LOG_LEVEL={level!r}: one of {LOG_LEVELS}")
        return cls(
            host=get("HOST") or "127.0.0.1",
            port=_int(env, SERVICE, "PORT", DEFAULT_PORT, 0, 65535),
            targets={name: service_target(name, env) for name in ("tiering", "assignment", "scoring", "benefits")},
            tokens_file=Path(get("TOKENS_FILE") or data_dir / "tokens.yaml").expanduser(),
            session_idle_seconds=_float(env, SERVICE, "SESSION_IDLE_SECONDS", 1800.0),
            session_max_seconds=_float(env, SERVICE, "SESSION_MAX_SECONDS", 8 * 3600.0),
            trusted_header=header,
            token_signin=token_signin in ("1", "true"),
            https_cert=Path(cert) if cert else None,
            https_key=Path(key) if key else None,
            cookie_secure=secure,
            call_timeout_seconds=_float(env, SERVICE, "CALL_TIMEOUT_SECONDS", 10.0),
            simulation_timeout_seconds=_float(env, SERVICE, "SIMULATION_TIMEOUT_SECONDS", 120.0),
            max_body_bytes=_int(env, SERVICE, "MAX_BODY_BYTES", 2 * 1024 * 1024, 1024),
            log_level=level,
        )
