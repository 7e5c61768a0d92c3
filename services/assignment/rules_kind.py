"""The ruleset kinds assignment owns."""
from __future__ import annotations

import re
from typing import Iterable, Mapping

from services.rules.kinds import BOOL, INT, STRING, KindSpec, Problem

POLICY_RULESET = "assignment.policy"
LEVELS = ("BRANCH", "SUB_BRANCH", "OUTLET")  # as domain.LEVELS
SELECTOR_KEY = re.compile(r"[a-z][a-z0-9_]{0,63}")


def _check_policy(raw: Mapping) -> Iterable[Problem]:
    """Book sizes: every role with non-negative ints, initial ≤ max (0 = no limit)."""
    params = raw.get("parameters") or {}
    books = params.get("books")
    if not isinstance(books, Mapping) or not books:
        yield Problem("parameters.books", "a mapping role -> {initial, max} is required")
        return
    for role, sizes in books.items():
        path = f"parameters.books.{role}"
        if not isinstance(sizes, Mapping):
            yield Problem(path, "must be a mapping with initial and max")
            continue
        initial, maximum = sizes.get("initial"), sizes.get("max")
        for key, value in (("initial", initial), ("max", maximum)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                yield Problem(f"{path}.{key}", "must be an integer ≥ 0 (0 = no limit)")
        if isinstance(initial, int) and isinstance(maximum, int) and maximum and (not initial or initial > maximum):
            yield Problem(path, "initial must be between 1 and max when max is limited")
    hours = params.get("change_request_expiry_hours")
    if isinstance(hours, bool) or not isinstance(hours, int) or hours <= 0:
        yield Problem("parameters.change_request_expiry_hours", "must be a positive integer")
    level = params.get("approver_level", "BRANCH")
    if level not in LEVELS:
        yield Problem("parameters.approver_level", f"one of {', '.join(LEVELS)}")
    overflow = params.get("overflow_levels", 0)
    if isinstance(overflow, bool) or not isinstance(overflow, int) or not 0 <= overflow <= len(LEVELS) - 1:
        yield Problem("parameters.overflow_levels", f"an integer from 0 to {len(LEVELS) - 1}")
    selectors = params.get("group_selectors", ["tier"])
    if not isinstance(selectors, list) or not selectors:
        yield Problem("parameters.group_selectors", "a non-empty list of selector keys")
    else:
        for i, key in enumerate(selectors):
            if not isinstance(key, str) or not SELECTOR_KEY.fullmatch(key):
                yield Problem(f"parameters.group_selectors[{i}]", "a key of lowercase letters, digits and _")
    for i, role in enumerate(params.get("non_book_roles") or ()):
        if role in books:
            yield Problem(f"parameters.non_book_roles[{i}]", "a role cannot both hold a book and not")
    for i, rule in enumerate(raw.get("rules") or ()):
        for j, role in enumerate(((rule or {}).get("then") or {}).get("roles") or ()):
            if role not in books:
                yield Problem(f"rules[{i}].then.roles[{j}]", f"role {role!r} has no book size in parameters.books")


POLICY_KIND = KindSpec(
    name="assignment.policy",
    service="assignment",
    fields={
        "tier": STRING,
        "has_personal_loan": BOOL,
        "annual_card_spend_fen": INT,
        "annual_avg_aum_fen": INT,
        "card_level": STRING,
    },
    outputs={"roles": "list"},
    check=_check_policy,
    description="Which roles must hold a customer (by tier, groups, flags), and book sizes per role.",
    four_eyes=True,  # DOMAIN.md §7: prepared by one person, released by another
)

KINDS = [POLICY_KIND]
