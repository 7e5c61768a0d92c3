"""`python -m services.assignment` == `kequn serve assignment`."""
from __future__ import annotations

import os
from pathlib import Path

from kequn.assignment.v1 import assignment_pb2_grpc
from kequn.tiering.v1 import tiering_pb2, tiering_pb2_grpc
from services.common.audit_api import audit_servicer
from services.rules.bootstrap import Servicer, ServiceContext, ServiceSpec, run_service

from . import background
from .api import SERVICE_NAME, AssignmentApi
from .demo import load_demo
from .metrics import AssignmentMetrics
from .rules_kind import KINDS
from . import store
from .service import AssignmentService

HERE = Path(__file__).parent


def build(ctx: ServiceContext) -> list[Servicer]:
    metrics = AssignmentMetrics(ctx.registry)
    service = AssignmentService(ctx.db, ctx.rules, metrics=metrics)

    def open_stream(after_cursor: int):
        stub = tiering_pb2_grpc.TieringServiceStub(ctx.channel("tiering"))
        return stub.WatchTierChanges(tiering_pb2.WatchTierChangesRequest(after_cursor=after_cursor))

    # KEQUN_ASSIGNMENT_FOLLOW_FEED=0: no feed (e.g. assignment alone, without tiering).
    follow = os.environ.get("KEQUN_ASSIGNMENT_FOLLOW_FEED", "1") != "0"
    background.start(ctx, service, metrics, open_stream if follow else None)
    return [Servicer(assignment_pb2_grpc.add_AssignmentServiceServicer_to_server, AssignmentApi(service),
                     SERVICE_NAME),
            Servicer(*audit_servicer(ctx.db, store.audit_log, "assignment"))]


SPEC = ServiceSpec(name="assignment", kinds=KINDS, rulesets_dir=HERE / "rulesets",
                   migrations_dir=HERE / "migrations", build=build, demo=load_demo)


def main() -> int:
    return run_service(SPEC)


if __name__ == "__main__":
    raise SystemExit(main())
