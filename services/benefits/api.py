"""The gRPC servicer: proto ↔ plain values. Errors are services.common.errors,
mapped to status codes by the server's error interceptor."""
from __future__ import annotations

from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp

from kequn.benefits.v1 import benefits_pb2 as pb
from kequn.benefits.v1 import benefits_pb2_grpc
from kequn.common.v1 import common_pb2
from services.common.auth import current_principal

from .domain import QUOTA_PERIODS, Entitlement
from .service import BenefitsService, BudgetView, CatalogEntry, ClaimRecord, InventoryView

SERVICE_NAME = "kequn.benefits.v1.BenefitsService"
_STATUS = {"CLAIMED": pb.CLAIM_STATUS_CLAIMED, "FULFILLED": pb.CLAIM_STATUS_FULFILLED,
           "CANCELLED": pb.CLAIM_STATUS_CANCELLED}
_PERIOD_TO_PB = {p: getattr(pb, f"QUOTA_PERIOD_{p}") for p in QUOTA_PERIODS}
_PERIOD_FROM_PB = {v: k for k, v in _PERIOD_TO_PB.items()}


def _ts(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def _actor() -> str:
    return current_principal().name


def claim_pb(c: ClaimRecord) -> pb.Claim:
    return pb.Claim(
        claim_id=c.claim_id, customer_id=c.customer_id, benefit_id=c.benefit_id, status=_STATUS[c.status],
        claimed_at=_ts(c.claimed_at), channel=c.channel, request_id=c.request_id, points_spent=c.points_spent,
        budget_spent_fen=c.budget_spent_fen, budget_group=c.budget_group, fulfilled_at=_ts(c.fulfilled_at),
        cancelled_at=_ts(c.cancelled_at), cancel_reason=c.cancel_reason)


def entitlement_pb(e: Entitlement, ruleset: str, version: int) -> pb.Entitlement:
    return pb.Entitlement(
        benefit_id=e.benefit_id, name=e.name, kind=e.kind, reason=e.reason, remaining=e.remaining,
        valid_until=e.valid_until.isoformat() if e.valid_until else "", points_cost=e.points_cost,
        ruleset=common_pb2.RulesetRef(name=ruleset, version=version), rule_id=e.rule_id, locked=e.locked,
        unlock_tier=e.unlock_tier, unlock_gap_fen=e.unlock_gap_fen, next_claim_at=_ts(e.next_claim_at),
        reason_text=e.reason_text, reason_text_zh=e.reason_text_zh,
        quota_period=_PERIOD_TO_PB.get(e.quota_period, pb.QUOTA_PERIOD_UNSPECIFIED), channels=list(e.channels),
        in_stock=e.in_stock)


def inventory_pb(v: InventoryView) -> pb.Inventory:
    return pb.Inventory(benefit_id=v.benefit_id, on_hand=v.on_hand, reserved=v.reserved, available=v.available,
                        updated_at=_ts(v.updated_at))


def budget_pb(v: BudgetView) -> pb.Budget:
    return pb.Budget(group=v.group, period=v.period, amount_fen=v.amount_fen, spent_fen=v.spent_fen,
                     remaining_fen=v.remaining_fen)


def benefit_entry(b: pb.Benefit) -> dict:
    """A proto Benefit as a catalog entry (the shape parse_definition checks)."""
    return {
        "name": b.name, "kind": b.kind, "eligibility_rule": b.eligibility_rule, "valid_from": b.valid_from,
        "valid_until": b.valid_until, "quota_per_period": b.quota_per_period,
        "quota_period": _PERIOD_FROM_PB.get(b.quota_period, "MONTH"), "cooldown_seconds": b.cooldown_seconds,
        "channels": list(b.channels), "points_cost": b.points_cost, "physical": b.physical,
        "budget_group": b.budget_group, "unit_cost_fen": b.unit_cost_fen, "active": b.active,
        "description": b.description,
    }


def catalog_pb(c: CatalogEntry) -> pb.Benefit:
    b = benefit_pb(c.definition.benefit_id, c.definition)
    b.eligibility_text, b.eligibility_text_zh, b.in_stock = c.eligibility_text, c.eligibility_text_zh, c.in_stock
    return b


def benefit_pb(benefit_id: str, d) -> pb.Benefit:
    return pb.Benefit(
        benefit_id=benefit_id, name=d.name, kind=d.kind, eligibility_rule=d.eligibility_rule,
        valid_from=d.valid_from.isoformat() if d.valid_from else "",
        valid_until=d.valid_until.isoformat() if d.valid_until else "", quota_per_period=d.quota_per_period,
        quota_period=_PERIOD_TO_PB[d.quota_period], cooldown_seconds=d.cooldown_seconds, channels=list(d.channels),
        points_cost=d.points_cost, physical=d.physical, budget_group=d.budget_group,
        unit_cost_fen=d.unit_cost_fen, active=d.active, description=d.description)


class BenefitsApi(benefits_pb2_grpc.BenefitsServiceServicer):
    def __init__(self, service: BenefitsService) -> None:
        self.service = service

    def ListEntitlements(self, request, context):
        view = self.service.list_entitlements(request.customer_id, request.include_locked)
        return pb.ListEntitlementsResponse(
            customer_id=view.customer_id, tier=view.tier,
            entitlements=[entitlement_pb(e, view.ruleset, view.version) for e in view.entitlements])

    def ClaimBenefit(self, request, context):
        return claim_pb(self.service.claim(request.customer_id, request.benefit_id, request.channel,
                                           request.request_id, _actor()))

    def CancelClaim(self, request, context):
        return claim_pb(self.service.cancel(request.claim_id, request.reason, request.request_id, _actor()))

    def FulfillClaim(self, request, context):
        return pb.FulfillClaimResponse(claim=claim_pb(self.service.fulfill(request.claim_id, _actor())))

    def ListClaims(self, request, context):
        records, token = self.service.list_claims(request.customer_id, request.page_size, request.page_token)
        return pb.ListClaimsResponse(claims=[claim_pb(c) for c in records], next_page_token=token)

    def UpsertBenefit(self, request, context):
        b = request.benefit
        definition, created = self.service.upsert_benefit(b.benefit_id, benefit_entry(b), request.request_id,
                                                          _actor())
        return pb.UpsertBenefitResponse(benefit=benefit_pb(b.benefit_id, definition), created=created)

    def AdjustInventory(self, request, context):
        view = self.service.adjust_inventory(request.benefit_id, request.delta, request.reason, request.request_id,
                                             _actor())
        return pb.AdjustInventoryResponse(inventory=inventory_pb(view))

    def GetInventory(self, request, context):
        return pb.GetInventoryResponse(inventory=inventory_pb(self.service.get_inventory(request.benefit_id)))

    def SetBudget(self, request, context):
        view = self.service.set_budget(request.group, request.period, request.amount_fen, request.request_id,
                                       _actor())
        return pb.SetBudgetResponse(budget=budget_pb(view))

    def GetBudget(self, request, context):
        return pb.GetBudgetResponse(budget=budget_pb(self.service.get_budget(request.group, request.period)))

    def CreditPoints(self, request, context):
        balance = self.service.credit_points(request.customer_id, request.points, request.reason,
                                             request.request_id, _actor())
        return pb.CreditPointsResponse(points_balance=pb.PointsBalance(customer_id=request.customer_id,
                                                                       balance=balance))

    def DebitPoints(self, request, context):
        balance = self.service.debit_points(request.customer_id, request.points, request.reason,
                                            request.request_id, _actor())
        return pb.DebitPointsResponse(points_balance=pb.PointsBalance(customer_id=request.customer_id,
                                                                      balance=balance))

    def GetPointsBalance(self, request, context):
        balance = self.service.points_balance(request.customer_id)
        return pb.GetPointsBalanceResponse(points_balance=pb.PointsBalance(customer_id=request.customer_id,
                                                                           balance=balance))

    def ListBenefits(self, request, context):
        entries, token = self.service.list_benefits(request.include_inactive, request.page_size, request.page_token)
        return pb.ListBenefitsResponse(benefits=[catalog_pb(c) for c in entries], next_page_token=token)

    def GetBenefit(self, request, context):
        return pb.GetBenefitResponse(benefit=catalog_pb(self.service.get_benefit(request.benefit_id)))

    def Reconcile(self, request, context):
        found = self.service.reconcile()
        return pb.ReconcileResponse(ok=not found, mismatches=[
            pb.Mismatch(kind=m.kind, subject=m.subject, expected=m.expected, actual=m.actual, message=m.message)
            for m in found])

    def SimulateTierChanges(self, request_iterator, context):
        """Dry run of a tier or groups candidate's impact on entitlements and budgets (impact.py)."""
        from .impact import SimulatedProfile, entitlement_impact
        simulated = [SimulatedProfile(o.customer_id, o.tier, o.groups_changed, tuple(o.segments), tuple(o.flags))
                     for message in request_iterator for o in message.outcomes]
        impact = entitlement_impact(self.service, simulated)
        return pb.SimulateTierChangesResponse(
            benefits=[pb.BenefitImpact(benefit_id=b, gained=impact.gained[b], lost=impact.lost[b])
                      for b in sorted(set(impact.gained) | set(impact.lost))],
            budgets=[pb.BudgetImpact(**b) for b in impact.budgets], simulated=impact.simulated,
            unknown=impact.unknown)
