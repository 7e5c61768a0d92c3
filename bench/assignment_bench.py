"""Assignment benchmark on PostgreSQL (issue 4).

Full size: 1,000,000 customers, 3,000 staff, 200 outlets under 20 branches.
Default run is scaled down (--customers 100000; staff scale with it). Measures:
ingest through the feed path, the full first run, an incremental run after 1% of
customers changed tier, peak RSS; and a naive baseline (one customer at a time
through the ORM, a commit each) on a sample, in the same run, as a ratio.

    python bench/assignment_bench.py [--customers 1000000] [--baseline-sample 2000]
"""
from __future__ import annotations

import argparse
import os
import random
import resource
import secrets
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "gen" / "python")]

from sqlalchemy import delete, func, select  # noqa: E402
from sqlalchemy.orm import Session, registry  # noqa: E402

from services.assignment import store as t  # noqa: E402
from services.assignment.rules_kind import KINDS  # noqa: E402
from services.assignment.service import AssignmentService, CustomerChange  # noqa: E402
from services.common.db import make_engine, run_migrations  # noqa: E402
from services.rules.testing import runtime_for  # noqa: E402

PG = os.environ.get("KEQUN_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
# Full-size staff per unit (3,000 in all): role -> (level, people per unit of that level).
STAFF_PER_UNIT = {"WEALTH_ADVISOR": ("BRANCH", 3), "REMOTE_MANAGER": ("BRANCH", 11),
                  "BRANCH_APPROVER": ("BRANCH", 1), "BRANCH_HEAD": ("SUB_BRANCH", 1),
                  "WEALTH_MANAGER": ("SUB_BRANCH", 9), "LOAN_MANAGER": ("SUB_BRANCH", 2),
                  "LOBBY_MANAGER": ("OUTLET", 7.5)}
TIERS = [("PRIVATE_BANKING", 0.005), ("WEALTH", 0.10), ("AFFLUENT", 0.25), ("LONG_TAIL", 0.40), ("MASS", 0.245)]


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def fresh_database() -> tuple[str, callable]:
    import psycopg
    name = "kequn_bench_" + secrets.token_hex(4)
    admin = PG.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop():
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return PG.rsplit("/", 1)[0] + "/" + name, drop


def build_org(svc: AssignmentService, scale: float) -> list[str]:
    units = {"BRANCH": [], "SUB_BRANCH": [], "OUTLET": []}
    for b in range(1, 21):
        br = f"BR-{b:02}"
        units["BRANCH"].append(br)
        svc.upsert_branch("bench", br, "", br, "BRANCH")
        for s in range(1, 6):
            sub = f"SUB-{b:02}{s}"
            units["SUB_BRANCH"].append(sub)
            svc.upsert_branch("bench", sub, br, sub, "SUB_BRANCH")
            for o in range(1, 3):
                out = f"OUT-{b:02}{s}{o}"
                units["OUTLET"].append(out)
                svc.upsert_branch("bench", out, sub, out, "OUTLET")
    rows = []
    for role, (level, per_unit) in STAFF_PER_UNIT.items():
        for i, unit in enumerate(units[level]):
            # per_unit * scale people, spread so fractions add up across units
            n = int((i + 1) * per_unit * scale) - int(i * per_unit * scale)
            n = max(n, 1)  # scaled down, every unit keeps one person of each of its roles
            rows += [{"staff_id": f"{role[:4]}-{unit}-{k}", "branch_id": unit, "role": role, "active": True,
                      "name": "", "updated_at": svc.clock()} for k in range(n)]
    with svc.engine.begin() as conn:
        t.upsert(conn, t.staff, rows, ["staff_id"])
    return units["OUTLET"]


def tier_of(rnd: random.Random) -> str:
    x, acc = rnd.random(), 0.0
    for tier, share in TIERS:
        acc += share
        if x < acc:
            return tier
    return "MASS"


def changes(n: int, outlets: list[str], start_cursor: int, rnd: random.Random, ids=None):
    out = []
    for i in range(n):
        cid = ids[i] if ids is not None else f"C{i:07}"
        out.append(CustomerChange(
            cursor=start_cursor + i + 1, customer_id=cid, tier=tier_of(rnd), home_branch_id=rnd.choice(outlets),
            has_personal_loan=rnd.random() < 0.3, annual_card_spend_fen=10_000_000 if rnd.random() < 0.02 else 0,
            card_level=rnd.choice(["", "", "GOLD", "CLASSIC"])))
    return out


def ingest(svc, items, batch=20_000):
    for i in range(0, len(items), batch):
        svc.apply_changes(items[i:i + batch])


def naive_baseline(svc: AssignmentService, customer_ids: list[str]) -> float:
    """One customer at a time through the ORM: read it, its books, the candidates
    with their book sizes, insert, commit. Returns seconds."""
    class Customer: pass  # noqa: E701
    class Staff: pass  # noqa: E701
    class Book: pass  # noqa: E701
    reg = registry()
    reg.map_imperatively(Customer, t.customers)
    reg.map_imperatively(Staff, t.staff)
    reg.map_imperatively(Book, t.books)
    policy, _ = svc.policy()
    start = time.perf_counter()
    with Session(svc.engine) as session:
        parents = {b.branch_id: b.parent_branch_id for b in session.execute(select(t.branches)).all()}
        for cid in customer_ids:
            c = session.get(Customer, cid)
            held = {b.role for b in session.scalars(select(Book).where(Book.customer_id == cid))}
            for role in t.split_codes(c.roles):
                if role in held or role not in policy.books:
                    continue
                unit = c.home_branch_id
                while unit:
                    people = session.scalars(select(Staff).where(Staff.branch_id == unit, Staff.role == role,
                                                                 Staff.active.is_(True))).all()
                    if people:
                        break
                    unit = parents.get(unit)
                best = None
                for p in people if unit else []:
                    size = session.scalar(select(func.count()).select_from(Book).where(Book.staff_id == p.staff_id))
                    room = policy.books[role].has_room(size)
                    if room and (best is None or (policy.books[role].phase(size), size) < best[0]):
                        best = ((policy.books[role].phase(size), size), p.staff_id)
                if best is not None:
                    b = Book()
                    b.customer_id, b.role, b.staff_id, b.since = cid, role, best[1], svc.clock()
                    session.add(b)
            session.commit()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--customers", type=int, default=100_000)
    ap.add_argument("--baseline-sample", type=int, default=2_000)
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    scale = a.customers / 1_000_000
    url, drop = fresh_database()
    try:
        run_migrations(url, str(ROOT / "services/assignment/migrations"), "alembic_version_assignment")
        runtime = runtime_for(KINDS, ROOT / "services/assignment/rulesets", url)
        svc = AssignmentService(make_engine(url), runtime)
        rnd = random.Random(a.seed)
        outlets = build_org(svc, scale)
        with svc.engine.connect() as conn:
            n_staff = conn.execute(select(func.count()).select_from(t.staff)).scalar_one()
        items = changes(a.customers, outlets, 0, rnd)
        t0 = time.perf_counter()
        ingest(svc, items)
        t_ingest = time.perf_counter() - t0
        del items

        sample = [f"C{i:07}" for i in range(0, a.customers, max(1, a.customers // a.baseline_sample))][:a.baseline_sample]
        t_naive = naive_baseline(svc, sample)
        with svc.engine.begin() as conn:
            conn.execute(delete(t.books))

        rss0 = rss_mb()
        t0 = time.perf_counter()
        full = svc.run_assignment("bench")
        t_full = time.perf_counter() - t0
        rss1 = rss_mb()

        changed_ids = rnd.sample([f"C{i:07}" for i in range(a.customers)], a.customers // 100)
        top = svc.feed_cursor()
        ingest(svc, changes(len(changed_ids), outlets, top, rnd, changed_ids))
        t0 = time.perf_counter()
        incr = svc.run_assignment("bench", only_changed=True)
        t_incr = time.perf_counter() - t0
        t0 = time.perf_counter()
        again = svc.run_assignment("bench")
        t_again = time.perf_counter() - t0

        naive_rate = len(sample) / t_naive
        full_rate = a.customers / t_full
        print(f"customers={a.customers} staff={n_staff} outlets={len(outlets)}")
        print(f"ingest (feed path, {a.customers} changes): {t_ingest:.1f}s")
        print(f"full first run: {t_full:.1f}s  ({full_rate:,.0f} customers/s; assigned={full.assigned} "
              f"unplaced={len(full.unplaced)})")
        print(f"incremental run after 1% changed: {t_incr:.2f}s (assigned={incr.assigned} moved={incr.moved} "
              f"removed={incr.removed} unchanged={incr.unchanged})")
        print(f"full re-run, nothing changed: {t_again:.1f}s (moved={again.moved} assigned={again.assigned})")
        print(f"naive ORM baseline: {len(sample)} customers in {t_naive:.1f}s ({naive_rate:,.0f} customers/s) "
              f"-> {a.customers / naive_rate:,.0f}s projected for all")
        print(f"speed-up of the full run over the naive baseline: {full_rate / naive_rate:.0f}x")
        print(f"peak RSS: {rss1:.0f} MB (before the full run {rss0:.0f} MB)")
        runtime.stop()
        svc.engine.dispose()
    finally:
        drop()


if __name__ == "__main__":
    main()
