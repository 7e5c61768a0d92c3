"""One composition root for every service: config → migrations → rule store
and runtime → servicers → gRPC server with health, reflection, metrics, auth
→ SIGTERM. A service's ``__main__`` only declares a ``ServiceSpec``."""
from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import grpc
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine, text

from kequn.rules.v1 import rules_pb2_grpc
from services.common.auth import Policy, TokenStore
from services.common.client import dial
from services.common.config import ServiceConfig, service_target
from services.common.db import make_engine, make_session_factory, pool_size_for, run_migrations
from services.common.logging import configure_logging
from services.common.server import ServiceServer, build_server, serve_forever
from services.common.tracing import configure_from_env as configure_tracing

from .admin import RuleAdmin
from .api import SERVICE_NAME as RULES_SERVICE_NAME
from .api import RuleStoreServicer
from .engine import default_engine
from .kinds import KindRegistry, KindSpec
from .population import PopulationSimulator
from .runtime import RuleRuntime
from .store import RuleStore
from .testing import migrate_rules

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Servicer:
    add_to_server: Callable[[Any, grpc.Server], None]
    servicer: object
    service_name: str  # full proto name, for health and reflection


@dataclass
class ServiceContext:
    config: ServiceConfig
    db: Engine
    rules: RuleRuntime
    admin: RuleAdmin
    registry: CollectorRegistry
    session_factory: Any = None
    _stop_callbacks: list[Callable[[], None]] = field(default_factory=list)
    _channels: dict[str, grpc.Channel] = field(default_factory=dict)
    stopping: threading.Event = field(default_factory=threading.Event)

    def channel(self, service: str) -> grpc.Channel:
        """An authenticated channel to another kequn service (one per target)."""
        if service not in self._channels:
            self._channels[service] = dial(service_target(service), os.environ.get("KEQUN_SERVICE_TOKEN"))
        return self._channels[service]

    def on_stop(self, callback: Callable[[], None]) -> None:
        self._stop_callbacks.append(callback)

    def start_background(self, target: Callable[[], None], name: str | None = None) -> threading.Thread:
        """A daemon thread; it should watch ``ctx.stopping`` and return when set."""
        thread = threading.Thread(target=target, name=name or target.__name__, daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        self.stopping.set()
        for callback in reversed(self._stop_callbacks):
            try:
                callback()
            except Exception:
                log.exception("stop callback failed")
        for channel in self._channels.values():
            channel.close()
        self.rules.stop()
        self.db.dispose()


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    kinds: Sequence[KindSpec]
    rulesets_dir: Path | None
    migrations_dir: Path | None
    build: Callable[[ServiceContext], list[Servicer]]
    demo: Callable[[ServiceContext], None] | None = None
    # What SimulatePopulation runs a candidate against (population.py); None = nothing stored.
    population: Callable[[ServiceContext], Any] | None = None


def migrate(spec: ServiceSpec, database_url: str) -> None:
    """Rule store tables, then the service's own history (own version table)."""
    migrate_rules(database_url)
    if spec.migrations_dir is not None and (Path(spec.migrations_dir) / "env.py").exists():
        run_migrations(database_url, str(spec.migrations_dir), f"alembic_version_{spec.name}")


def install_default_rules(spec: ServiceSpec, admin: RuleAdmin) -> list[str]:
    if spec.rulesets_dir is None or not Path(spec.rulesets_dir).is_dir():
        return []
    return admin.install_defaults(Path(spec.rulesets_dir), {k.name for k in spec.kinds})


def release_lead_seconds() -> float:
    """How long before its effective_from a release must be approved (and
    the last moment it can be cancelled): longer than every replica's poll
    interval, so all of them hold the final word before the instant."""
    return float(os.environ.get("KEQUN_RULES_RELEASE_LEAD_SECONDS", "60"))


def build_context(spec: ServiceSpec, config: ServiceConfig, registry: CollectorRegistry | None = None
                  ) -> ServiceContext:
    migrate(spec, config.database_url)
    # One connection per call the server runs at once, plus background threads.
    db = make_engine(config.database_url,
                     pool_size=config.db_pool_size or pool_size_for(config.max_concurrent_rpcs))
    registry = registry or CollectorRegistry()
    kinds = KindRegistry(spec.kinds)
    engine = default_engine()
    store = RuleStore(db)
    admin = RuleAdmin(store, kinds, engine, lead_seconds=release_lead_seconds())
    install_default_rules(spec, admin)
    runtime = RuleRuntime(store, kinds, engine, poll_seconds=config.rules_poll_seconds, registry=registry)
    runtime.start()
    return ServiceContext(config=config, db=db, rules=runtime, admin=admin, registry=registry,
                          session_factory=make_session_factory(db))


def _database_ready(db: Engine) -> Callable[[], bool]:
    def ready() -> bool:
        try:
            with db.connect() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except Exception:
            return False
    return ready


def build_service(spec: ServiceSpec, config: ServiceConfig | None = None) -> tuple[ServiceServer, ServiceContext]:
    config = config or ServiceConfig.from_env(spec.name)
    ctx = build_context(spec, config)
    servicers = list(spec.build(ctx))
    population = PopulationSimulator(ctx.admin, spec.population(ctx)) if spec.population else None
    servicers.append(Servicer(rules_pb2_grpc.add_RuleStoreServiceServicer_to_server,
                              RuleStoreServicer(ctx.admin, {k.name for k in spec.kinds}, ctx.rules, population),
                              RULES_SERVICE_NAME))
    server = build_server(
        config,
        registry=ctx.registry,
        servicers=[(s.add_to_server, s.servicer) for s in servicers],
        service_names=[s.service_name for s in servicers],
        token_store=TokenStore(config.tokens_file),
        policy=Policy.load(os.environ.get("KEQUN_RBAC_FILE") or None),
        readiness=_database_ready(ctx.db),
    )
    return server, ctx


def prepare_database(spec: ServiceSpec, config: ServiceConfig) -> None:
    """Migrations and shipped rulesets, once, before workers start (they
    would otherwise all try at the same time)."""
    migrate(spec, config.database_url)
    db = make_engine(config.database_url)
    try:
        install_default_rules(spec, RuleAdmin(RuleStore(db), KindRegistry(spec.kinds), default_engine()))
    finally:
        db.dispose()


def run_service(spec: ServiceSpec) -> int:
    config = ServiceConfig.from_env(spec.name)
    configure_logging(config.log_level, spec.name)
    if config.workers > 1 and config.worker_index is None:
        from services.common.workers import supervise
        prepare_database(spec, config)
        return supervise(config)
    configure_tracing(spec.name)  # off unless OTEL_TRACES_EXPORTER is set
    server, ctx = build_service(spec, config)
    if config.worker_index is not None:
        from prometheus_client import Gauge
        Gauge("kequn_worker_info", "This worker process (KEQUN_<SERVICE>_WORKERS)", ["pid"],
              registry=ctx.registry).labels(str(os.getpid())).set(1)
    server.start()
    if spec.demo is not None and os.environ.get("KEQUN_DEMO") == "1":
        def demo() -> None:
            try:
                spec.demo(ctx)
            except Exception:
                log.exception("demo data for %s failed", spec.name)
        ctx.start_background(demo, f"{spec.name}-demo")
    try:
        return serve_forever(server)
    finally:
        ctx.close()
