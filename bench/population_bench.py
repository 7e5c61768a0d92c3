"""Population simulation benchmark (issue 15): SimulatePopulation's engine —
a tier scheme candidate against every stored customer's latest snapshot in
PostgreSQL, compared with the active version, in worker processes — beside
in-process evaluation (tiers + groups, one core) measured in the same run.

    python bench/population_bench.py --customers 1000000   # the goal: <= 60 s
    python bench/population_bench.py --customers 200000 --workers 2

The stored population is written straight into a fresh database with COPY
(decision rows with their stored input, as the nightly batch stores them),
so the set-up does not dominate the run. Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "gen" / "python")]

from services.common.db import make_engine  # noqa: E402
from services.common.db import run_migrations  # noqa: E402
from services.rules.admin import RuleAdmin  # noqa: E402
from services.rules.engine import default_engine  # noqa: E402
from services.rules.kinds import KindRegistry  # noqa: E402
from services.rules.population import PopulationSimulator  # noqa: E402
from services.rules.store import RuleStore  # noqa: E402
from services.rules.testing import migrate_rules  # noqa: E402
from services.tiering.demo import synthetic_customers  # noqa: E402
from services.tiering.domain import home_branch  # noqa: E402
from services.tiering.inputs import encode  # noqa: E402
from services.tiering.population import TieringPopulation  # noqa: E402
from services.tiering.rules_kind import KINDS  # noqa: E402

PG_ADMIN = os.environ.get("KEQUN_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
TIERING = ROOT / "services" / "tiering"


def create_database() -> tuple[str, str]:
    import psycopg
    name = "kequn_bench_pop_" + secrets.token_hex(4)
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name, PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + "/" + name


def drop_database(name: str) -> None:
    import psycopg
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def fill(url: str, n: int) -> float:
    """n customers, each with one stored decision carrying its input."""
    import psycopg
    started = time.perf_counter()
    now = datetime.now(timezone.utc)
    with psycopg.connect(url.replace("+psycopg", "")) as conn, conn.cursor() as cur:
        with cur.copy("COPY tiering_decisions (decision_id, customer_id, as_of, tier, previous_tier, change, segments,"
                      " flags, home_branch_id, next_tier, gap_fen, downgrade_pending, ruleset, ruleset_version, fired,"
                      " decided_at, cursor, input) FROM STDIN") as copy:
            for s in synthetic_customers(n, seed=3):
                home = home_branch(s.holdings, "")
                copy.write_row([uuid.uuid4().hex, s.customer_id, s.as_of, "MASS", "", "NEW", "[]", "[]", home, "", 0,
                                0, "tiering.tiers", 1, "[]", now, 0, encode(s, None, ("tiering.groups", 1))])
        cur.execute("INSERT INTO tiering_customers (customer_id, tier, segments, flags, home_branch_id, below_count,"
                    " last_below_as_of, updated_at) SELECT customer_id, tier, segments, flags, home_branch_id, 0, '',"
                    " decided_at FROM tiering_decisions")
        conn.commit()
        cur.execute("ANALYZE tiering_decisions")
    return time.perf_counter() - started


def candidate_text() -> str:
    text = (TIERING / "rulesets" / "tiers.yaml").read_text(encoding="utf-8")
    text = text.replace("below: 20000000}", "below: 30000000}").replace("from: 20000000,", "from: 30000000,")
    text = text.replace("input: {annual_avg_aum_fen: 19999999}, expect: {tier: AFFLUENT}",
                        "input: {annual_avg_aum_fen: 29999999}, expect: {tier: AFFLUENT}")
    return text.replace("input: {annual_avg_aum_fen: 20000000}, expect: {tier: WEALTH}",
                        "input: {annual_avg_aum_fen: 30000000}, expect: {tier: WEALTH}")


def in_process(n: int) -> dict:
    """tiering_bench's in-process measure (kequn part): the shipped tiers and
    groups evaluated for n customers, 500 facts per assert, one core."""
    sys.path.insert(0, str(ROOT / "tests" / "unit" / "tiering"))
    from conftest import RULESETS, load_active

    from services.tiering.domain import project, rule_facts
    tiers, groups = load_active(RULESETS / "tiers.yaml"), load_active(RULESETS / "groups.yaml")
    facts = [rule_facts(s, home_branch(s.holdings, "")) for s in synthetic_customers(n, seed=3)]
    tf, gf = tiers.loaded.compiled.fields, groups.loaded.compiled.fields
    started = time.perf_counter()
    tiers.evaluate_many([project(f, tf) for f in facts])
    groups.evaluate_many([project(f, gf) for f in facts])
    return {"kequn_per_s": n / (time.perf_counter() - started)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=200_000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--in-process", type=int, default=20_000, help="customers of the in-process baseline")
    args = parser.parse_args()

    name, url = create_database()
    try:
        migrate_rules(url)
        run_migrations(url, str(TIERING / "migrations"), "alembic_version_tiering")
        admin = RuleAdmin(RuleStore(make_engine(url)), KindRegistry(KINDS), default_engine())
        admin.install_defaults(TIERING / "rulesets")
        fill_seconds = fill(url, args.customers)
        version = admin.create(candidate_text(), "bench").version
        simulator = PopulationSimulator(admin, TieringPopulation(url), workers=args.workers)
        result = simulator.run("tiering.tiers", version)
        baseline = in_process(args.in_process)
        t = result.tally
        per_s = t.total / result.elapsed_seconds
        print(json.dumps({
            "customers": t.total, "skipped": t.skipped, "changed": t.changed, "workers": args.workers,
            "population_seconds": round(result.elapsed_seconds, 1),
            "population_customers_per_s": round(per_s),
            "projected_seconds_for_1m": round(1_000_000 / per_s, 1),
            "in_process_tiers_and_groups_per_s_one_core": round(baseline["kequn_per_s"]),
            "ratio_population_to_in_process": round(per_s / baseline["kequn_per_s"], 2),
            "fill_seconds": round(fill_seconds, 1), "cpu_count": os.cpu_count(),
            "load_average": os.getloadavg(),
        }, indent=2))
    finally:
        drop_database(name)


if __name__ == "__main__":
    main()
