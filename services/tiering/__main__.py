"""Composition root: `python -m services.tiering` == `kequn serve tiering`."""
from __future__ import annotations

import gc
from pathlib import Path

from kequn.tiering.v1 import tiering_pb2_grpc
from services.common.audit_api import audit_servicer
from services.rules.bootstrap import Servicer, ServiceContext, ServiceSpec, run_service

from .api import SERVICE_NAME, TieringApi
from .demo import load_demo
from .metrics import TieringMetrics
from .population import TieringPopulation
from .rules_kind import KINDS
from . import store
from .service import TieringService

HERE = Path(__file__).parent


def tune_gc() -> None:
    """A batch chunk makes tens of thousands of short-lived objects that
    reference counting frees; the cyclic collector, at its default gen-0
    threshold of 700, ran dozens of times per chunk and re-scanned the whole
    heap (~15% of a stored batch's CPU). Startup objects are frozen out of
    its sight, and it runs every 50,000 allocations."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 10, 10)


def build(ctx: ServiceContext) -> list[Servicer]:
    metrics = TieringMetrics(ctx.registry)
    service = TieringService(ctx.session_factory, ctx.rules, metrics)
    metrics.feed_cursor.set(service.feed_cursor())  # the gauge is right from the start, not from the first write
    ctx.service = service  # type: ignore[attr-defined]  # the demo evaluates through it
    tune_gc()
    return [Servicer(tiering_pb2_grpc.add_TieringServiceServicer_to_server, TieringApi(service, ctx.stopping),
                     SERVICE_NAME),
            Servicer(*audit_servicer(ctx.db, store.audit_log, "tiering"))]


SPEC = ServiceSpec(
    name="tiering",
    kinds=KINDS,
    rulesets_dir=HERE / "rulesets",
    migrations_dir=HERE / "migrations",
    build=build,
    demo=load_demo,
    population=lambda ctx: TieringPopulation(ctx.config.database_url),
)


def main() -> int:
    return run_service(SPEC)


if __name__ == "__main__":
    raise SystemExit(main())
