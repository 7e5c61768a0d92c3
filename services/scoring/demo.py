"""Demo data for `kequn up`: a calculated period "2025" with values for staff of every role.

Staff ids follow `<ROLE>-<branch>-<n>` (e.g. WM-OUT-001-1) over outlets OUT-001..003
and, for the branch-level wealth advisors, BR-01. Values are drawn (seeded, so
the same every time) around each card's own targets, so a changed card gets
sensible demo values without touching this file.
"""
from __future__ import annotations

import logging
import random
import time
from decimal import Decimal

from services.common.errors import AlreadyExists
from services.scoring.domain import Indicator, Scorecard
from services.scoring.service import ScoringService, ValueInput

log = logging.getLogger(__name__)
PERIOD = ("2025", "2025-01-01", "2025-12-31", "2026-01-31")
OUTLETS = ("OUT-001", "OUT-002", "OUT-003")
STAFF = {  # role -> (id prefix, branches, people per branch)
    "BRANCH_HEAD": ("BH", OUTLETS, 1),
    "WEALTH_ADVISOR": ("WA", ("BR-01",), 3),
    "WEALTH_MANAGER": ("WM", OUTLETS, 3),
    "LOBBY_MANAGER": ("LM", OUTLETS, 2),
    "LOAN_MANAGER": ("LN", OUTLETS, 2),
    "REMOTE_MANAGER": ("RM", OUTLETS, 2),
}


def demo_staff(role: str) -> list[tuple[str, str]]:
    prefix, branches, per_branch = STAFF[role]
    return [(f"{prefix}-{b}-{n}", b) for b in branches for n in range(1, per_branch + 1)]


def _draw(rng: random.Random, ind: Indicator, card: Scorecard) -> dict[str, Decimal]:
    def around(centre: Decimal, lo=0.4, hi=1.6, places="0.01") -> Decimal:
        return (centre * Decimal(str(round(rng.uniform(lo, hi), 4)))).quantize(Decimal(places))
    if ind.method == "RATING":
        return {ind.id: around(card.full_marks(ind), 0.6, 1.0, "0.1")}
    if ind.method in ("POINTS", "CONVERSION"):
        share = ind.target / len(ind.rates)
        return {f"{ind.id}.{c}": around(share / Decimal(rate.numerator) * rate.denominator, 0.3, 1.5, "1")
                for c, rate in ind.rates.items()}
    if ind.method in ("DEDUCTION", "BONUS"):
        if ind.of:
            return {}
        if ind.normalise_by:  # a count of book customers: the book holds ~300-500
            return {ind.id: Decimal(rng.randint(50, 400))}
        return {ind.id: Decimal(rng.choice((0, 0, 0, 1, 2, 5)))}
    if ind.method == "FULL_MARKS":
        return {}
    # no target: counts around 100 (fewer, around 5, where lower is better: complaints)
    centre = ind.target if ind.target is not None else Decimal(5 if ind.direction == "lower" else 100)
    places = "0.0001" if centre < 1 else "1"
    return {ind.id: around(centre, 0.5, 1.6, places)}


def demo_values(card: Scorecard, seed: int = 2025) -> tuple[list[ValueInput], list[ValueInput]]:
    """(metrics, ratings) for the demo staff of the card's role."""
    rng = random.Random(f"{seed}:{card.role}")
    metrics, ratings = [], []
    for staff_id, branch in demo_staff(card.role):
        for ind in card.indicators:
            for key, value in _draw(rng, ind, card).items():
                item = ValueInput(staff_id, card.role, branch, key, format(value, "f"))
                (ratings if ind.method == "RATING" else metrics).append(item)
    return metrics, ratings


def load_into(service: ScoringService, actor: str = "demo") -> bool:
    """Creates and fills period 2025; False if it was there already."""
    try:
        service.create_period(*PERIOD, actor=actor)
    except AlreadyExists:
        return False
    for role in STAFF:
        metrics, ratings = demo_values(service.scorecards.active(role))
        for items, are_ratings in ((metrics, False), (ratings, True)):
            if items:
                service.submit(PERIOD[0], items, ratings=are_ratings, actor=actor)
    for role in STAFF:
        _calculate(service, role)
    return True


def _calculate(service: ScoringService, role: str, attempts: int = 10) -> None:
    # Wealth managers need book sizes from assignment, which `kequn up` starts alongside.
    for attempt in range(attempts):
        try:
            service.calculate(PERIOD[0], role)
            return
        except Exception as exc:  # noqa: BLE001 - assignment may still be starting
            log.info("demo: calculating %s failed (%s), retry %d/%d", role, exc, attempt + 1, attempts)
            time.sleep(3)
    log.warning("demo: %s not calculated: is the assignment service up?", role)


def load_demo(ctx) -> None:
    """`kequn up` (KEQUN_DEMO=1): runs in the server's background; metrics stay with the server's service."""
    from services.scoring.books import AssignmentBooks
    from services.scoring.scorecards import RuleStoreScorecards

    service = ScoringService(ctx.session_factory, RuleStoreScorecards(ctx.rules),
                             AssignmentBooks(ctx.channel("assignment")))
    if load_into(service):
        log.info("demo: scoring period %s loaded and calculated", PERIOD[0])
