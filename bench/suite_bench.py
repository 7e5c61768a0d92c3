"""Suite benchmark (issue 13): the hot paths as callers see them, with all
four services running on PostgreSQL (one fresh database each, dropped after),
every figure beside a baseline measured in the same run.

    python bench/suite_bench.py                       # small, ~2 min
    python bench/suite_bench.py --workers 2           # tiering and benefits with 2 worker processes
    python bench/suite_bench.py --compare-workers 2   # batch + unary throughput, 1 worker vs 2
    python bench/suite_bench.py --customers 20000 --seconds 10 --json out.json

Measures (baseline in brackets):
1. EvaluateCustomer (stored, new customers) server CPU per call, closed loop
   [the gRPC health check on the same port, same loop].
2. EvaluateCustomer open loop at --rate requests/s: p50/p99/refused
   [health check at the same rate].
3. EvaluateCustomerBatches stored customers/s and server CPU per customer
   [the same customers, dry run].
4. Assignment following the feed after that stored batch: seconds from the
   batch's end until assignment's cursor reaches tiering's, and assignment's
   CPU per customer [tiering's CPU per customer of the stored batch].
5. ListEntitlements at concurrency --concurrency: calls/s, p50/p99, CPU in
   benefits and tiering per call [benefits' health check, same concurrency].
6. ClaimBenefit, one gift, distinct customers, concurrency --concurrency:
   claims/s, p99, oversold [health check as in 5].

Requests are built and serialized before each clock starts. Server CPU is
read from /proc (the supervisor and its workers). The client is this one
process: at the highest rates it is part of what is measured.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "gen" / "python"), str(ROOT / "bench")]

import grpc  # noqa: E402
from grpc_health.v1 import health_pb2  # noqa: E402

from kequn.benefits.v1 import benefits_pb2 as bpb  # noqa: E402
from kequn.tiering.v1 import tiering_pb2 as tpb  # noqa: E402
from services.common.auth import bearer_metadata  # noqa: E402
from services.tiering.demo import synthetic_customers  # noqa: E402
from tests.e2e.harness import ORDER, Suite, metric_value  # noqa: E402
from tiering_bench import PgDatabase, cpu_seconds, to_proto  # noqa: E402

HEALTH = "/grpc.health.v1.Health/Check"
TIERING = "/kequn.tiering.v1.TieringService/"
BENEFITS = "/kequn.benefits.v1.BenefitsService/"
HEALTH_REQ = health_pb2.HealthCheckRequest().SerializeToString()


def pct(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else float("nan")


class Bench:
    def __init__(self, args, workers: int):
        self.args = args
        self.workers = workers
        self.dbs = {s: PgDatabase() for s in ORDER}
        env = {"KEQUN_MAX_CONCURRENT_RPCS": str(args.max_concurrent_rpcs), "KEQUN_LOG_LEVEL": "WARNING"}
        if workers > 1:
            env["KEQUN_TIERING_WORKERS"] = env["KEQUN_BENEFITS_WORKERS"] = str(workers)
        self.suite = Suite(Path(tempfile.mkdtemp(prefix="kequn-suite-bench-")), services=ORDER,
                           database_urls={s: d.url for s, d in self.dbs.items()}, extra_env=env)
        self.channels: dict[tuple[str, str, int], grpc.Channel] = {}

    def start(self):
        self.suite.start()
        if self.workers > 1:  # every worker up, not only the first to answer
            for service in ("tiering", "benefits"):
                deadline = time.monotonic() + 120
                while len(self.pids(service)) < self.workers + 1:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{service}: workers did not start")
                    time.sleep(0.3)
        return self

    def close(self):
        for c in self.channels.values():
            c.close()
        self.suite.close()
        for d in self.dbs.values():
            d.drop()

    # -- plumbing ----------------------------------------------------------

    def channel(self, service: str, role: str = "core_banking", k: int = 0) -> grpc.Channel:
        """Distinct k: a distinct connection (with workers: maybe another worker)."""
        key = (service, role, k)
        if key not in self.channels:
            self.channels[key] = grpc.insecure_channel(self.suite.target(service),
                                                       options=[("grpc.use_local_subchannel_pool", 1)])
        return self.channels[key]

    def raw(self, service, method, role="core_banking", k=0):
        return self.channel(service, role, k).unary_unary(method)

    def md(self, role="core_banking"):
        return bearer_metadata(self.suite.tokens[role])

    def pids(self, service: str) -> list[int]:
        pids = [self.suite.processes[service].pid]
        if self.workers > 1 and service in ("tiering", "benefits"):
            for line in self.suite.metrics(service).splitlines():
                if line.startswith("kequn_worker_info{"):
                    pids.append(int(line.split('pid="', 1)[1].split('"', 1)[0]))
        return pids

    def cpu(self, service: str) -> float:
        return sum(cpu_seconds(p) for p in self.pids(service))

    def closed_loop(self, calls, concurrency: int, connections: int = 4):
        """calls: list of (service, method, role, request bytes). Returns
        (calls/s, latencies, failures by code)."""
        stubs = {}
        latencies, failures, lock = [], {}, threading.Lock()

        def one(i_call):
            i, (service, method, role, body) = i_call
            k = i % connections
            stub = stubs.get((service, method, role, k))
            if stub is None:
                stub = stubs[(service, method, role, k)] = self.raw(service, method, role, k)
            t = time.perf_counter()
            try:
                stub(body, metadata=self.md(role), timeout=60)
                d = time.perf_counter() - t
                with lock:
                    latencies.append(d)
            except grpc.RpcError as exc:
                with lock:
                    failures[exc.code().name] = failures.get(exc.code().name, 0) + 1

        for c in calls[:connections * 2]:  # connect every channel first
            one((0, c))
        latencies.clear()
        failures.clear()
        start = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(one, enumerate(calls)))
        return len(calls) / (time.perf_counter() - start), latencies, failures

    def open_loop(self, service, method, role, bodies, rate, seconds, connections: int = 4):
        stubs = [self.raw(service, method, role, k) for k in range(connections)]
        for k in range(connections):  # connect every channel first
            self.raw(service, HEALTH, role, k)(HEALTH_REQ, timeout=30)
        total = int(rate * seconds)
        latencies, failures, lock = [], {}, threading.Lock()
        done = threading.Semaphore(0)
        md = self.md(role)
        t0 = time.perf_counter() + 0.05
        for i in range(total):
            scheduled = t0 + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            future = stubs[i % connections].future(bodies[i % len(bodies)], metadata=md, timeout=30)

            def finished(f, scheduled=scheduled):
                exc = f.exception()
                with lock:
                    if exc is None:
                        latencies.append(time.perf_counter() - scheduled)
                    else:
                        failures[exc.code().name] = failures.get(exc.code().name, 0) + 1
                done.release()
            future.add_done_callback(finished)
        for _ in range(total):
            done.acquire(timeout=60)
        return latencies, failures

    # -- measures ----------------------------------------------------------

    def evaluate_bodies(self, n: int, start: int, seed: int, dry_run=False) -> list[bytes]:
        return [tpb.EvaluateCustomerRequest(customer=to_proto(s), dry_run=dry_run).SerializeToString()
                for s in synthetic_customers(n, seed=seed, start=start)]

    def unary_cpu(self) -> dict:
        n, conc = self.args.unary_calls, 8
        evals = [("tiering", TIERING + "EvaluateCustomer", "core_banking", b)
                 for b in self.evaluate_bodies(n, 30_000_000, seed=11)]
        health = [("tiering", HEALTH, "core_banking", HEALTH_REQ)] * n
        cpu = self.cpu("tiering")
        h_rate, h_lat, _ = self.closed_loop(health, conc)
        h_cpu = (self.cpu("tiering") - cpu) / n
        cpu = self.cpu("tiering")
        e_rate, e_lat, e_fail = self.closed_loop(evals, conc)
        e_cpu = (self.cpu("tiering") - cpu) / n
        return {"evaluate_calls_per_s": e_rate, "health_calls_per_s": h_rate,
                "evaluate_server_cpu_us": e_cpu * 1e6, "health_server_cpu_us": h_cpu * 1e6,
                "evaluate_cpu_vs_health": e_cpu / h_cpu, "evaluate_failures": e_fail,
                "evaluate_p50_ms": pct(e_lat, .5), "evaluate_p99_ms": pct(e_lat, .99)}

    def unary_open_loop(self) -> dict:
        rate, seconds = self.args.rate, self.args.seconds
        bodies = self.evaluate_bodies(int(rate * seconds), 40_000_000, seed=12)
        h_lat, h_fail = self.open_loop("tiering", HEALTH, "core_banking", [HEALTH_REQ], rate, seconds)
        e_lat, e_fail = self.open_loop("tiering", TIERING + "EvaluateCustomer", "core_banking", bodies, rate, seconds)
        total = int(rate * seconds)
        return {"rate": rate, "seconds": seconds,
                "evaluate_p50_ms": pct(e_lat, .5), "evaluate_p99_ms": pct(e_lat, .99),
                "evaluate_refused": sum(e_fail.values()), "evaluate_refused_pct": 100 * sum(e_fail.values()) / total,
                "evaluate_failures": e_fail,
                "health_p50_ms": pct(h_lat, .5), "health_p99_ms": pct(h_lat, .99), "health_failures": h_fail}

    def batch(self, n: int, dry_run: bool, start: int, streams: int, size: int = 500) -> tuple[float, float, dict]:
        """(customers/s, tiering CPU µs per customer, {customer_id: tier})."""
        customers = list(synthetic_customers(n, seed=21, start=start))
        messages: list[list[bytes]] = [[] for _ in range(streams)]
        for k in range(streams):
            part = customers[k::streams]
            for i in range(0, len(part), size):
                messages[k].append(tpb.EvaluateCustomerBatchesRequest(requests=[
                    tpb.EvaluateCustomerRequest(customer=to_proto(s), dry_run=dry_run)
                    for s in part[i:i + size]]).SerializeToString())
        tiers: dict[str, str] = {}
        errors = []

        def run(k):
            call = self.channel("tiering", "core_banking", 100 + k).stream_stream(
                TIERING + "EvaluateCustomerBatches", response_deserializer=tpb.EvaluateCustomerBatchesResponse.FromString)
            for m in call(iter(messages[k]), metadata=self.md(), timeout=600):
                for d in m.decisions:
                    if d.HasField("error"):
                        errors.append(d.error.message)
                    else:
                        tiers[d.customer_id] = d.tier

        cpu = self.cpu("tiering")
        began = time.perf_counter()
        threads = [threading.Thread(target=run, args=(k,)) for k in range(streams)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - began
        assert not errors and len(tiers) == n, (errors[:3], len(tiers))
        return n / elapsed, (self.cpu("tiering") - cpu) / n * 1e6, tiers

    def batches_and_follower(self) -> tuple[dict, dict]:
        n, streams = self.args.customers, self.args.streams or 2 * self.workers
        dry_rate, dry_cpu, _ = self.batch(n, True, 50_000_000, streams)
        a_cpu = self.cpu("assignment")
        stored_rate, stored_cpu, tiers = self.batch(n, False, 50_000_000, streams)
        ended = time.perf_counter()
        target = max(metric_value(self.suite.metrics("tiering"), "kequn_tiering_feed_cursor", **(
            {"worker": str(w)} if self.workers > 1 else {})) or 0 for w in range(self.workers))
        while (metric_value(self.suite.metrics("assignment"), "kequn_assignment_feed_cursor") or 0) < target:
            if time.perf_counter() - ended > 600:
                break
            time.sleep(0.1)
        caught_up = time.perf_counter() - ended
        follower_cpu = (self.cpu("assignment") - a_cpu) / n * 1e6
        self.tiers = tiers
        return ({"customers": n, "streams": streams, "stored_per_s": stored_rate, "dry_run_per_s": dry_rate,
                 "stored_vs_dry_run": stored_rate / dry_rate, "stored_cpu_us_per_customer": stored_cpu,
                 "dry_run_cpu_us_per_customer": dry_cpu, "stored_cpu_vs_dry_run": stored_cpu / dry_cpu},
                {"caught_up_s_after_batch": caught_up, "assignment_cpu_us_per_customer": follower_cpu,
                 "tiering_cpu_us_per_customer": stored_cpu, "assignment_vs_tiering_cpu": follower_cpu / stored_cpu})

    def reads(self) -> dict:
        """GetCustomerTier, closed loop, over 8 connections (with workers: spread over them by the kernel)."""
        n, conc = self.args.unary_calls * 2, self.args.concurrency
        ids = sorted(self.tiers)
        calls = [("tiering", TIERING + "GetCustomerTier", "core_banking",
                  tpb.GetCustomerTierRequest(customer_id=ids[(i * 7919) % len(ids)]).SerializeToString())
                 for i in range(n)]
        cpu = self.cpu("tiering")
        rate, lat, fail = self.closed_loop(calls, conc, connections=8)
        return {"calls_per_s": rate, "p50_ms": pct(lat, .5), "p99_ms": pct(lat, .99), "failures": fail,
                "server_cpu_us": (self.cpu("tiering") - cpu) / n * 1e6}

    def benefits_health(self, n: int, conc: int) -> float:
        rate, _, _ = self.closed_loop([("benefits", HEALTH, "mobile_banking", HEALTH_REQ)] * n, conc)
        return rate

    def entitlements(self) -> dict:
        n, conc = self.args.list_calls, self.args.concurrency
        ids = sorted(self.tiers)
        calls = [("benefits", BENEFITS + "ListEntitlements", "mobile_banking",
                  bpb.ListEntitlementsRequest(customer_id=ids[(i * 7919) % len(ids)]).SerializeToString())
                 for i in range(n)]
        health = self.benefits_health(n, conc)
        b_cpu, t_cpu = self.cpu("benefits"), self.cpu("tiering")
        rate, lat, fail = self.closed_loop(calls, conc)
        return {"concurrency": conc, "calls_per_s": rate, "p50_ms": pct(lat, .5), "p99_ms": pct(lat, .99),
                "failures": fail, "health_calls_per_s": health, "calls_vs_health": rate / health,
                "benefits_cpu_us_per_call": (self.cpu("benefits") - b_cpu) / n * 1e6,
                "tiering_cpu_us_per_call": (self.cpu("tiering") - t_cpu) / n * 1e6}

    def claims(self) -> dict:
        n, conc = self.args.claims, self.args.concurrency
        ops = self.md("operations")
        upsert = self.channel("benefits", "operations").unary_unary(
            BENEFITS + "UpsertBenefit", request_serializer=bpb.UpsertBenefitRequest.SerializeToString,
            response_deserializer=bpb.UpsertBenefitResponse.FromString)
        upsert(bpb.UpsertBenefitRequest(benefit=bpb.Benefit(
            benefit_id="SUITE_BENCH_GIFT", name="bench gift", kind="GIFT", eligibility_rule="benefit.points_gift",
            quota_per_period=1, quota_period=bpb.QUOTA_PERIOD_DAY, physical=True, active=True),
            request_id="suite-bench-gift"), metadata=ops, timeout=30)
        adjust = self.channel("benefits", "operations").unary_unary(
            BENEFITS + "AdjustInventory", request_serializer=bpb.AdjustInventoryRequest.SerializeToString,
            response_deserializer=bpb.AdjustInventoryResponse.FromString)
        adjust(bpb.AdjustInventoryRequest(benefit_id="SUITE_BENCH_GIFT", delta=n, reason="bench",
                                          request_id="suite-bench-stock"), metadata=ops, timeout=30)
        eligible = [c for c, t in sorted(self.tiers.items()) if t != "MASS"][:n]
        calls = [("benefits", BENEFITS + "ClaimBenefit", "mobile_banking", bpb.ClaimBenefitRequest(
            customer_id=c, benefit_id="SUITE_BENCH_GIFT", channel="MOBILE", request_id=f"sb-{c}").SerializeToString())
            for c in eligible]
        health = self.benefits_health(len(calls), conc)
        rate, lat, fail = self.closed_loop(calls, conc)
        get = self.channel("benefits", "operations").unary_unary(
            BENEFITS + "GetInventory", request_serializer=bpb.GetInventoryRequest.SerializeToString,
            response_deserializer=bpb.GetInventoryResponse.FromString)
        inv = get(bpb.GetInventoryRequest(benefit_id="SUITE_BENCH_GIFT"), metadata=ops, timeout=30).inventory
        ok = len(lat)
        return {"concurrency": conc, "claims": len(calls), "claims_per_s": rate, "p50_ms": pct(lat, .5),
                "p99_ms": pct(lat, .99), "succeeded": ok, "failures": fail, "stock": n,
                "reserved": inv.reserved, "oversold": max(0, inv.reserved - n, ok - n),
                "reserved_matches_successes": inv.reserved == ok,
                "health_calls_per_s": health, "claims_vs_health": rate / health}


def run_once(args, workers: int, only_throughput=False) -> dict:
    bench = Bench(args, workers).start()
    try:
        out = {"workers": workers}
        if only_throughput:
            out["batch"], out["follower"] = bench.batches_and_follower()
            out["unary"] = bench.unary_cpu()
            out["reads"] = bench.reads()
            return out
        out["unary"] = bench.unary_cpu()
        out["open_loop"] = bench.unary_open_loop()
        out["batch"], out["follower"] = bench.batches_and_follower()
        out["reads"] = bench.reads()
        out["entitlements"] = bench.entitlements()
        out["claims"] = bench.claims()
        return out
    finally:
        bench.close()


def report(r: dict) -> None:
    u, o, b, f = r["unary"], r.get("open_loop"), r["batch"], r["follower"]
    print(f"--- workers per tiering/benefits pod: {r['workers']}")
    print(f"EvaluateCustomer stored: server CPU {u['evaluate_server_cpu_us']:.0f} µs/call vs health "
          f"{u['health_server_cpu_us']:.0f} µs = {u['evaluate_cpu_vs_health']:.2f}×; "
          f"{u['evaluate_calls_per_s']:.0f}/s closed loop (health {u['health_calls_per_s']:.0f}/s)")
    if o:
        print(f"EvaluateCustomer open loop {o['rate']}/s: p50 {o['evaluate_p50_ms']:.1f} ms p99 "
              f"{o['evaluate_p99_ms']:.1f} ms refused {o['evaluate_refused_pct']:.2f} % {o['evaluate_failures']} | "
              f"health p50 {o['health_p50_ms']:.1f} p99 {o['health_p99_ms']:.1f} ms")
    print(f"EvaluateCustomerBatches {b['customers']} customers / {b['streams']} streams: stored "
          f"{b['stored_per_s']:.0f}/s vs dry run {b['dry_run_per_s']:.0f}/s = {b['stored_vs_dry_run']:.2f}; "
          f"server CPU {b['stored_cpu_us_per_customer']:.0f} vs {b['dry_run_cpu_us_per_customer']:.0f} µs/customer "
          f"= {b['stored_cpu_vs_dry_run']:.2f}×")
    print(f"assignment follower: caught up {f['caught_up_s_after_batch']:.1f} s after the batch; "
          f"{f['assignment_cpu_us_per_customer']:.0f} µs/customer vs tiering {f['tiering_cpu_us_per_customer']:.0f}"
          f" = {f['assignment_vs_tiering_cpu']:.2f}×")
    g = r["reads"]
    print(f"GetCustomerTier c={r.get('concurrency', 16)}: {g['calls_per_s']:.0f}/s p50 {g['p50_ms']:.1f} p99 "
          f"{g['p99_ms']:.1f} ms {g['failures'] or ''}; server CPU {g['server_cpu_us']:.0f} µs/call")
    if "entitlements" in r:
        e, c = r["entitlements"], r["claims"]
        print(f"ListEntitlements c={e['concurrency']}: {e['calls_per_s']:.0f}/s p50 {e['p50_ms']:.1f} p99 "
              f"{e['p99_ms']:.1f} ms {e['failures'] or ''} (health {e['health_calls_per_s']:.0f}/s, "
              f"{e['calls_vs_health']:.2f}×); CPU benefits {e['benefits_cpu_us_per_call']:.0f} µs + tiering "
              f"{e['tiering_cpu_us_per_call']:.0f} µs per call")
        print(f"ClaimBenefit c={c['concurrency']}: {c['claims_per_s']:.0f}/s p50 {c['p50_ms']:.1f} p99 "
              f"{c['p99_ms']:.1f} ms; {c['succeeded']}/{c['claims']} succeeded {c['failures'] or ''}, reserved "
              f"{c['reserved']} of {c['stock']}, oversold {c['oversold']} (health {c['health_calls_per_s']:.0f}/s, "
              f"{c['claims_vs_health']:.2f}×)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--customers", type=int, default=4000, help="customers per batch (stored and dry run)")
    ap.add_argument("--streams", type=int, default=0, help="batch streams at once (default 2 per worker)")
    ap.add_argument("--unary-calls", type=int, default=600)
    ap.add_argument("--rate", type=float, default=500)
    ap.add_argument("--seconds", type=float, default=4)
    ap.add_argument("--list-calls", type=int, default=1000)
    ap.add_argument("--claims", type=int, default=400)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--max-concurrent-rpcs", type=int, default=64)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--compare-workers", type=int, default=0, metavar="N",
                    help="only batch + unary throughput, with 1 worker and with N")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()
    if args.compare_workers:
        results = [run_once(args, 1, True), run_once(args, args.compare_workers, True)]
        for r in results:
            report(r)
        one, many = results
        print(f"--- {args.compare_workers} workers vs 1: batch stored "
              f"{many['batch']['stored_per_s'] / one['batch']['stored_per_s']:.2f}×, batch dry run "
              f"{many['batch']['dry_run_per_s'] / one['batch']['dry_run_per_s']:.2f}×, unary EvaluateCustomer "
              f"{many['unary']['evaluate_calls_per_s'] / one['unary']['evaluate_calls_per_s']:.2f}×, GetCustomerTier "
              f"{many['reads']['calls_per_s'] / one['reads']['calls_per_s']:.2f}×")
    else:
        results = [run_once(args, args.workers)]
        report(results[0])
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
