"""Demo data for `kequn up`: stock for the physical gifts, this month's budgets
of every budget group in the catalog, and a few claims for the tiering demo's
customers CUST-0000001.. (skipped, with a log line, if tiering is not up or does not know them).
Idempotent: every mutation carries a fixed request_id."""
from __future__ import annotations

import logging

from services.common.errors import KequnError
from services.common.logging import mask_customer_id

log = logging.getLogger(__name__)

DEMO_STOCK = 500                      # units of each physical gift
DEMO_BUDGET_FEN = 50_000_000          # ¥500,000 per group per month
# The tiering demo's customers are CUST-0000001, CUST-0000002, ... (services/tiering/demo.py).
DEMO_CUSTOMERS = [f"CUST-{n:07d}" for n in range(1, 21)]
DEMO_CLAIMS = 5
ACTOR = "demo"


def load_demo(ctx) -> None:
    service = ctx.benefits
    policy = service.policy()
    now = service._clock()
    for benefit_id, definition in policy.catalog.items():
        if definition.physical:
            service.adjust_inventory(benefit_id, DEMO_STOCK, "demo: opening stock 期初入库",
                                     request_id=f"demo-stock-{benefit_id}", actor=ACTOR)
    month = policy.calendar.period_key("MONTH", now)
    for group in sorted({d.budget_group for d in policy.catalog.values() if d.budget_group}):
        service.set_budget(group, month, DEMO_BUDGET_FEN, request_id=f"demo-budget-{group}-{month}", actor=ACTOR)
    made = 0
    for customer_id in DEMO_CUSTOMERS:
        if made >= DEMO_CLAIMS:
            break
        try:
            service.credit_points(customer_id, 20_000, "demo: welcome points", f"demo-points-{customer_id}", ACTOR)
            if service.list_claims(customer_id)[0]:  # claimed by an earlier run: keep the demo idempotent
                made += 1
                continue
            shown = service.list_entitlements(customer_id).entitlements
            first = next((e for e in shown if e.remaining != 0 and e.next_claim_at is None), None)
            if first is None:
                continue
            channels = policy.catalog[first.benefit_id].channels or ("MOBILE",)
            claim = service.claim(customer_id, first.benefit_id, channels[0],
                                  f"demo-claim-{customer_id}-{first.benefit_id}", ACTOR)
            made += 1
            log.info("demo claim %s: %s %s (%s)", claim.claim_id, mask_customer_id(customer_id), first.benefit_id,
                     first.rule_id, extra={"fields": {"customer_id": customer_id}})
        except KequnError as exc:  # tiering down, customer unknown, quota used: the demo goes on
            # Error messages may name the customer too: mask it there as well.
            log.info("demo claim for %s skipped: %s", mask_customer_id(customer_id),
                     exc.message.replace(customer_id, mask_customer_id(customer_id)),
                     extra={"fields": {"customer_id": customer_id}})
