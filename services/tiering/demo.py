"""Demo data: a deterministic synthetic customer base, tiered on `kequn up`.

Home branches are the outlets the assignment demo creates: OUT-001..OUT-020,
two per sub-branch SUB-01..SUB-10, five sub-branches per branch BR-1..BR-2
(see docs/tiering.md). ``synthetic_customers`` is also used by the benchmark
and by other services' tests.
"""
from __future__ import annotations

import datetime as dt
import logging
import random
from typing import Iterator

from .domain import Holding, Snapshot

log = logging.getLogger(__name__)

DEMO_CUSTOMERS = 10_000
DEMO_AS_OF = "2026-01-31"
OUTLETS = tuple(f"OUT-{i:03d}" for i in range(1, 21))
SUB_BRANCH_OF = {outlet: f"SUB-{(i // 2) + 1:02d}" for i, outlet in enumerate(OUTLETS)}
BRANCH_OF = {f"SUB-{s:02d}": f"BR-{1 if s <= 5 else 2}" for s in range(1, 11)}
CARD_LEVELS = ("CLASSIC", "GOLD", "PLATINUM", "BLACK")
EMPLOYERS = tuple(f"EMP-{i:03d}" for i in range(1, 41))

# share of the population and annual-avg range (fen, upper exclusive) per seed-003 tier
_TIER_MIX = (
    (0.40, 0, 1_000_000),                    # MASS
    (0.30, 1_000_000, 5_000_000),            # LONG_TAIL
    (0.18, 5_000_000, 20_000_000),           # AFFLUENT
    (0.10, 20_000_000, 600_000_000),         # WEALTH
    (0.02, 600_000_000, 3_000_000_000),      # PRIVATE_BANKING
)


def customer_id(n: int) -> str:
    return f"CUST-{n:07d}"


def synthetic_customers(n: int, seed: int = 7, as_of: str = DEMO_AS_OF, start: int = 1) -> Iterator[Snapshot]:
    """``n`` valid snapshots, the same for the same seed. Every seed-003
    tier and every customer group and flag of the default rulesets occurs
    once ``n`` is in the hundreds. A generator: nothing is held in memory."""
    rng = random.Random(seed)
    day = dt.date.fromisoformat(as_of)
    cumulative, acc = [], 0.0
    for share, low, high in _TIER_MIX:
        acc += share
        cumulative.append((acc, low, high))
    for k in range(start, start + n):
        pick = rng.random()
        low, high = next(((lo, hi) for c, lo, hi in cumulative if pick <= c), cumulative[-1][1:])
        annual = rng.randrange(low, high)
        monthly = annual * rng.randrange(30, 131) // 100
        point_in_time = annual * rng.randrange(80, 121) // 100
        outlets = rng.sample(OUTLETS, rng.choice((1, 1, 2, 3)))
        shares = [rng.randrange(1, 100) for _ in outlets]
        holdings, left = [], point_in_time
        for outlet, share in zip(outlets, shares):
            amount = point_in_time * share // sum(shares)
            holdings.append(Holding(outlet, amount))
            left -= amount
        holdings[0] = Holding(holdings[0].branch_id, holdings[0].aum_fen + left)
        card = rng.choice(("",) * 4 + CARD_LEVELS) if annual else ""
        age = rng.randrange(18, 91)
        dormant = rng.random() < 0.05
        last_txn = day - dt.timedelta(days=rng.randrange(366, 900) if dormant else rng.randrange(0, 200))
        attributes = {"cash_only": "true"} if annual < 1_000_000 and rng.random() < 0.15 else {}
        if rng.random() < 0.1:
            attributes["district"] = rng.choice(("east", "west", "north", "south"))
        yield Snapshot(
            customer_id=customer_id(k), as_of=as_of, annual_avg_aum_fen=annual, monthly_avg_aum_fen=monthly,
            point_in_time_aum_fen=point_in_time,
            previous_annual_avg_aum_fen=annual * rng.randrange(80, 160) // 100 if rng.random() < 0.7 else None,
            holdings=tuple(holdings), age=age, has_personal_loan=rng.random() < 0.15, card_level=card,
            annual_card_spend_fen=rng.randrange(0, 20_000_000) if card else 0,
            payroll_employer_id=rng.choice(EMPLOYERS) if rng.random() < 0.3 else "",
            is_merchant=rng.random() < 0.08, has_social_security_card=rng.random() < 0.4,
            mobile_banking_active=rng.random() < 0.6, car_owner=rng.random() < 0.25,
            has_school_age_child=18 < age < 55 and rng.random() < 0.35,
            last_customer_txn_date=last_txn.isoformat(), other_bank_vip=rng.random() < 0.03,
            quality_mortgage=rng.random() < 0.05, attributes=attributes,
        )


def load_demo(ctx, n: int = DEMO_CUSTOMERS, chunk: int = 500) -> int:
    """Tiers the demo population once; does nothing when it is already there.
    Each evaluation carries a request_id, so an interrupted load resumes
    without double decisions. Returns how many customers were evaluated."""
    from services.common.errors import NotFound

    from .service import EvaluateRequest, TieringService

    service = getattr(ctx, "service", None) or TieringService(ctx.session_factory, ctx.rules)
    try:
        service.get_customer_tier(customer_id(n))
        log.info("tiering demo already loaded")
        return 0
    except NotFound:
        pass
    batch: list[EvaluateRequest] = []
    for snapshot in synthetic_customers(n):
        batch.append(EvaluateRequest(snapshot, request_id=f"demo:{snapshot.customer_id}:{snapshot.as_of}"))
        if len(batch) == chunk:
            service.evaluate_batch_chunk(batch)
            batch = []
    if batch:
        service.evaluate_batch_chunk(batch)
    log.info("tiering demo: %d customers tiered", n)
    return n
