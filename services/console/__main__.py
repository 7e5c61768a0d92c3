"""Composition root: `python -m services.console` == `kequn serve console`.

Wires the configuration, the role matrix, the tokens file (to know who a
token belongs to and which pages to show), the gRPC backend and the HTTP
edge, and serves it with uvicorn (one process: sessions live in memory).
"""
from __future__ import annotations

import logging
import os

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

from services.common.auth import Policy, TokenStore  # noqa: E402
from services.common.logging import configure_logging  # noqa: E402

from .access import Access  # noqa: E402
from .backend import Backend  # noqa: E402
from .config import ConsoleConfig  # noqa: E402
from .web import Console  # noqa: E402

log = logging.getLogger("services.console")


def build(config: ConsoleConfig) -> Console:
    backend = Backend(config.targets, timeout=config.call_timeout_seconds)
    return Console(config, backend, TokenStore(config.tokens_file), Access(Policy.load()))


def main() -> int:
    import uvicorn

    config = ConsoleConfig.from_env()
    configure_logging(config.log_level, "console")
    console = build(config)
    server = uvicorn.Server(uvicorn.Config(
        console.app(), host=config.host, port=config.port, log_level=config.log_level.lower(),
        access_log=False, proxy_headers=True, server_header=False,
        ssl_certfile=str(config.https_cert) if config.https_cert else None,
        ssl_keyfile=str(config.https_key) if config.https_key else None))
    log.info("console on %s, services %s", config.url, dict(config.targets))
    try:
        server.run()
    finally:
        console.backend.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
