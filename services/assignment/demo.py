"""Demo data for `kequn up`: the org tree shared with the tiering demo, staff of
every role, the demo customers placed, one branch locked, a few pending
requests, and a group book by employer.

Approvals with the dev tokens: the principal `branch_approver` is placed at
the 分行 BR-2 as a staff member of role BRANCH_APPROVER (principal name = staff
id), the level the policy asks for (approver_level: BRANCH, seed 003).
The group book: WM-01-1 claims the payroll customers (代发) of the employer
most common in SUB-01 (selector payroll_employer_id, the key tiering's feed
carries), for SUB-01 and its outlets.
"""
from __future__ import annotations

import json
import logging
import time
from collections import Counter
from datetime import date

from sqlalchemy import select

from . import store as t
from .service import AssignmentService

log = logging.getLogger(__name__)
MAKER = "branch_staff"  # a dev-token principal


def org_rows():
    """(branch_id, parent, level): BR-1..2 → SUB-01..10 (5 each) → OUT-001..020 (2 each)."""
    rows = [(f"BR-{b}", "", "BRANCH") for b in (1, 2)]
    for s in range(1, 11):
        rows.append((f"SUB-{s:02}", f"BR-{(s - 1) // 5 + 1}", "SUB_BRANCH"))
    for o in range(1, 21):
        rows.append((f"OUT-{o:03}", f"SUB-{(o - 1) // 2 + 1:02}", "OUTLET"))
    return rows


def staff_rows():
    """Enough places for the tiering demo's 10,000 customers, whatever their mix."""
    rows = []
    for b in (1, 2):
        rows += [(f"WA-{b}-{i}", f"BR-{b}", "WEALTH_ADVISOR") for i in (1, 2, 3)]
        rows += [(f"RM-{b}", f"BR-{b}", "REMOTE_MANAGER"), (f"APPROVER-BR-{b}", f"BR-{b}", "BRANCH_APPROVER")]
    for s in range(1, 11):
        sub = f"SUB-{s:02}"
        rows += [(f"HEAD-{s:02}", sub, "BRANCH_HEAD"), (f"LOAN-{s:02}", sub, "LOAN_MANAGER")]
        rows += [(f"WM-{s:02}-{i}", sub, "WEALTH_MANAGER") for i in (1, 2, 3)]
    for o in range(1, 21):
        rows += [(f"LM-{o:03}-{i}", f"OUT-{o:03}", "LOBBY_MANAGER") for i in (1, 2)]
    rows.append(("branch_approver", "BR-2", "BRANCH_APPROVER"))
    return rows


def _wait_for_feed(service: AssignmentService, stopping, settle: float = 5.0, limit: float = 300.0) -> None:
    """Until the feed cursor has stood still for `settle` seconds (tiering's demo done)."""
    start, last, since = time.monotonic(), -1, time.monotonic()
    while time.monotonic() - start < limit and not stopping.is_set():
        cursor = service.feed_cursor()
        if cursor != last:
            last, since = cursor, time.monotonic()
        elif cursor > 0 and time.monotonic() - since >= settle:
            return
        stopping.wait(1.0)


def load_demo(ctx, service: AssignmentService | None = None, wait: bool = True) -> bool:
    """Returns False if the demo was already loaded."""
    service = service or AssignmentService(ctx.db, ctx.rules)
    today = date.fromisoformat(service.today())  # the bank's calendar (Asia/Shanghai)
    period = f"DEMO-{today.year}"
    with ctx.db.connect() as conn:
        if conn.execute(select(t.lock_periods.c.id).where(t.lock_periods.c.period_id == period)).first():
            return False
    for branch_id, parent, level in org_rows():
        service.upsert_branch("demo", branch_id, parent, branch_id, level)
    for staff_id, branch_id, role in staff_rows():
        service.upsert_staff("demo", staff_id, branch_id, role, True, staff_id)
    if wait:
        _wait_for_feed(service, ctx.stopping)
    run = service.run_assignment("demo")
    log.info("demo assignment: %d placed, %d unplaced", run.assigned, len(run.unplaced))
    service.open_lock_period("demo", period, "BR-2", today.isoformat(), f"{today.year}-12-31")
    # A few pending transfers in the locked branch, between wealth managers of one sub-branch.
    with ctx.db.connect() as conn:
        held = conn.execute(select(t.books.c.customer_id, t.books.c.staff_id).where(
            t.books.c.role == "WEALTH_MANAGER", t.books.c.staff_id.like("WM-06-%"))
            .order_by(t.books.c.customer_id).limit(3)).all()
    for customer_id, staff_id in held:
        target = "WM-06-3" if staff_id != "WM-06-3" else "WM-06-1"
        service.create_change_request(MAKER, customer_id, "TRANSFER", staff_id, target,
                                      "demo: rebalance books in the lock period", f"demo-{customer_id}")
    employer = _main_employer(ctx.db, {b for b, parent, _ in org_rows() if b == GROUP_SCOPE or parent == GROUP_SCOPE})
    if employer:
        _, covered = service.claim_group("demo", GROUP_MANAGER, "PAYROLL", {"payroll_employer_id": employer},
                                         "demo-payroll")
        log.info("demo group book: %s holds %d payroll customers of %s", GROUP_MANAGER, covered, employer)
    return True


GROUP_MANAGER, GROUP_SCOPE = "WM-01-1", "SUB-01"


def _main_employer(engine, units: set[str]) -> str:
    """The payroll employer with the most customers homed in `units`."""
    with engine.connect() as conn:
        rows = conn.execute(select(t.customers.c.home_branch_id, t.customers.c.group_keys).where(
            t.customers.c.segments.like("%,PAYROLL,%"))).all()
    counts = Counter(json.loads(keys or "{}").get("payroll_employer_id") for home, keys in rows if home in units)
    counts.pop(None, None)
    return min(counts, key=lambda e: (-counts[e], e)) if counts else ""
