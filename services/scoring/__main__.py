"""Composition root: `python -m services.scoring` == `kequn serve scoring`."""
from __future__ import annotations

import gc
from pathlib import Path

from kequn.scoring.v1 import scoring_pb2_grpc
from services.common.audit_api import audit_servicer
from services.rules.bootstrap import Servicer, ServiceContext, ServiceSpec, run_service
from services.scoring.api import SERVICE_NAME, ScoringApi
from services.scoring.books import AssignmentBooks
from services.scoring.demo import load_demo
from services.scoring.metrics import ScoringMetrics
from services.scoring.rules_kind import KINDS
from services.scoring.scorecards import RuleStoreScorecards
from services.scoring import store
from services.scoring.service import ScoringService

HERE = Path(__file__).parent


def tune_gc() -> None:
    """Calculations and HR pulls allocate dozens of small containers per person; with
    the default gen-0 threshold (700) the collector ran every ~10 people and, scanning
    everything loaded at start, took half the time of a pull. Start-up objects are
    frozen out of collection and collections run less often (measured in bench/)."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def build_scoring(ctx: ServiceContext) -> ScoringService:
    metrics = ScoringMetrics(ctx.registry)
    service = ScoringService(ctx.session_factory, RuleStoreScorecards(ctx.rules),
                             AssignmentBooks(ctx.channel("assignment")), metrics)
    metrics.watch_overdue(service.overdue_periods)
    return service


def build(ctx: ServiceContext) -> list[Servicer]:
    tune_gc()
    return [Servicer(scoring_pb2_grpc.add_ScoringServiceServicer_to_server, ScoringApi(build_scoring(ctx)),
                     SERVICE_NAME),
            Servicer(*audit_servicer(ctx.db, store.audit_log, "scoring"))]


SPEC = ServiceSpec(name="scoring", kinds=KINDS, rulesets_dir=HERE / "rulesets", migrations_dir=HERE / "migrations",
                   build=build, demo=load_demo)


def main() -> int:
    return run_service(SPEC)


if __name__ == "__main__":
    raise SystemExit(main())
