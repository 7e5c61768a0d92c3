"""What benefits writes to its audit chain (`benefits_audit_log`): one record
per changed business object, as plain JSON (ids, codes, amounts in fen or
points). Subjects: claim/<id>, benefit/<id>, inventory/<benefit>,
budget/<group>/<period>, points/<customer>."""
from __future__ import annotations

from typing import Any, Mapping

CLAIM_FIELDS = ("claim_id", "request_id", "customer_id", "benefit_id", "channel", "status", "period_key",
                "points_spent", "budget_group", "budget_period", "budget_spent_fen", "rule_id", "ruleset_version")


def entry(action: str, subject: str, before: Any, after: Any, reason: str = "") -> dict:
    return {"action": action, "subject": subject, "before": before, "after": after, "reason": reason}


def claim_entry(action: str, claim: Mapping[str, Any], before: Any = None, reason: str = "") -> dict:
    return entry(action, f"claim/{claim['claim_id']}", before, {k: claim[k] for k in CLAIM_FIELDS if k in claim},
                 reason)


def stock_entry(action: str, benefit_id: str, after_row, on_hand_delta: int, reserved_delta: int,
                reason: str = "") -> dict:
    """`after_row` is (on_hand, reserved) after the change."""
    on_hand, reserved = after_row
    return entry(action, f"inventory/{benefit_id}",
                 {"on_hand": on_hand - on_hand_delta, "reserved": reserved - reserved_delta},
                 {"on_hand": on_hand, "reserved": reserved}, reason)


def budget_entry(action: str, group: str, period: str, after_row, amount_delta: int, spent_delta: int,
                 existed: bool = True, reason: str = "") -> dict:
    """`after_row` is (amount_fen, spent_fen) after the change."""
    amount, spent = after_row
    before = {"amount_fen": amount - amount_delta, "spent_fen": spent - spent_delta} if existed else None
    return entry(action, f"budget/{group}/{period}", before, {"amount_fen": amount, "spent_fen": spent}, reason)


def points_entry(action: str, customer_id: str, balance_after: int, delta: int, reason: str = "") -> dict:
    return entry(action, f"points/{customer_id}", {"balance": balance_after - delta}, {"balance": balance_after},
                 reason)
