"""Demo data for `kequn up`: period "2025" scored for the staff of assignment's demo.

The people scored are exactly those assignment's demo creates (services/assignment/demo.py,
`staff_rows`): same ids, roles and branches, so HR never sees a score for someone without a
book. Services never import each other and assignment has no RPC that lists its staff, so the
small id scheme is repeated in `demo_staff`; tests/unit/scoring/test_scoring_demo_roster.py
fails if the two drift apart.

Values are drawn (seeded, so the same every time) around each card's own targets, so a changed
card gets sensible demo values without touching this file. Counts of book customers (wealth
managers' penetration and maintenance) are drawn as shares of the person's real book, read from
assignment's GetBook; those roles are scored last, once assignment's demo has placed its customers.
"""
from __future__ import annotations

import logging
import random
import threading
import time
from decimal import Decimal
from typing import Callable

import grpc

from services.common.errors import AlreadyExists
from services.scoring.domain import Indicator, Scorecard, needs_book_size
from services.scoring.service import ScoringService, ValueInput

log = logging.getLogger(__name__)
PERIOD = ("2025", "2025-01-01", "2025-12-31", "2026-01-31")
ROLES = ("BRANCH_HEAD", "WEALTH_ADVISOR", "LOBBY_MANAGER", "LOAN_MANAGER", "REMOTE_MANAGER", "WEALTH_MANAGER")
BookSizes = Callable[[str], "int | None"]


def demo_staff(role: str | None = None) -> list[tuple[str, str, str]]:
    """(staff_id, branch_id, role) of assignment's demo, the roles that have a scorecard
    (its approvers have none). Org: BR-1..2 → SUB-01..10 (5 each) → OUT-001..020 (2 each)."""
    rows = []
    for b in (1, 2):
        rows += [(f"WA-{b}-{i}", f"BR-{b}", "WEALTH_ADVISOR") for i in (1, 2, 3)]
        rows.append((f"RM-{b}", f"BR-{b}", "REMOTE_MANAGER"))
    for s in range(1, 11):
        sub = f"SUB-{s:02}"
        rows += [(f"HEAD-{s:02}", sub, "BRANCH_HEAD"), (f"LOAN-{s:02}", sub, "LOAN_MANAGER")]
        rows += [(f"WM-{s:02}-{i}", sub, "WEALTH_MANAGER") for i in (1, 2, 3)]
    for o in range(1, 21):
        rows += [(f"LM-{o:03}-{i}", f"OUT-{o:03}", "LOBBY_MANAGER") for i in (1, 2)]
    return [row for row in rows if role is None or row[2] == role]


def _draw(rng: random.Random, ind: Indicator, card: Scorecard, book_size: int | None) -> dict[str, Decimal]:
    def factor(lo: float, hi: float) -> Decimal:
        return Decimal(str(round(rng.uniform(lo, hi), 4)))

    def around(centre: Decimal, lo=0.4, hi=1.6, places="0.01") -> Decimal:
        return (centre * factor(lo, hi)).quantize(Decimal(places))
    if ind.method == "RATING":
        return {ind.id: around(card.full_marks(ind), 0.6, 1.0, "0.1")}
    if ind.method in ("POINTS", "CONVERSION"):
        share = ind.target / len(ind.rates)
        return {f"{ind.id}.{c}": around(share / Decimal(rate.numerator) * rate.denominator, 0.3, 1.5, "1")
                for c, rate in ind.rates.items()}
    if ind.method in ("DEDUCTION", "BONUS"):
        if ind.of:
            return {}
        if ind.normalise_by:  # customers of the person's book: a share of it around the card's target
            share = min(Decimal(1), (ind.target or Decimal("0.5")) * factor(0.6, 1.3))
            return {ind.id: (share * (book_size or 0)).quantize(Decimal("1"))}
        return {ind.id: Decimal(rng.choice((0, 0, 0, 1, 2, 5)))}
    if ind.method == "FULL_MARKS":
        return {}
    # no target: counts around 100 (fewer, around 5, where lower is better: complaints)
    centre = ind.target if ind.target is not None else Decimal(5 if ind.direction == "lower" else 100)
    if ind.maximum is not None and centre > ind.maximum / 2:  # a declared range (shares: 0..1)
        centre = ind.maximum / 2
    places = "0.0001" if centre < 1 else "1"
    value = around(centre, 0.5, 1.6, places)
    if ind.maximum is not None:
        value = min(value, ind.maximum)
    return {ind.id: value}


def demo_values(card: Scorecard, book_size: BookSizes | None = None,
                seed: int = 2025) -> tuple[list[ValueInput], list[ValueInput]]:
    """(metrics, ratings) for the demo staff of the card's role; `book_size(staff_id)` for
    indicators normalised by the book (the same random draws whatever the sizes)."""
    rng = random.Random(f"{seed}:{card.role}")
    needs_book = needs_book_size(card) and book_size is not None
    metrics, ratings = [], []
    for staff_id, branch, role in demo_staff(card.role):
        size = book_size(staff_id) if needs_book else None
        for ind in card.indicators:
            for key, value in _draw(rng, ind, card, size).items():
                item = ValueInput(staff_id, role, branch, key, format(value, "f"))
                (ratings if ind.method == "RATING" else metrics).append(item)
    return metrics, ratings


def load_into(service: ScoringService, books_ready: Callable[[], bool] | None = None, actor: str = "demo") -> bool:
    """Creates period 2025 and scores every demo role not scored in it yet (so a restart
    finishes what a stop interrupted); False if there was nothing to do. Roles scored on
    book sizes wait for `books_ready()` (False: stop, the server is shutting down)."""
    try:
        service.create_period(*PERIOD, actor=actor)
    except AlreadyExists:
        if service.get_period(PERIOD[0]).status == "FINALIZED":
            return False
    todo = [service.scorecards.active(role) for role in ROLES
            if not service.list_scores(PERIOD[0], role=role, page_size=1).scores]
    for card in sorted(todo, key=needs_book_size):  # the roles that wait for books last
        if needs_book_size(card) and books_ready is not None and not books_ready():
            return True
        metrics, ratings = demo_values(card, service.book_size)
        for items, are_ratings in ((metrics, False), (ratings, True)):
            if items:
                service.submit(PERIOD[0], items, ratings=are_ratings, actor=actor)
        _calculate(service, card.role)
    return bool(todo)


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


def wait_for_locked_books(books, staff_ids: list[str], stopping: threading.Event,
                          poll: float = 2.0, limit: float = 600.0) -> bool:
    """Until one of these books is locked: assignment's demo opens BR-2's lock period right
    after placing every customer, so from then on the sizes are the locked books' (what a
    wealth manager is scored on). After `limit` the books are taken as they are.
    False if `stopping` was set."""
    deadline = time.monotonic() + limit
    while not stopping.is_set():
        try:
            if any(book is not None and book.locked for book in map(books.book, staff_ids)):
                return True
        except grpc.RpcError as exc:
            log.info("demo: assignment not answering GetBook yet (%s)", exc.code().name)
        if time.monotonic() > deadline:
            log.warning("demo: no locked book after %.0f s; scoring wealth managers on the books as they are", limit)
            return True
        stopping.wait(poll)
    return False


def load_demo(ctx) -> None:
    """`kequn up` (KEQUN_DEMO=1): runs in the server's background; metrics stay with the server's service."""
    from services.scoring.books import AssignmentBooks
    from services.scoring.scorecards import RuleStoreScorecards

    books = AssignmentBooks(ctx.channel("assignment"))
    service = ScoringService(ctx.session_factory, RuleStoreScorecards(ctx.rules), books)
    managers = [staff_id for staff_id, _, _ in demo_staff("WEALTH_MANAGER")]
    if load_into(service, lambda: wait_for_locked_books(books, managers, ctx.stopping)):
        log.info("demo: scoring period %s loaded and calculated", PERIOD[0])
