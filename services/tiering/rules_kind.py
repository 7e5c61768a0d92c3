"""The kinds of ruleset tiering owns (see docs/tiering.md).

Both kinds see the same customer fact: the snapshot fields of
``CustomerSnapshot`` (empty strings, age 0 and unknown dates are absent) plus
the fields the domain derives from it (``days_since_last_txn``, the changes in
basis points), and ``attributes.<key>`` the caller sends.
"""
from __future__ import annotations

from typing import Iterable, Mapping

from services.rules.kinds import BOOL, INT, STRING, KindSpec, Problem

CUSTOMER_FIELDS = {
    "customer_id": STRING,
    "annual_avg_aum_fen": INT,
    "monthly_avg_aum_fen": INT,
    "point_in_time_aum_fen": INT,
    "previous_annual_avg_aum_fen": INT,
    "age": INT,
    "has_personal_loan": BOOL,
    "card_level": STRING,
    "annual_card_spend_fen": INT,
    "payroll_employer_id": STRING,
    "is_merchant": BOOL,
    "has_social_security_card": BOOL,
    "mobile_banking_active": BOOL,
    "car_owner": BOOL,
    "has_school_age_child": BOOL,
    "other_bank_vip": BOOL,
    "quality_mortgage": BOOL,
    # derived by services.tiering.domain.rule_facts
    "days_since_last_txn": INT,
    "annual_avg_change_bp": INT,          # vs previous_annual_avg_aum_fen, rounded up
    "monthly_vs_annual_change_bp": INT,   # monthly avg vs annual avg, rounded up
    "home_branch_id": STRING,
}

TIER_SCHEME = "tiering.tier_scheme"
CUSTOMER_GROUPS = "tiering.customer_groups"


def _check_tier_scheme(raw: Mapping) -> Iterable[Problem]:
    """A tier scheme names its tiers in order: a ``tier`` band table does so by
    itself; rule-based schemes list ``parameters.tier_order`` (lowest first),
    and every tier a rule yields must be in it."""
    params = raw.get("parameters") or {}
    grace = params.get("downgrade_grace_evaluations")
    if not isinstance(grace, int) or isinstance(grace, bool) or grace < 0:
        yield Problem("parameters.downgrade_grace_evaluations", "required: an integer >= 0 (0 disables the grace)")
    tables = [t for t in raw.get("bands") or () if (t.get("output", t.get("id"))) == "tier"]
    order = params.get("tier_order")
    if len(tables) > 1:
        yield Problem("bands", "at most one band table may yield the tier")
    if order is None and not tables:
        yield Problem("parameters.tier_order", "required when no band table yields the tier")
        return
    if order is not None:
        if not isinstance(order, list) or not order or not all(isinstance(t, str) for t in order) \
                or len(set(order)) != len(order):
            yield Problem("parameters.tier_order", "a non-empty list of distinct tier codes, lowest first")
            return
        produced = [(f"rules[{i}].then.tier", r["then"]["tier"]) for i, r in enumerate(raw.get("rules") or ())
                    if isinstance(r.get("then"), Mapping) and "tier" in r["then"]]
        if tables:
            produced += [(f"bands[0].bands[{i}].value", b.get("value")) for i, b in enumerate(tables[0]["bands"])]
        for path, tier in produced:
            if tier not in order:
                yield Problem(path, f"tier '{tier}' is not in parameters.tier_order")


def _check_customer_groups(raw: Mapping) -> Iterable[Problem]:
    """group_key_attributes: attribute names whose values travel on the feed as group keys."""
    keys = (raw.get("parameters") or {}).get("group_key_attributes", [])
    if not isinstance(keys, list):
        yield Problem("parameters.group_key_attributes", "a list of attribute names")
        return
    for i, key in enumerate(keys):
        if not isinstance(key, str) or not key or len(key) > 64:
            yield Problem(f"parameters.group_key_attributes[{i}]", "an attribute name of 1 to 64 characters")


KINDS = [
    KindSpec(
        name=TIER_SCHEME,
        service="tiering",
        fields=CUSTOMER_FIELDS,
        outputs={"tier": "scalar"},
        allow_attributes=True,
        check=_check_tier_scheme,
        description="A tier scheme: one tier per customer, plus the downgrade grace.",
        four_eyes=True,  # DOMAIN.md §7: prepared by one person, released by another
    ),
    KindSpec(
        name=CUSTOMER_GROUPS,
        service="tiering",
        fields=CUSTOMER_FIELDS,
        outputs={"segments": "list", "flags": "list"},
        allow_attributes=True,
        check=_check_customer_groups,
        description="Customer groups (segments) and flags; every matching rule adds its codes.",
    ),
]
