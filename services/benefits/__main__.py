"""Composition root: `python -m services.benefits` == `kequn serve benefits`."""
from __future__ import annotations

from pathlib import Path

from kequn.benefits.v1 import benefits_pb2_grpc
from services.common.audit_api import audit_servicer
from services.rules.bootstrap import Servicer, ServiceContext, ServiceSpec, run_service

from .api import SERVICE_NAME, BenefitsApi
from .demo import load_demo
from .metrics import BenefitsMetrics
from .profiles import TieringProfiles
from .rules_kind import KINDS
from . import store
from .service import BenefitsService

HERE = Path(__file__).parent


def build_benefits(ctx: ServiceContext) -> BenefitsService:
    service = BenefitsService(ctx.session_factory, ctx.rules, TieringProfiles(ctx.channel("tiering")),
                              metrics=BenefitsMetrics(ctx.registry))
    ctx.benefits = service  # type: ignore[attr-defined]  # for the demo, run in the same process
    return service


def build(ctx: ServiceContext) -> list[Servicer]:
    service = build_benefits(ctx)
    ctx.start_background(service.reconcile, "benefits-first-reconcile")  # gauges start from the database
    return [Servicer(benefits_pb2_grpc.add_BenefitsServiceServicer_to_server, BenefitsApi(service), SERVICE_NAME),
            Servicer(*audit_servicer(ctx.db, store.audit_log, "benefits"))]


SPEC = ServiceSpec(name="benefits", kinds=KINDS, rulesets_dir=HERE / "rulesets", migrations_dir=HERE / "migrations",
                   build=build, demo=load_demo)


def main() -> int:
    return run_service(SPEC)


if __name__ == "__main__":
    raise SystemExit(main())
