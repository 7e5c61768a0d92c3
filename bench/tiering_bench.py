"""Tiering benchmark (issue 3). Every number is reported beside a baseline
measured in the same run, as a ratio.

1. In-process evaluation of the published seed-003 bands + groups/flags:
   kequn (durable-rules, 500 facts per assert) vs zen-engine (the same bands
   and groups as a JDM decision, evaluated per customer and with
   evaluate_batch) vs raw durable-rules asserting one fact at a time.
2. End to end nightly batch: EvaluateCustomers through gRPC into PostgreSQL,
   every decision and change stored; baseline: the same stream with dry_run.
   Beside it, the same customers through EvaluateCustomerBatches (--batch-size
   customers per stream message), stored and dry run: ratio to
   EvaluateCustomers in the same run.
3. Unary EvaluateCustomer latency p50/p99 at a fixed 500 requests/s (open
   loop); baseline: the gRPC health check at the same rate.
4. Scale-out (--shards N): N tiering server processes on one PostgreSQL
   database, the stream split by a hash of customer_id into N client
   streams (one client process each, requests built before the clock
   starts); baseline: the same with one server and one client stream.
   Measured for EvaluateCustomers and for EvaluateCustomerBatches.

    python bench/tiering_bench.py                     # defaults: a couple of minutes
    python bench/tiering_bench.py --in-process 100000 --batch 500000 --unary-seconds 30
    python bench/tiering_bench.py --profile            # pyinstrument: rules in process, stored chunks, unary
    python bench/tiering_bench.py --shards 2 --scale-only  # only the scale-out measure
    python bench/tiering_bench.py --batches-only       # only the e2e batch measures (2 and 4, no unary)
    python bench/tiering_bench.py --inputs-overhead    # the stored batch with vs without decision inputs

5. (--inputs-overhead, issue 15) What keeping each decision's input for
   ExplainDecision and SimulatePopulation costs the stored batch: a server
   keeping them vs one that does not, same streams, alternating rounds.
   Population-simulation throughput: bench/population_bench.py.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import tempfile
import threading
import time
import zlib
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "gen" / "python")]

import grpc  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402

from kequn.tiering.v1 import tiering_pb2 as pb  # noqa: E402
from kequn.tiering.v1 import tiering_pb2_grpc as rpc  # noqa: E402
from services.tiering.demo import synthetic_customers  # noqa: E402
from services.tiering.domain import home_branch, rule_facts  # noqa: E402

FAILURES: dict[int, dict[str, int]] = {}  # per open_loop run: status code -> count
PG_ADMIN = os.environ.get("KEQUN_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")


# ---------------------------------------------------------------- in-process

def load_rulesets():
    sys.path.insert(0, str(ROOT / "tests" / "unit" / "tiering"))
    from conftest import RULESETS, load_active  # the same loader the unit tests use
    return load_active(RULESETS / "tiers.yaml"), load_active(RULESETS / "groups.yaml")


def facts_for(n: int) -> list[dict]:
    return [rule_facts(s, home_branch(s.holdings, "")) for s in synthetic_customers(n, seed=3)]


def zen_decision(tiers, groups):
    """The published band table and every group/flag rule as one JDM graph:
    a first-hit table for the tier and a collect table for groups and flags."""
    import zen

    band_rows = []
    for i, band in enumerate(tiers.document.band_table("tier").bands):
        cond = []
        if band.lower is not None:
            cond.append(f">= {band.lower}")
        if band.upper is not None:
            cond.append(f"< {band.upper}")
        band_rows.append({"_id": f"b{i}", "aum": " and ".join(f"$ {c}" for c in cond), "tier": f'"{band.value}"'})
    p = groups.document.parameters
    floor, share = p["private_banking_floor_fen"], p["pb_prospect_share"]
    prospect = int(floor * float(share))
    # One row per alternative of each rule (collect: every matching row adds its code).
    group_rows = [
        ("PAYROLL", "payroll_employer_id != null"),
        ("MERCHANT", "is_merchant == true"),
        ("CREDIT_CARD", "card_level != null"),
        ("PERSONAL_LOAN", "has_personal_loan == true"),
        ("MOBILE_BANKING", "mobile_banking_active == true"),
        ("SOCIAL_SECURITY", "has_social_security_card == true"),
        ("CAR_OWNER", "car_owner == true"),
        ("EDUCATION", "has_school_age_child == true"),
        ("SILVER_HAIR", f"age != null and age >= {p['silver_hair_age']}"),
        ("HIGH_SPEND", "card_level in " + json.dumps(p["high_spend_card_levels"])),
        ("HIGH_SPEND", f"annual_card_spend_fen >= {p['high_spend_annual_card_spend_fen']}"),
        ("DORMANT", f"days_since_last_txn != null and days_since_last_txn >= {p['dormant_days']}"),
        ("LOW_VALUE", f"cash_only == 'true' and annual_avg_aum_fen < {p['low_value_max_annual_avg_fen']}"),
    ]
    flag_rows = [
        ("PB_PROSPECT", f"annual_avg_aum_fen < {floor} and annual_avg_aum_fen >= {prospect}"),
        ("PB_PROSPECT", f"annual_avg_aum_fen < {floor} and monthly_avg_aum_fen >= {floor}"),
        ("OTHER_BANK_VIP", "other_bank_vip == true"),
        ("QUALITY_MORTGAGE", "quality_mortgage == true"),
        ("CHURN_RISK", f"annual_avg_change_bp != null and annual_avg_change_bp <= {p['churn_annual_drop_bp']}"),
        ("CHURN_RISK", "monthly_vs_annual_change_bp != null and "
                       f"monthly_vs_annual_change_bp <= {p['churn_monthly_drop_bp']}"),
    ]
    coded = [{"_id": f"g{i}", "when": f"({cond})", "code": f'"{code}"', "kind": '"segment"'}
             for i, (code, cond) in enumerate(group_rows)]
    coded += [{"_id": f"f{i}", "when": f"({cond})", "code": f'"{code}"', "kind": '"flag"'}
              for i, (code, cond) in enumerate(flag_rows)]
    graph = {
        "nodes": [
            {"id": "in", "type": "inputNode", "name": "customer", "position": {"x": 0, "y": 0}},
            {"id": "tier", "type": "decisionTableNode", "name": "tier", "position": {"x": 200, "y": 0},
             "content": {"hitPolicy": "first", "inputs": [{"id": "aum", "name": "aum", "field": "annual_avg_aum_fen"}],
                         "outputs": [{"id": "tier", "name": "tier", "field": "tier"}], "rules": band_rows}},
            {"id": "codes", "type": "decisionTableNode", "name": "codes", "position": {"x": 400, "y": 0},
             "content": {"hitPolicy": "collect", "outputPath": "codes",
                         "inputs": [{"id": "when", "name": "when"}],
                         "outputs": [{"id": "code", "name": "code", "field": "code"},
                                     {"id": "kind", "name": "kind", "field": "kind"}], "rules": coded}},
            {"id": "out", "type": "outputNode", "name": "answer", "position": {"x": 600, "y": 0}},
        ],
        "edges": [{"id": "e1", "sourceId": "in", "targetId": "tier", "type": "edge"},
                  {"id": "e2", "sourceId": "in", "targetId": "codes", "type": "edge"},
                  {"id": "e3", "sourceId": "tier", "targetId": "out", "type": "edge"},
                  {"id": "e4", "sourceId": "codes", "targetId": "out", "type": "edge"}],
    }
    engine = zen.ZenEngine()
    return engine, engine.create_decision(json.dumps(graph))


def zen_input(fact: dict) -> dict:
    flat = {k: v for k, v in fact.items() if k != "attributes"}
    flat["cash_only"] = (fact.get("attributes") or {}).get("cash_only")
    return flat


def zen_answer(result: dict) -> tuple:
    out = result["result"]
    codes = out.get("codes") or []
    return (out.get("tier"), frozenset(c["code"] for c in codes if c["kind"] == "segment"),
            frozenset(c["code"] for c in codes if c["kind"] == "flag"))


def bench_in_process(n: int, rounds: int = 5) -> dict:
    """The three contenders take turns on the same slices (interleaved
    rounds), so a neighbour's load on this shared machine hits all alike."""
    from services.tiering.domain import project

    tiers, groups = load_rulesets()
    facts = facts_for(n)
    engine, decision = zen_decision(tiers, groups)
    inputs = [zen_input(f) for f in facts]
    tier_fields, group_fields = tiers.loaded.compiled.fields, groups.loaded.compiled.fields
    size = max(1, n // rounds)
    took = {"kequn": 0.0, "zen": 0.0, "raw": 0.0}
    kequn, zen_results, raw_done = [], [], 0
    for r in range(rounds):
        part = slice(r * size, (r + 1) * size)
        start = time.perf_counter()
        t_ev = tiers.evaluate_many([project(f, tier_fields) for f in facts[part]])
        g_ev = groups.evaluate_many([project(f, group_fields) for f in facts[part]])
        took["kequn"] += time.perf_counter() - start
        kequn += [(t.outcome["tier"], frozenset(g.outcome["segments"]), frozenset(g.outcome["flags"]))
                  for t, g in zip(t_ev, g_ev)]
        start = time.perf_counter()
        zen_results += [decision.evaluate(i) for i in inputs[part]]
        took["zen"] += time.perf_counter() - start
        start = time.perf_counter()
        for fact in facts[part][: size // 4]:           # the slow one on a quarter of each slice
            tiers.evaluate(fact)
            groups.evaluate(fact)
            raw_done += 1
        took["raw"] += time.perf_counter() - start
    done = len(kequn)
    mismatches = sum(1 for a, b in zip(kequn, zen_results) if a != zen_answer(b))
    return {"customers": done, "kequn_per_s": done / took["kequn"], "zen_per_s": done / took["zen"],
            "raw_one_at_a_time_per_s": raw_done / took["raw"], "zen_vs_kequn_mismatches": mismatches,
            "zen_version": version("zen-engine"), "durable_rules_version": version("durable-rules")}


# ---------------------------------------------------------------- through a server

class PgDatabase:
    def __init__(self):
        import psycopg
        self.name = "kequn_bench_" + secrets.token_hex(4)
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')
        self.url = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + "/" + self.name

    def count(self, table: str) -> int:
        import psycopg
        with psycopg.connect(self.url.replace("+psycopg", "")) as conn:
            return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]

    def drop(self):
        import psycopg
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def to_proto(s) -> pb.CustomerSnapshot:
    c = pb.CustomerSnapshot(
        customer_id=s.customer_id, as_of=s.as_of, annual_avg_aum_fen=s.annual_avg_aum_fen,
        monthly_avg_aum_fen=s.monthly_avg_aum_fen, point_in_time_aum_fen=s.point_in_time_aum_fen,
        holdings=[pb.BranchHolding(branch_id=h.branch_id, aum_fen=h.aum_fen) for h in s.holdings], age=s.age,
        has_personal_loan=s.has_personal_loan, card_level=s.card_level,
        annual_card_spend_fen=s.annual_card_spend_fen, payroll_employer_id=s.payroll_employer_id,
        is_merchant=s.is_merchant, has_social_security_card=s.has_social_security_card,
        mobile_banking_active=s.mobile_banking_active, car_owner=s.car_owner,
        has_school_age_child=s.has_school_age_child, last_customer_txn_date=s.last_customer_txn_date,
        other_bank_vip=s.other_bank_vip, quality_mortgage=s.quality_mortgage, attributes=s.attributes)
    if s.previous_annual_avg_aum_fen is not None:
        c.previous_annual_avg_aum_fen = s.previous_annual_avg_aum_fen
    return c


def in_messages(requests, size: int):
    """EvaluateCustomerBatches request messages of ``size`` requests each."""
    message = pb.EvaluateCustomerBatchesRequest()
    for request in requests:
        message.requests.append(request)
        if len(message.requests) == size:
            yield message
            message = pb.EvaluateCustomerBatchesRequest()
    if message.requests:
        yield message


def answered_ok(stub, requests=None, messages=None) -> int:
    """Requests answered without an item error, through EvaluateCustomers (one
    message per customer) or, given ``messages``, EvaluateCustomerBatches."""
    if messages is None:
        return sum(1 for a in stub.EvaluateCustomers(requests) if not a.HasField("error"))
    return sum(1 for m in stub.EvaluateCustomerBatches(messages) for a in m.decisions if not a.HasField("error"))


def stream(stub, n: int, dry_run: bool, seed: int, start: int = 1, batch_size: int = 0) -> float:
    requests = (pb.EvaluateCustomerRequest(customer=to_proto(s), dry_run=dry_run)
                for s in synthetic_customers(n, seed=seed, start=start))
    began = time.perf_counter()
    answered = (answered_ok(stub, messages=in_messages(requests, batch_size)) if batch_size
                else answered_ok(stub, requests))
    elapsed = time.perf_counter() - began
    assert answered == n, (answered, n)
    return n / elapsed


def open_loop(call, rate: float, seconds: float) -> list[float]:
    """Requests fired on a fixed schedule (not waiting for answers), so slow
    answers cannot hide by slowing the sender; latency from the scheduled time."""
    latencies: list[float] = []
    failures: dict[str, int] = FAILURES.setdefault(len(FAILURES), {})
    lock = threading.Lock()
    total = int(rate * seconds)
    t0 = time.perf_counter() + 0.05

    def fire(i):
        scheduled = t0 + i / rate
        future = call(i)
        # a failed call counts as infinitely slow; its status is tallied
        def done(f):
            if f.exception() is not None:
                with lock:
                    failures[f.exception().code().name] = failures.get(f.exception().code().name, 0) + 1
            _record(time.perf_counter() - scheduled if f.exception() is None else float("inf"))
        future.add_done_callback(done)

    def _record(value):
        with lock:
            latencies.append(value)

    for i in range(total):
        delay = t0 + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        fire(i)
    deadline = time.perf_counter() + 120     # every call is waited for: a saturated server shows in p99
    while len(latencies) < total and time.perf_counter() < deadline:
        time.sleep(0.05)
    return latencies


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc), all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def bench_server(batch: int, unary_rate: float, unary_seconds: float, batch_size: int = 500,
                 batches_only: bool = False) -> dict:
    from tests.e2e.harness import Suite

    db = PgDatabase()
    workdir = tempfile.mkdtemp(prefix="kequn-bench-")
    suite = Suite(Path(workdir), services=("tiering",), database_urls={"tiering": db.url})
    try:
        suite.start("tiering")
        stub = rpc.TieringServiceStub(suite.channel("tiering", "core_banking"))
        stream(stub, 2_000, False, seed=99, start=10_000_000)       # warm-up (JIT-free Python: caches, pools)
        stream(stub, 2_000, False, seed=99, start=11_000_000, batch_size=batch_size)
        server = suite.processes["tiering"].pid

        def measured(**kw) -> tuple[float, float]:
            """(customers/s, server CPU µs per customer) of one stream."""
            cpu = cpu_seconds(server)
            rate = stream(stub, batch, **kw)
            return rate, (cpu_seconds(server) - cpu) / batch * 1e6

        # Each RPC's stored run evaluates new customers (its own id range).
        dry, dry_cpu = measured(dry_run=True, seed=5)
        dry_b, dry_b_cpu = measured(dry_run=True, seed=5, batch_size=batch_size)
        stored, stored_cpu = measured(dry_run=False, seed=5)
        stored_b, stored_b_cpu = measured(dry_run=False, seed=5, start=60_000_000, batch_size=batch_size)
        decisions = db.count("tiering_decisions") - 4_000
        changes = db.count("tiering_changes") - 4_000
        audited = db.count("tiering_audit_log") - 4_000
        batches = {"batch_customers": batch, "batch_size": batch_size,
                   "batch_stored_per_s": stored, "batch_dry_run_per_s": dry,
                   "batches_stored_per_s": stored_b, "batches_dry_run_per_s": dry_b,
                   "decisions_stored": decisions, "changes_stored": changes, "audit_records": audited,
                   "server_cpu_us_per_customer_dry_run": dry_cpu,
                   "server_cpu_us_per_customer_stored": stored_cpu,
                   "batches_server_cpu_us_per_customer_dry_run": dry_b_cpu,
                   "batches_server_cpu_us_per_customer_stored": stored_b_cpu}
        if batches_only:
            return batches

        health = health_pb2_grpc.HealthStub(suite.channel("tiering", "core_banking"))
        base = open_loop(lambda i: health.Check.future(health_pb2.HealthCheckRequest()), unary_rate, unary_seconds)
        population = [to_proto(s) for s in synthetic_customers(5_000, seed=8, start=20_000_000)]
        below = {}
        for rate in (100, 250):    # below saturation, to show what one stored call costs
            lat = open_loop(lambda i: stub.EvaluateCustomer.future(pb.EvaluateCustomerRequest(
                customer=population[i % len(population)])), rate, min(unary_seconds, 5))
            below[f"unary_at_{rate}_rps_p50_p99_ms"] = (round(pct(lat, 0.5), 2), round(pct(lat, 0.99), 2))
        cpu = cpu_seconds(server)
        unary = open_loop(lambda i: stub.EvaluateCustomer.future(pb.EvaluateCustomerRequest(
            customer=population[i % len(population)])), unary_rate, unary_seconds)
        unary_cpu = cpu_seconds(server) - cpu
        return {**below, **batches,
                "unary_rate": unary_rate, "unary_requests": len(unary),
                "server_cpu_ms_per_unary_call": unary_cpu / len(unary) * 1e3,
                "unary_p50_ms": pct(unary, 0.50), "unary_p99_ms": pct(unary, 0.99),
                "health_p50_ms": pct(base, 0.50), "health_p99_ms": pct(base, 0.99),
                "failed_calls_per_run": {k: v for k, v in FAILURES.items() if v}}
    finally:
        suite.close()
        db.drop()


def bench_inputs_overhead(batch: int, rounds: int = 3, batch_size: int = 500) -> dict:
    """What keeping each decision's input (issue 15: ExplainDecision,
    SimulatePopulation) costs the stored nightly batch: two servers, one with
    inputs kept and one without (KEQUN_TIERING_DECISION_INPUTS=0), each on
    its own database, fed the same stored EvaluateCustomerBatches streams in
    alternating rounds so a neighbour's load hits both alike."""
    from tests.e2e.harness import Suite

    setups = {}
    try:
        for name, flag in (("with_inputs", "1"), ("without_inputs", "0")):
            db = PgDatabase()
            suite = Suite(Path(tempfile.mkdtemp(prefix="kequn-bench-")), services=("tiering",),
                          database_urls={"tiering": db.url}, extra_env={"KEQUN_TIERING_DECISION_INPUTS": flag})
            setups[name] = (db, suite)
            suite.start("tiering")
            stub = rpc.TieringServiceStub(suite.channel("tiering", "core_banking"))
            stream(stub, 2_000, False, seed=99, start=11_000_000, batch_size=batch_size)  # warm-up
        took = {name: [0.0, 0.0] for name in setups}   # seconds, server CPU seconds
        for r in range(rounds):
            for name, (db, suite) in setups.items():
                stub = rpc.TieringServiceStub(suite.channel("tiering", "core_banking"))
                pid = suite.processes["tiering"].pid
                cpu = cpu_seconds(pid)
                rate = stream(stub, batch, False, seed=5 + r, start=30_000_000 + r * batch, batch_size=batch_size)
                took[name][0] += batch / rate
                took[name][1] += cpu_seconds(pid) - cpu
        n = batch * rounds
        out = {f"{name}_per_s": n / t for name, (t, _) in took.items()}
        out.update({f"{name}_server_cpu_us_per_customer": c / n * 1e6 for name, (_, c) in took.items()})
        out["throughput_ratio"] = out["with_inputs_per_s"] / out["without_inputs_per_s"]
        out["server_cpu_ratio"] = (out["with_inputs_server_cpu_us_per_customer"]
                                   / out["without_inputs_server_cpu_us_per_customer"])
        out["customers_per_setting"] = n
        return out
    finally:
        for db, suite in setups.values():
            suite.close()
            db.drop()


def _shard_client(target: str, token: str, n: int, seed: int, start: int, shard: int, shards: int,
                  ready, go, out, batch_size: int = 0) -> None:
    """One client process: its shard of the stream, built before the clock starts."""
    from services.common.client import dial

    requests = [pb.EvaluateCustomerRequest(customer=to_proto(s))
                for s in synthetic_customers(n, seed=seed, start=start)
                if zlib.crc32(s.customer_id.encode()) % shards == shard]
    messages = list(in_messages(requests, batch_size)) if batch_size else None
    stub = rpc.TieringServiceStub(dial(target, token))
    ready.set()
    go.wait()
    began = time.monotonic()
    answered = answered_ok(stub, messages=iter(messages)) if batch_size else answered_ok(stub, iter(requests))
    out.put((shard, len(requests), answered, began, time.monotonic()))


def sharded_stream(targets: list[str], token: str, n: int, seed: int, start: int, batch_size: int = 0) -> float:
    """Customers/s of n stored evaluations sent as len(targets) hash-sharded streams at once."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    out, go = ctx.Queue(), ctx.Event()
    readies = [ctx.Event() for _ in targets]
    workers = [ctx.Process(target=_shard_client,
                           args=(t, token, n, seed, start, k, len(targets), readies[k], go, out, batch_size))
               for k, t in enumerate(targets)]
    for w in workers:
        w.start()
    for ready in readies:
        ready.wait(300)
    go.set()
    results = [out.get(timeout=600) for _ in workers]
    for w in workers:
        w.join()
    assert sum(r[1] for r in results) == n and all(r[1] == r[2] for r in results), results
    return n / (max(r[4] for r in results) - min(r[3] for r in results))


def bench_scale_out(batch: int, shards: int, batch_size: int = 500) -> dict:
    from services.common.testing import free_port, start_service_process
    from tests.e2e.harness import Suite

    db = PgDatabase()
    workdir = Path(tempfile.mkdtemp(prefix="kequn-bench-"))
    suite = Suite(workdir, services=("tiering",), database_urls={"tiering": db.url})
    extra = []
    try:
        suite.start("tiering")
        targets = [suite.target("tiering")]
        for k in range(1, shards):
            grpc_port = free_port()
            env = {**suite.env, "KEQUN_TIERING_GRPC_PORT": str(grpc_port), "KEQUN_TIERING_METRICS_PORT": str(free_port())}
            log = open(workdir / f"tiering-{k}.log", "ab")
            extra.append(start_service_process("services.tiering", env, stdout=log, stderr=log))
            targets.append(f"127.0.0.1:{grpc_port}")
        token = suite.tokens["core_banking"]
        for target in targets:
            deadline = time.monotonic() + 90
            while True:
                try:
                    with grpc.insecure_channel(target) as channel:
                        if health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1).status \
                                == health_pb2.HealthCheckResponse.SERVING:
                            break
                except grpc.RpcError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(target)
                time.sleep(0.2)
        sharded_stream(targets, token, 2_000 * shards, seed=98, start=30_000_000)          # warm-up, every server
        sharded_stream(targets, token, 2_000 * shards, seed=98, start=31_000_000, batch_size=batch_size)
        one = sharded_stream(targets[:1], token, batch, seed=6, start=40_000_000)
        one_b = sharded_stream(targets[:1], token, batch, seed=6, start=45_000_000, batch_size=batch_size)
        many = sharded_stream(targets, token, batch, seed=6, start=50_000_000)
        many_b = sharded_stream(targets, token, batch, seed=6, start=55_000_000, batch_size=batch_size)
        return {"shards": shards, "customers_per_run": batch, "batch_size": batch_size,
                "one_process_per_s": one, "sharded_per_s": many,
                "batches_one_process_per_s": one_b, "batches_sharded_per_s": many_b,
                "decisions_stored": db.count("tiering_decisions") - 4_000 * shards,
                "audit_records": db.count("tiering_audit_log") - 4_000 * shards}
    finally:
        for proc in extra:
            proc.terminate()
        for proc in extra:
            proc.wait(30)
        suite.close()
        db.drop()


def profile_paths(n: int) -> None:
    """Where the time goes, as the server runs it (its GC settings included):
    the rules in process, the stored chunked batch (PostgreSQL, audit log
    included) and unary calls one after another."""
    from pyinstrument import Profiler

    from services.common.db import make_engine, make_session_factory, run_migrations
    from services.rules.testing import runtime_for
    from services.tiering.__main__ import tune_gc
    from services.tiering.domain import project
    from services.tiering.rules_kind import KINDS
    from services.tiering.service import EvaluateRequest, TieringService

    def show(title, run):
        profiler = Profiler()
        profiler.start()
        run()
        profiler.stop()
        print(f"==== {title}")
        print(profiler.output_text(unicode=False, color=False))

    tiers, groups = load_rulesets()
    facts = facts_for(n)
    tune_gc()
    show(f"rules in process, {n} customers", lambda: (
        tiers.evaluate_many([project(f, tiers.loaded.compiled.fields) for f in facts]),
        groups.evaluate_many([project(f, groups.loaded.compiled.fields) for f in facts])))
    db = PgDatabase()
    try:
        here = ROOT / "services" / "tiering"
        runtime = runtime_for(KINDS, here / "rulesets", db.url)
        run_migrations(db.url, str(here / "migrations"), "alembic_version_tiering")
        engine = make_engine(db.url)
        service = TieringService(make_session_factory(engine), runtime)
        snapshots = list(synthetic_customers(n))
        show(f"stored batch, {n} new customers in chunks of 500", lambda: [
            service.evaluate_batch_chunk([EvaluateRequest(s) for s in snapshots[i:i + 500]]) for i in range(0, n, 500)])
        unary = snapshots[: min(n, 2_000)]
        show(f"unary, {len(unary)} stored calls one after another",
             lambda: [service.evaluate(EvaluateRequest(s)) for s in unary])
        runtime.stop()
        engine.dispose()
    finally:
        db.drop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--in-process", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=30_000)
    parser.add_argument("--unary-rate", type=float, default=500)
    parser.add_argument("--unary-seconds", type=float, default=10)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--shards", type=int, default=2, help="server processes / client streams of the scale-out")
    parser.add_argument("--scale-only", action="store_true")
    parser.add_argument("--batch-size", type=int, default=500, help="customers per EvaluateCustomerBatches message")
    parser.add_argument("--batches-only", action="store_true",
                        help="only EvaluateCustomers vs EvaluateCustomerBatches, one process and scale-out")
    parser.add_argument("--inputs-overhead", action="store_true",
                        help="only: the stored batch with and without decision inputs kept (issue 15)")
    args = parser.parse_args()
    if args.inputs_overhead:
        io = bench_inputs_overhead(args.batch, batch_size=args.batch_size)
        print(json.dumps(io, indent=2))
        print(f"decision inputs kept: {io['with_inputs_per_s']:,.0f}/s vs {io['without_inputs_per_s']:,.0f}/s without "
              f"(throughput {io['throughput_ratio']:.2f}x, server CPU per customer {io['server_cpu_ratio']:.2f}x)")
        return
    if args.profile:
        profile_paths(args.in_process)
        return
    if args.scale_only:
        so = bench_scale_out(args.batch, args.shards, args.batch_size)
        print(json.dumps(so, indent=2))
        print_scale_out(so)
        return
    if args.batches_only:
        sv = bench_server(args.batch, 0, 0, args.batch_size, batches_only=True)
        so = bench_scale_out(args.batch, args.shards, args.batch_size)
        print(json.dumps({"server": sv, "scale_out": so}, indent=2))
        print_batches(sv)
        print_scale_out(so)
        return
    results = {"in_process": bench_in_process(args.in_process),
               "server": bench_server(args.batch, args.unary_rate, args.unary_seconds, args.batch_size),
               "scale_out": bench_scale_out(args.batch, args.shards, args.batch_size)}
    ip, sv, so = results["in_process"], results["server"], results["scale_out"]
    print(json.dumps(results, indent=2))
    print(f"\nin-process: kequn {ip['kequn_per_s']:,.0f}/s = {ip['kequn_per_s'] / ip['zen_per_s']:.2f}x zen-engine "
          f"{ip['zen_version']} ({ip['zen_per_s']:,.0f}/s), {ip['kequn_per_s'] / ip['raw_one_at_a_time_per_s']:.2f}x "
          f"durable-rules one fact at a time ({ip['raw_one_at_a_time_per_s']:,.0f}/s); "
          f"answers differing from zen: {ip['zen_vs_kequn_mismatches']}")
    print_batches(sv)
    print(f"unary at {sv['unary_rate']:.0f} rps: p50 {sv['unary_p50_ms']:.1f} ms, p99 {sv['unary_p99_ms']:.1f} ms "
          f"(health check: p50 {sv['health_p50_ms']:.1f} ms, p99 {sv['health_p99_ms']:.1f} ms; "
          f"p99 ratio {sv['unary_p99_ms'] / sv['health_p99_ms']:.1f}x)")
    print_scale_out(so)


def print_batches(sv: dict) -> None:
    print(f"e2e batch into PostgreSQL: {sv['batch_stored_per_s']:,.0f} customers/s stored = "
          f"{sv['batch_stored_per_s'] / sv['batch_dry_run_per_s']:.2f}x the dry run ({sv['batch_dry_run_per_s']:,.0f}/s)")
    print(f"server CPU per customer: {sv['server_cpu_us_per_customer_stored']:.0f} us stored, "
          f"{sv['server_cpu_us_per_customer_dry_run']:.0f} us dry run "
          f"(= {1e6 / sv['server_cpu_us_per_customer_stored']:,.0f} stored customers/s per busy server core)")
    print(f"EvaluateCustomerBatches ({sv['batch_size']} per message): {sv['batches_stored_per_s']:,.0f}/s stored = "
          f"{sv['batches_stored_per_s'] / sv['batch_stored_per_s']:.2f}x EvaluateCustomers; dry run "
          f"{sv['batches_dry_run_per_s']:,.0f}/s = {sv['batches_dry_run_per_s'] / sv['batch_dry_run_per_s']:.2f}x; "
          f"server CPU per customer {sv['batches_server_cpu_us_per_customer_stored']:.0f} us stored, "
          f"{sv['batches_server_cpu_us_per_customer_dry_run']:.0f} us dry run")


def print_scale_out(so: dict) -> None:
    for label, one, many in (("EvaluateCustomers", so["one_process_per_s"], so["sharded_per_s"]),
                             (f"EvaluateCustomerBatches ({so['batch_size']} per message)",
                              so["batches_one_process_per_s"], so["batches_sharded_per_s"])):
        print(f"scale-out {label}, {so['shards']} server processes + {so['shards']} hash-sharded streams: "
              f"{many:,.0f} customers/s stored = {many / one:.2f}x one process with one stream ({one:,.0f}/s)")
    print(f"EvaluateCustomerBatches / EvaluateCustomers: one process {so['batches_one_process_per_s'] / so['one_process_per_s']:.2f}x, "
          f"{so['shards']} processes {so['batches_sharded_per_s'] / so['sharded_per_s']:.2f}x")


if __name__ == "__main__":
    main()
