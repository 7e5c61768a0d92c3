"""Following the feed: batches and cursor stored together; a restart resumes exactly."""
from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import func, select

from services.assignment import store as t
from services.assignment.feed import FeedFollower

from .conftest import org


@dataclass
class FakeTierChange:
    """What the feed follower reads off a TierChange (the port tests feed directly)."""

    cursor: int
    customer_id: str
    tier: str
    home_branch_id: str = "OUT-111"
    segments: tuple = field(default_factory=tuple)


def to_change(m):
    from services.assignment.service import CustomerChange
    return CustomerChange(cursor=m.cursor, customer_id=m.customer_id, tier=m.tier, segments=m.segments,
                          home_branch_id=m.home_branch_id)


class Broken(Exception):
    pass


def feed(entries, break_after=None):
    for i, e in enumerate(entries):
        if break_after is not None and i == break_after:
            raise Broken("connection lost")
        yield e


def test_restart_mid_feed_loses_and_repeats_nothing(make_service):
    # Customers change tier several times; cursors have gaps, as tiering's may.
    entries = []
    cursor = 0
    for rnd, tier in enumerate(("LONG_TAIL", "AFFLUENT", "WEALTH")):
        for i in range(700):
            cursor += 1 + (i % 3 == 0)
            entries.append(FakeTierChange(cursor, f"C{i:04}", tier if i % 2 else "LONG_TAIL"))
    first = make_service()
    org(first)
    first.upsert_staff("hr", "RM-1", "BR-1", "REMOTE_MANAGER", True)
    first.upsert_staff("hr", "WM-1", "SUB-11", "WEALTH_MANAGER", True)
    first.upsert_staff("hr", "WM-2", "SUB-11", "WEALTH_MANAGER", True)
    follower = FeedFollower(first, batch_size=128, convert=to_change)
    try:
        follower.consume(feed(entries, break_after=1000))
    except Broken:
        pass
    stored = first.feed_cursor()
    assert 0 < stored < entries[-1].cursor

    # "Restart": a new service on the same database resumes after its stored cursor,
    # and the tiering server replays everything after it (plus, here, a little before).
    second = make_service()
    replay = [e for e in entries if e.cursor > stored - 50]
    again = FeedFollower(second, batch_size=128, convert=to_change)
    again.consume(feed(replay))
    assert second.feed_cursor() == entries[-1].cursor
    with second.engine.connect() as conn:
        rows = dict(conn.execute(select(t.customers.c.customer_id, t.customers.c.tier)).all())
        count = conn.execute(select(func.count()).select_from(t.customers)).scalar_one()
    latest = {}
    for e in entries:
        latest[e.customer_id] = e.tier
    assert rows == latest and count == 700
    run = second.run_assignment("system", only_changed=True)
    placed = sum(second.get_book(s, 0, "").size for s in ("RM-1", "WM-1", "WM-2"))
    assert placed == 700 and run.unplaced == []
