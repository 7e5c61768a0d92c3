"""The business of tiering, in plain Python (DOMAIN.md §3).

What the rules decide (tier, groups, flags) comes from the rule store; this
module holds what is the same under every scheme: input validation, the facts
rules see, the home branch, the downgrade grace, the kind of change and the
gap to the next tier. Money is int fen throughout.
"""
from __future__ import annotations

import datetime as dt
import re
from functools import lru_cache
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from services.common.errors import InvalidArgument

AGE_MIN, AGE_MAX = 0, 150                  # contract range; 0 = unknown
MAX_ID_LENGTH = 100
MAX_ATTRIBUTES = 50                        # the engine allows 255 properties per fact, fields included
MAX_ATTRIBUTE_VALUE_LENGTH = 200
INT64_MAX = 2**63 - 1
ATTRIBUTE_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")

NEW, UPGRADE, DOWNGRADE, UNCHANGED = "NEW", "UPGRADE", "DOWNGRADE", "UNCHANGED"


@dataclass(frozen=True)
class Holding:
    branch_id: str
    aum_fen: int


@dataclass(frozen=True)
class Snapshot:
    """What core banking knows about a customer (CustomerSnapshot, plain)."""

    customer_id: str
    as_of: str = ""
    annual_avg_aum_fen: int = 0
    monthly_avg_aum_fen: int = 0
    point_in_time_aum_fen: int = 0
    previous_annual_avg_aum_fen: int | None = None
    holdings: tuple[Holding, ...] = ()
    age: int = 0
    has_personal_loan: bool = False
    card_level: str = ""
    annual_card_spend_fen: int = 0
    payroll_employer_id: str = ""
    is_merchant: bool = False
    has_social_security_card: bool = False
    mobile_banking_active: bool = False
    car_owner: bool = False
    has_school_age_child: bool = False
    last_customer_txn_date: str = ""
    other_bank_vip: bool = False
    quality_mortgage: bool = False
    attributes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CustomerState:
    """What tiering remembers about a customer between evaluations."""

    customer_id: str
    tier: str
    segments: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()
    home_branch_id: str = ""
    below_count: int = 0             # consecutive evaluations below the current tier
    last_below_as_of: str = ""       # as_of of the last one counted (a re-run of a day counts once)
    group_keys: tuple[tuple[str, str], ...] = ()  # what the customer's groups are claimed by (sorted pairs)


@dataclass(frozen=True)
class TierScheme:
    """The tier ruleset seen as data: tiers lowest first, the grace, and what
    it takes to enter each tier (for the gap): per tier, alternatives (any)
    of requirements (all) ``(field, minimum fen)``."""

    order: tuple[str, ...]
    grace_evaluations: int
    entry: Mapping[str, tuple[tuple[tuple[str, int], ...], ...]] = field(default_factory=dict)

    def rank(self, tier: str) -> int | None:
        try:
            return self.order.index(tier)
        except ValueError:
            return None


@dataclass(frozen=True)
class GraceOutcome:
    tier: str
    change: str
    downgrade_pending: int
    below_count: int
    last_below_as_of: str


# ---------------------------------------------------------------- validation

def parse_date(text: str) -> dt.date | None:
    if not DATE.match(text):
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        return None


def validate(s: Snapshot, card_levels: Iterable[str], prefix: str = "customer") -> None:
    """Raises InvalidArgument naming every bad field (paths like
    ``customer.holdings[1].aum_fen``).

    "Sane" holdings: each names a branch once, none is negative, and they add
    up to no more than the point-in-time assets they split by branch (checked
    when point_in_time_aum_fen is given, i.e. > 0).
    """
    bad: list[tuple[str, str]] = []
    p = f"{prefix}." if prefix else ""
    if not s.customer_id.strip():
        bad.append((f"{p}customer_id", "required"))
    elif len(s.customer_id) > MAX_ID_LENGTH:
        bad.append((f"{p}customer_id", f"at most {MAX_ID_LENGTH} characters"))
    for name in ("annual_avg_aum_fen", "monthly_avg_aum_fen", "point_in_time_aum_fen", "annual_card_spend_fen"):
        if getattr(s, name) < 0:
            bad.append((f"{p}{name}", "must not be negative"))
    if s.previous_annual_avg_aum_fen is not None and s.previous_annual_avg_aum_fen < 0:
        bad.append((f"{p}previous_annual_avg_aum_fen", "must not be negative"))
    seen: set[str] = set()
    total = 0
    for i, h in enumerate(s.holdings):
        if not h.branch_id.strip():
            bad.append((f"{p}holdings[{i}].branch_id", "required"))
        elif h.branch_id in seen:
            bad.append((f"{p}holdings[{i}].branch_id", f"branch {h.branch_id} listed twice"))
        seen.add(h.branch_id)
        if h.aum_fen < 0:
            bad.append((f"{p}holdings[{i}].aum_fen", "must not be negative"))
        else:
            total += h.aum_fen
    if total > INT64_MAX:
        bad.append((f"{p}holdings", "the holdings add up to more than an int64"))
    elif s.point_in_time_aum_fen > 0 and total > s.point_in_time_aum_fen:
        bad.append((f"{p}holdings", f"add up to {total} fen, more than point_in_time_aum_fen "
                                    f"{s.point_in_time_aum_fen}"))
    if s.card_level and s.card_level not in set(card_levels):
        bad.append((f"{p}card_level", f"unknown card level '{s.card_level}' (known: {', '.join(card_levels)})"))
    as_of = parse_date(s.as_of) if s.as_of else None
    if s.as_of and as_of is None:
        bad.append((f"{p}as_of", "not a date (YYYY-MM-DD)"))
    if s.last_customer_txn_date:
        last = parse_date(s.last_customer_txn_date)
        if last is None:
            bad.append((f"{p}last_customer_txn_date", "not a date (YYYY-MM-DD)"))
        elif as_of is not None and last > as_of:
            bad.append((f"{p}last_customer_txn_date", "after as_of"))
    if not AGE_MIN <= s.age <= AGE_MAX:
        bad.append((f"{p}age", f"must be between {AGE_MIN} and {AGE_MAX}"))
    if len(s.attributes) > MAX_ATTRIBUTES:
        bad.append((f"{p}attributes", f"at most {MAX_ATTRIBUTES} attributes"))
    for key, value in s.attributes.items():
        if not ATTRIBUTE_KEY.match(key):
            bad.append((f"{p}attributes[{key}]", "key must be letters, digits and _ (at most 64)"))
        elif len(value) > MAX_ATTRIBUTE_VALUE_LENGTH:
            bad.append((f"{p}attributes[{key}]", f"value longer than {MAX_ATTRIBUTE_VALUE_LENGTH}"))
    if bad:
        raise InvalidArgument(violations=bad)


# ---------------------------------------------------------------- facts

def change_bp(now: int, before: int | None) -> int | None:
    """(now - before) / before in basis points, rounded up, so that
    "down >= 30%" is exactly ``change_bp <= -3000`` in integer arithmetic."""
    if not before:
        return None
    return -((-(now - before) * 10_000) // before)


def rule_facts(s: Snapshot, home_branch_id: str) -> dict[str, Any]:
    """The fact every tiering ruleset sees: snapshot fields (unknowns
    absent, so ``exists`` works) plus derived integer fields."""
    days = None
    if s.last_customer_txn_date and s.as_of:
        days = (dt.date.fromisoformat(s.as_of) - dt.date.fromisoformat(s.last_customer_txn_date)).days
    return {
        "customer_id": s.customer_id,
        "annual_avg_aum_fen": s.annual_avg_aum_fen,
        "monthly_avg_aum_fen": s.monthly_avg_aum_fen,
        "point_in_time_aum_fen": s.point_in_time_aum_fen,
        "previous_annual_avg_aum_fen": s.previous_annual_avg_aum_fen,
        "age": s.age or None,
        "has_personal_loan": s.has_personal_loan,
        "card_level": s.card_level or None,
        "annual_card_spend_fen": s.annual_card_spend_fen,
        "payroll_employer_id": s.payroll_employer_id or None,
        "is_merchant": s.is_merchant,
        "has_social_security_card": s.has_social_security_card,
        "mobile_banking_active": s.mobile_banking_active,
        "car_owner": s.car_owner,
        "has_school_age_child": s.has_school_age_child,
        "other_bank_vip": s.other_bank_vip,
        "quality_mortgage": s.quality_mortgage,
        "days_since_last_txn": days,
        "annual_avg_change_bp": change_bp(s.annual_avg_aum_fen, s.previous_annual_avg_aum_fen),
        # proto3 cannot tell a monthly avg of 0 from "not sent": 0 is not a drop
        "monthly_vs_annual_change_bp": change_bp(s.monthly_avg_aum_fen, s.annual_avg_aum_fen)
        if s.monthly_avg_aum_fen else None,
        "home_branch_id": home_branch_id or None,
        "attributes": dict(s.attributes) if s.attributes else None,
    }


# ---------------------------------------------------------------- decisions

def home_branch(holdings: Sequence[Holding], current: str) -> str:
    """The outlet holding the largest share (seed 003); ties keep the current
    home branch, else the lowest id. No holdings: the current one stays."""
    if not holdings:
        return current
    top = max(h.aum_fen for h in holdings)
    tied = sorted(h.branch_id for h in holdings if h.aum_fen == top)
    return current if current in tied else tied[0]


def apply_grace(state: CustomerState | None, rule_tier: str, scheme: TierScheme, as_of: str) -> GraceOutcome:
    """Upgrade at once; downgrade only on the N-th consecutive evaluation
    below the current tier (N = scheme.grace_evaluations; 0 or 1 = at once).
    A repeat of the same as_of does not count twice. A current tier the
    scheme does not know (the scheme was replaced) is replaced at once."""
    if state is None:
        return GraceOutcome(rule_tier, NEW, 0, 0, "")
    if rule_tier == state.tier:
        return GraceOutcome(rule_tier, UNCHANGED, 0, 0, "")
    new_rank, old_rank = scheme.rank(rule_tier), scheme.rank(state.tier)
    if old_rank is None or new_rank is None:
        return GraceOutcome(rule_tier, UPGRADE if old_rank is None else DOWNGRADE, 0, 0, "")
    if new_rank > old_rank:
        return GraceOutcome(rule_tier, UPGRADE, 0, 0, "")
    counted = state.below_count if as_of and as_of == state.last_below_as_of else state.below_count + 1
    if counted >= scheme.grace_evaluations:
        return GraceOutcome(rule_tier, DOWNGRADE, 0, 0, "")
    return GraceOutcome(state.tier, UNCHANGED, scheme.grace_evaluations - counted, counted, as_of)


def next_tier(scheme: TierScheme, tier: str, facts: Mapping[str, Any]) -> tuple[str, int]:
    """The tier above ``tier`` and the fen still missing to enter it: the
    cheapest alternative, each needing its largest shortfall. ("", 0) at
    the top or for a tier the scheme does not know."""
    rank = scheme.rank(tier)
    if rank is None or rank + 1 >= len(scheme.order):
        return "", 0
    target = scheme.order[rank + 1]
    gaps = [max([0] + [minimum - int(facts.get(f) or 0) for f, minimum in requirement])
            for requirement in scheme.entry.get(target, ())]
    return target, min(gaps) if gaps else 0


@dataclass(frozen=True)
class RuleAnswer:
    """What the rulesets said about one customer."""

    tier: str
    segments: tuple[str, ...]
    flags: tuple[str, ...]
    fired: tuple[tuple[str, str, int], ...]   # (rule_id, ruleset, version)


def rule_answer(tier_eval, group_eval, tiers: tuple[str, int], groups: tuple[str, int]) -> RuleAnswer:
    """The tier scheme's and the groups ruleset's evaluations of one customer
    as one answer; ``tiers``/``groups`` are the (name, version) that gave them."""
    return RuleAnswer(
        tier=tier_eval.outcome.get("tier") or "", segments=tuple(sorted(group_eval.outcome.get("segments") or ())),
        flags=tuple(sorted(group_eval.outcome.get("flags") or ())),
        fired=tuple((f.rule_id, *tiers) for f in tier_eval.fired)
        + tuple((f.rule_id, *groups) for f in group_eval.fired))


@dataclass(frozen=True)
class Decision:
    customer_id: str
    as_of: str
    tier: str
    previous_tier: str
    change: str
    segments: tuple[str, ...]
    flags: tuple[str, ...]
    home_branch_id: str
    next_tier: str
    gap_fen: int
    downgrade_pending: int
    ruleset: str
    ruleset_version: int
    fired: tuple[tuple[str, str, int], ...]


def decide(s: Snapshot, state: CustomerState | None, answer: RuleAnswer, scheme: TierScheme,
           ruleset: tuple[str, int], home: str, facts: Mapping[str, Any]) -> tuple[Decision, CustomerState]:
    """Combines the rules' answer with the remembered state."""
    grace = apply_grace(state, answer.tier, scheme, s.as_of)
    nxt, gap = next_tier(scheme, grace.tier, facts)
    decision = Decision(
        customer_id=s.customer_id, as_of=s.as_of, tier=grace.tier,
        previous_tier=state.tier if state else "", change=grace.change,
        segments=tuple(sorted(answer.segments)), flags=tuple(sorted(answer.flags)),
        home_branch_id=home, next_tier=nxt, gap_fen=gap, downgrade_pending=grace.downgrade_pending,
        ruleset=ruleset[0], ruleset_version=ruleset[1], fired=answer.fired,
    )
    new_state = CustomerState(s.customer_id, grace.tier, decision.segments, decision.flags, home,
                              grace.below_count, grace.last_below_as_of)
    return decision, new_state


def feed_worthy(decision: Decision, state: CustomerState | None,
                group_keys: tuple[tuple[str, str], ...] | None = None) -> bool:
    """A stored decision goes to the change feed when the tier, groups, flags,
    home branch or group keys changed (or the customer is new)."""
    return (state is None or decision.tier != state.tier or decision.segments != tuple(state.segments)
            or decision.flags != tuple(state.flags) or decision.home_branch_id != state.home_branch_id
            or (group_keys is not None and group_keys != tuple(state.group_keys)))


def group_keys(s: "Snapshot", attribute_keys: Iterable[str] = ()) -> tuple[tuple[str, str], ...]:
    """The keys a customer's groups are claimed by: the payroll employer, the
    merchant's market (attributes["merchant_market_id"]) and every attribute
    the groups ruleset names in parameters.group_key_attributes. Sorted
    (key, value) pairs, non-empty values only."""
    attributes = s.attributes or {}
    found = {"payroll_employer_id": s.payroll_employer_id or "",
             "merchant_market_id": attributes.get("merchant_market_id", "")}
    for key in attribute_keys:
        found[str(key)] = attributes.get(str(key), "")
    return tuple(sorted((k, str(v)) for k, v in found.items() if v))



def project(facts: Mapping[str, Any], fields: frozenset[str] | set[str]) -> dict[str, Any]:
    """Only the fields a ruleset names (``attributes.<key>`` flattened), so
    the engine parses a few values per customer instead of every field. A
    rule can only test what it names, so the answer is the same."""
    plain, attribute_keys = _projection(frozenset(fields))
    out = {name: facts[name] for name in plain if facts.get(name) is not None}
    if attribute_keys:
        attributes = facts.get("attributes") or {}
        for name, key in attribute_keys:
            value = attributes.get(key)
            if value is not None:
                out[name] = value
    return out


@lru_cache(maxsize=64)
def _projection(fields: frozenset[str]) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """A ruleset's fields split once: plain ones, and (``attributes.k``, k)."""
    return (tuple(sorted(f for f in fields if not f.startswith("attributes."))),
            tuple(sorted((f, f[11:]) for f in fields if f.startswith("attributes."))))
