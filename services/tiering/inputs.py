"""What a stored decision saw, kept beside it (``tiering_decisions.input``)
so that any decision can be explained and re-evaluated (ExplainDecision) and
a candidate ruleset can be run against every customer's latest snapshot
(SimulatePopulation).

One compact JSON array per decision, positional to keep the nightly batch
cheap (no key names, encoded in one ``json.dumps``):

    [FORMAT, snapshot fields (SNAPSHOT_FIELDS order, holdings as
     [[branch, fen], ...], attributes as {k: v}), state before or null
     ([tier, segments, flags, home_branch_id, below_count, last_below_as_of,
       group_keys as [[key, value], ...]]),
     groups ruleset name, groups ruleset version,
     the group keys the decision gave ([[key, value], ...])]

The tier scheme's name and version are columns of the decision already.
"""
from __future__ import annotations

import json
from collections import namedtuple
from dataclasses import dataclass
from typing import Any

from .domain import CustomerState, Holding, Snapshot

FORMAT = 1
SNAPSHOT_FIELDS = (
    "customer_id", "as_of", "annual_avg_aum_fen", "monthly_avg_aum_fen", "point_in_time_aum_fen",
    "previous_annual_avg_aum_fen", "holdings", "age", "has_personal_loan", "card_level", "annual_card_spend_fen",
    "payroll_employer_id", "is_merchant", "has_social_security_card", "mobile_banking_active", "car_owner",
    "has_school_age_child", "last_customer_txn_date", "other_bank_vip", "quality_mortgage", "attributes",
)
# The snapshot's fields by name without building a Snapshot (rule_facts reads
# attributes only): what the population simulation decodes a million times.
SnapshotValues = namedtuple("SnapshotValues", SNAPSHOT_FIELDS)
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def encode(s: Snapshot, before: CustomerState | None, groups: tuple[str, int],
           keys: tuple[tuple[str, str], ...] = ()) -> str:
    snapshot = [s.customer_id, s.as_of, s.annual_avg_aum_fen, s.monthly_avg_aum_fen, s.point_in_time_aum_fen,
                s.previous_annual_avg_aum_fen, [[h.branch_id, h.aum_fen] for h in s.holdings], s.age,
                s.has_personal_loan, s.card_level, s.annual_card_spend_fen, s.payroll_employer_id, s.is_merchant,
                s.has_social_security_card, s.mobile_banking_active, s.car_owner, s.has_school_age_child,
                s.last_customer_txn_date, s.other_bank_vip, s.quality_mortgage,
                dict(s.attributes) if s.attributes else {}]
    state = None if before is None else [before.tier, list(before.segments), list(before.flags),
                                         before.home_branch_id, before.below_count, before.last_below_as_of,
                                         [list(pair) for pair in before.group_keys]]
    return _dumps([FORMAT, snapshot, state, groups[0], groups[1], [list(pair) for pair in keys]])


def snapshot_of(values: list[Any]) -> Snapshot:
    fields = dict(zip(SNAPSHOT_FIELDS, values))
    fields["holdings"] = tuple(Holding(b, fen) for b, fen in fields["holdings"])
    return Snapshot(**fields)


@dataclass(frozen=True)
class DecisionInput:
    snapshot: Snapshot
    before: CustomerState | None
    groups: tuple[str, int]                   # groups ruleset and version that decided
    group_keys: tuple[tuple[str, str], ...]   # the group keys the decision gave


def _pairs(values) -> tuple[tuple[str, str], ...]:
    return tuple((str(k), str(v)) for k, v in values)


def decode(text: str) -> DecisionInput:
    fmt, snapshot, state, groups_name, groups_version, keys = json.loads(text)
    if fmt != FORMAT:
        raise ValueError(f"unknown decision input format {fmt}")
    s = snapshot_of(snapshot)
    before = None if state is None else CustomerState(s.customer_id, state[0], tuple(state[1]), tuple(state[2]),
                                                      state[3], state[4], state[5], _pairs(state[6]))
    return DecisionInput(s, before, (groups_name, groups_version), _pairs(keys))
