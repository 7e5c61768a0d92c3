"""Explanation -> kequn.tiering.v1.DecisionExplanation (the protobuf edge of explain.py)."""
from __future__ import annotations

from kequn.common.v1 import common_pb2
from kequn.tiering.v1 import tiering_pb2

from .domain import Snapshot
from .explain import Explanation


def snapshot_to_proto(s: Snapshot) -> tiering_pb2.CustomerSnapshot:
    c = tiering_pb2.CustomerSnapshot(
        customer_id=s.customer_id, as_of=s.as_of, annual_avg_aum_fen=s.annual_avg_aum_fen,
        monthly_avg_aum_fen=s.monthly_avg_aum_fen, point_in_time_aum_fen=s.point_in_time_aum_fen,
        holdings=[tiering_pb2.BranchHolding(branch_id=h.branch_id, aum_fen=h.aum_fen) for h in s.holdings],
        age=s.age, has_personal_loan=s.has_personal_loan, card_level=s.card_level,
        annual_card_spend_fen=s.annual_card_spend_fen, payroll_employer_id=s.payroll_employer_id,
        is_merchant=s.is_merchant, has_social_security_card=s.has_social_security_card,
        mobile_banking_active=s.mobile_banking_active, car_owner=s.car_owner,
        has_school_age_child=s.has_school_age_child, last_customer_txn_date=s.last_customer_txn_date,
        other_bank_vip=s.other_bank_vip, quality_mortgage=s.quality_mortgage, attributes=dict(s.attributes))
    if s.previous_annual_avg_aum_fen is not None:
        c.previous_annual_avg_aum_fen = s.previous_annual_avg_aum_fen
    return c


def explanation_to_proto(e: Explanation, decision: tiering_pb2.TierDecision) -> tiering_pb2.DecisionExplanation:
    return tiering_pb2.DecisionExplanation(
        decision=decision, snapshot=snapshot_to_proto(e.snapshot),
        fired_rules=[tiering_pb2.ExplainedRule(rule_id=r.rule_id, ruleset=r.ruleset, version=r.version,
                                               description=r.description) for r in e.fired],
        reproduced=e.reproduced, difference=e.difference,
        rulesets=[common_pb2.RulesetRef(name=n, version=v) for n, v in e.rulesets],
        previous_tier=e.before.tier if e.before else "",
        previous_below_count=e.before.below_count if e.before else 0, group_keys=dict(e.group_keys))
