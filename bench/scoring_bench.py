"""Scoring benchmark: calculating a period and HR pulling it, on PostgreSQL.

    python bench/scoring_bench.py --staff 50000          # the issue's size
    python bench/scoring_bench.py                         # default: 5,000 staff (quick)

N staff x 20 indicators (10 standard-deviation, 6 ratio, 2 ratings, a deduction
and a bonus) in peer groups of 100 (one branch each). Measured in one run:
  - calculate: CalculatePeriod's use case (one pass per role, bulk read/write);
  - pull: every result through ListScores over a real gRPC server, 1,000 a page;
and, as the baseline in the same run, the naive way on a sample of people:
  - per-person calculation: read one person's values and peer group, score, write
    one row, commit — per person;
  - per-person pull: one GetScore RPC per person.
Ratios compare per-person costs. Needs KEQUN_TEST_PG_URL or a local PostgreSQL.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import secrets
import sys
import tempfile
import time
from concurrent import futures
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "gen" / "python"), str(ROOT)]

import grpc  # noqa: E402
import psycopg  # noqa: E402
from sqlalchemy import and_, insert, select  # noqa: E402

from kequn.scoring.v1 import scoring_pb2 as pb  # noqa: E402
from kequn.scoring.v1 import scoring_pb2_grpc  # noqa: E402
from services.common.db import UnitOfWork, make_engine, make_session_factory, run_migrations  # noqa: E402
from services.rules.testing import runtime_for  # noqa: E402
from services.scoring import domain  # noqa: E402
from services.scoring.__main__ import tune_gc  # noqa: E402
from services.scoring.api import ScoringApi  # noqa: E402
from services.scoring.rules_kind import KINDS  # noqa: E402
from services.scoring.scorecards import RuleStoreScorecards  # noqa: E402
from services.scoring.service import ScoringService, ValueInput, encode_breakdown  # noqa: E402
from services.scoring.store import ScoringStore, results, staff, values  # noqa: E402

ROLE = "BENCH_MANAGER"
PG = os.environ.get("KEQUN_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
CARD = f"""
name: scoring.bench_manager
kind: scoring.scorecard
description: benchmark card, 20 indicators
parameters:
  role: {ROLE}
  total: 100
  peer_scope: branch
  quantitative_floor: 80
  qualitative_ceiling: 20
  parts:
    - {{id: quantitative, kind: quantitative, weight: 80}}
    - {{id: qualitative, kind: qualitative, weight: 20}}
  indicators:
""" + "".join(f"    - {{id: sd{i}, part: quantitative, method: STDDEV, weight: 5}}\n" for i in range(10)) \
    + "".join(f"    - {{id: ratio{i}, part: quantitative, method: RATIO, target: 100, weight: 5}}\n" for i in range(6)) \
    + "    - {id: rating0, part: qualitative, method: RATING, weight: 10}\n" \
    + "    - {id: rating1, part: qualitative, method: RATING, weight: 10}\n" \
    + "    - {id: findings, method: DEDUCTION, per_unit: 2, cap: 10}\n" \
    + "    - {id: extra, method: BONUS, per_unit: 0.5, cap: 5}\n"


def fresh_database() -> tuple[str, callable]:
    name = "kequn_bench_" + secrets.token_hex(4)
    admin = PG.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop():
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return PG.rsplit("/", 1)[0] + "/" + name, drop


def values_for(staff: int, rng: random.Random) -> tuple[list[ValueInput], list[ValueInput]]:
    metrics, ratings = [], []
    for n in range(staff):
        sid, branch = f"S{n:06d}", f"BR{n // 100:04d}"
        for i in range(10):
            metrics.append(ValueInput(sid, ROLE, branch, f"sd{i}", str(rng.randint(0, 1000))))
        for i in range(6):
            metrics.append(ValueInput(sid, ROLE, branch, f"ratio{i}", str(rng.randint(0, 200))))
        metrics.append(ValueInput(sid, ROLE, branch, "findings", str(rng.choice((0, 0, 1, 3)))))
        metrics.append(ValueInput(sid, ROLE, branch, "extra", str(rng.randint(0, 12))))
        ratings += [ValueInput(sid, ROLE, branch, f"rating{i}", str(rng.randint(10, 20) / 2)) for i in range(2)]
    return metrics, ratings


def naive_calculate(service: ScoringService, period: str, staff_ids: list[str]) -> None:
    """The per-person way: each person reads their values and their peer group's
    values, is scored and written in a transaction of their own."""
    card = service.scorecards.active(ROLE)
    for staff_id in staff_ids:
        with UnitOfWork(service._sessions) as uow:
            store = ScoringStore(uow.session.connection())
            branch = store.staff_roles(period, [staff_id])[staff_id][1]
            rows = store.conn.execute(  # the peer group's values, row by row
                select(values.c.staff_id, values.c.input_key, values.c.value)
                .join(staff, and_(staff.c.period_id == values.c.period_id, staff.c.staff_id == values.c.staff_id))
                .where(values.c.period_id == period, staff.c.role == ROLE, staff.c.branch_id == branch))
            peers: dict = {}
            for s, k, v in rows:
                peers.setdefault(s, {})[k] = domain.Decimal(v)
            group = [domain.Person(s, branch, vals) for s, vals in peers.items()]
            stats = domain.compute_peer_stats(card, group)
            me = next(p for p in group if p.staff_id == staff_id)
            scored = domain.score_person(card, me, stats)
            store.conn.execute(insert(results).values(
                period_id=period + "-naive", staff_id=staff_id, revision=1, is_latest=True, role=ROLE,
                branch_id=branch, peer_group=branch, total=domain.show(scored.total), rank=0, peer_group_size=0,
                scorecard_name=card.name, scorecard_version=card.version,
                breakdown=encode_breakdown(scored.indicators), book_size=None, corrections="{}", reason="",
                revised_by="", calculated_at=domain_now()))
            uow.commit()


def domain_now():
    from services.scoring.store import now
    return now()


def serve(url: str, cards: str, ready, stop, port_box, default_gc: bool) -> None:
    """The benchmark's scoring server (ScoringApi over gRPC, no auth), in a child process."""
    if not default_gc:
        tune_gc()
    runtime = runtime_for(KINDS, Path(cards), url)
    service = ScoringService(make_session_factory(make_engine(url)), RuleStoreScorecards(runtime))
    server = grpc.server(futures.ThreadPoolExecutor(4), options=[("grpc.max_send_message_length", 64 << 20)])
    scoring_pb2_grpc.add_ScoringServiceServicer_to_server(ScoringApi(service), server)
    port_box.value = server.add_insecure_port("127.0.0.1:0")
    server.start()
    ready.set()
    stop.wait()
    server.stop(0)
    runtime.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--staff", type=int, default=5000)
    parser.add_argument("--baseline-sample", type=int, default=200, help="people scored/pulled the naive way")
    parser.add_argument("--page-size", type=int, default=1000)
    parser.add_argument("--default-gc", action="store_true", help="keep Python's GC thresholds (the server tunes them)")
    args = parser.parse_args()
    if not args.default_gc:
        tune_gc()  # as the server does at start

    url, drop = fresh_database()
    runtime = None
    try:
        run_migrations(url, str(ROOT / "services" / "scoring" / "migrations"), "alembic_version_scoring")
        cards = Path(tempfile.mkdtemp(prefix="kequn-bench-cards-"))
        (cards / "bench.yaml").write_text(CARD)
        runtime = runtime_for(KINDS, cards, url)
        engine = make_engine(url, pool_size=8)
        service = ScoringService(make_session_factory(engine), RuleStoreScorecards(runtime))
        period = "2025"
        service.create_period(period, "2025-01-01", "2025-12-31", "2026-01-31", actor="bench")

        metrics, ratings = values_for(args.staff, random.Random(7))
        t = time.perf_counter()
        for start in range(0, len(metrics), 50_000):
            service.submit(period, metrics[start:start + 50_000], ratings=False, actor="bench")
        for start in range(0, len(ratings), 50_000):
            service.submit(period, ratings[start:start + 50_000], ratings=True, actor="bench")
        submit_s = time.perf_counter() - t
        values = len(metrics) + len(ratings)

        t = time.perf_counter()
        scored, _ = service.calculate(period)
        calc_s = time.perf_counter() - t
        assert scored == args.staff
        service.finalize(period, actor="bench")

        # The server runs in a process of its own, as it does for HR (no GIL shared with the client).
        ctx = multiprocessing.get_context("spawn")
        ready, stop, port_box = ctx.Event(), ctx.Event(), ctx.Value("i", 0)
        server = ctx.Process(target=serve, args=(url, str(cards), ready, stop, port_box, args.default_gc))
        server.start()
        if not ready.wait(120):
            raise RuntimeError("benchmark server did not start")
        port = port_box.value
        channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_receive_message_length", 64 << 20)])
        stub = scoring_pb2_grpc.ScoringServiceStub(channel)

        t = time.perf_counter()
        token, pulled = "", 0
        while True:
            page = stub.ListScores(pb.ListScoresRequest(period_id=period, finalized_only=True,
                                                        page_size=args.page_size, page_token=token))
            pulled += len(page.scores)
            token = page.next_page_token
            if not token:
                break
        pull_s = time.perf_counter() - t
        assert pulled == args.staff

        sample = [f"S{n:06d}" for n in random.Random(1).sample(range(args.staff), min(args.baseline_sample, args.staff))]
        t = time.perf_counter()
        for staff_id in sample:
            stub.GetScore(pb.GetScoreRequest(staff_id=staff_id, period_id=period))
        naive_pull_s = time.perf_counter() - t
        t = time.perf_counter()
        naive_calculate(service, period, sample)
        naive_calc_s = time.perf_counter() - t
        stop.set()
        server.join(30)

        n, k = args.staff, len(sample)
        per = lambda seconds, count: seconds / count * 1e6  # noqa: E731 - µs per person
        print(f"staff {n}, values {values}, peer groups of 100, PostgreSQL, "
              f"gc {'default' if args.default_gc else 'tuned'}")
        print(f"submit (setup)     {submit_s:8.2f} s  {values / submit_s:10.0f} values/s")
        print(f"calculate          {calc_s:8.2f} s  {per(calc_s, n):10.0f} µs/person")
        print(f"naive calculate    {naive_calc_s:8.2f} s  {per(naive_calc_s, k):10.0f} µs/person "
              f"(sample {k}; whole period ≈ {naive_calc_s / k * n:.0f} s)")
        print(f"  ratio            {per(naive_calc_s, k) / per(calc_s, n):8.1f}x")
        print(f"ListScores pull    {pull_s:8.2f} s  {per(pull_s, n):10.0f} µs/person (page {args.page_size})")
        print(f"naive GetScore     {naive_pull_s:8.2f} s  {per(naive_pull_s, k):10.0f} µs/person "
              f"(sample {k}; whole period ≈ {naive_pull_s / k * n:.0f} s)")
        print(f"  ratio            {per(naive_pull_s, k) / per(pull_s, n):8.1f}x")
        return 0
    finally:
        if runtime is not None:
            runtime.stop()
        drop()


if __name__ == "__main__":
    raise SystemExit(main())
