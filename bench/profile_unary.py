"""Where a unary call's server CPU goes, by layer (issue 13's profiles).

The profiled service runs *in this process* as the real composition root
builds it (build_service: interceptors, auth, metrics, rule runtime, pool)
on a fresh PostgreSQL database; its dependencies run as real processes
(tiering, for benefits). The load comes from a separate client process, so
the profile holds the server's work only. cProfile with a per-thread CPU
clock (time.thread_time) wraps, on each grpc worker thread, grpc's function
that runs one unary call (deserialize, interceptors, handler, serialize),
and, on grpc's polling thread, the method lookup that runs the
interceptors' intercept_service. Waiting (for PostgreSQL, for tiering, for
locks) costs no CPU and does not show; PostgreSQL's own CPU is not in it.

    python bench/profile_unary.py tiering.EvaluateCustomer tiering.GetCustomerTier
    python bench/profile_unary.py benefits.ListEntitlements benefits.ClaimBenefit --calls 2000

Prints µs of server CPU per call by layer (cProfile's own overhead inflates
every figure, roughly evenly, so read the shares) and the top functions.
"""
from __future__ import annotations

import argparse
import cProfile
import multiprocessing
import os
import pstats
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "gen" / "python"), str(ROOT / "bench")]

import grpc  # noqa: E402
import grpc._server as grpc_server  # noqa: E402

from kequn.benefits.v1 import benefits_pb2 as bpb  # noqa: E402
from kequn.tiering.v1 import tiering_pb2 as tpb  # noqa: E402
from services.common.auth import bearer_metadata  # noqa: E402
from services.common.testing import dev_tokens, free_port  # noqa: E402
from services.tiering.demo import synthetic_customers  # noqa: E402
from tests.e2e.harness import Suite  # noqa: E402
from tiering_bench import PgDatabase, to_proto  # noqa: E402

# (layer, test on "file:function") in order: the first match names the layer.
LAYERS = [
    ("interceptors", lambda f: any(f"services/common/{m}.py" in f for m in
                                   ("logging", "metrics", "auth", "guards", "grpc_errors", "admission", "rpc"))),
    ("audit", lambda f: "services/common/audit.py" in f),
    ("validation", lambda f: ":validate" in f or "validation" in f),
    ("protobuf conversions (api.py)", lambda f: "/api.py:" in f),
    ("rules engine", lambda f: "services/rules/" in f or "durable" in f or "rules.engine" in f),
    ("use case (service/domain/store)", lambda f: "services/" in f and "/common/" not in f),
    ("common (db, errors, paging)", lambda f: "services/common/" in f),
    ("SQLAlchemy ORM", lambda f: "sqlalchemy/orm/" in f),
    ("SQLAlchemy core/engine", lambda f: "sqlalchemy/" in f),
    ("psycopg (driver)", lambda f: "psycopg" in f),
    ("prometheus_client", lambda f: "prometheus_client" in f),
    ("protobuf", lambda f: "google/protobuf" in f or "message.Message" in f or "SerializeToString" in f
     or "FromString" in f),
    ("grpc (python layer)", lambda f: "/grpc/" in f or "cygrpc" in f),
    ("stdlib logging/json", lambda f: "/logging/" in f or "/json/" in f),
    ("threading/queue", lambda f: "threading.py" in f or "queue.py" in f or "lock" in f),
]


def layer_of(key) -> str:
    filename, _line, func = key
    name = f"{filename}:{func}"
    for layer, test in LAYERS:
        if test(name):
            return layer
    return "other (stdlib, builtins)"


class Profiler:
    """Per-thread CPU profiles of grpc's unary path and method lookup."""

    def __init__(self):
        self.profiles: list[cProfile.Profile] = []
        self.local = threading.local()
        self.lock = threading.Lock()
        self.enabled = False
        self.generation = 0

    def reset(self) -> None:
        with self.lock:
            self.generation += 1
            self.profiles = []

    def _profile(self):
        p = getattr(self.local, "p", None)
        if p is None or self.local.generation != self.generation:
            p = self.local.p = cProfile.Profile(time.thread_time)
            self.local.generation = self.generation
            with self.lock:
                self.profiles.append(p)
        return p

    def wrap(self, fn):
        def wrapped(*args, **kwargs):
            if not self.enabled:
                return fn(*args, **kwargs)
            p = self._profile()
            p.enable()
            try:
                return fn(*args, **kwargs)
            finally:
                p.disable()
        return wrapped

    def install(self):
        grpc_server._unary_response_in_pool = self.wrap(grpc_server._unary_response_in_pool)
        grpc_server._find_method_handler = self.wrap(grpc_server._find_method_handler)

    def stats(self) -> pstats.Stats | None:
        live = [p for p in self.profiles if p.getstats()]
        if not live:
            return None
        st = pstats.Stats(live[0])
        for p in live[1:]:
            st.add(p)
        return st


def client(target, method, token, bodies, concurrency, out):
    channel = grpc.insecure_channel(target)
    call = channel.unary_unary(method)
    md = bearer_metadata(token)
    failures = {}
    lock = threading.Lock()
    it = iter(bodies)

    def worker():
        for body in it:
            try:
                call(body, metadata=md, timeout=60)
            except grpc.RpcError as exc:
                with lock:
                    failures[exc.code().name] = failures.get(exc.code().name, 0) + 1

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    out.put((time.perf_counter() - t, failures))


def in_process(service: str, env: dict[str, str]):
    os.environ.update(env)
    from services.common.config import ServiceConfig
    from services.rules.bootstrap import build_service
    import importlib
    spec = importlib.import_module(f"services.{service}.__main__").SPEC
    server, ctx = build_service(spec, ServiceConfig.from_env(service))
    server.start()
    return server, ctx


def workload(name: str, calls: int, tiering_stub=None):
    """(service, method, role, warm-up bodies, measured bodies)."""
    if name == "tiering.EvaluateCustomer":
        make = lambda n, start: [tpb.EvaluateCustomerRequest(customer=to_proto(s)).SerializeToString()  # noqa: E731
                                 for s in synthetic_customers(n, seed=5, start=start)]
        return "tiering", "/kequn.tiering.v1.TieringService/EvaluateCustomer", "core_banking", \
            make(300, 1_000_000), make(calls, 2_000_000)
    if name == "tiering.GetCustomerTier":
        ids = [f"CUST-{i:07d}" for i in range(1_000_000, 1_000_300)]
        bodies = [tpb.GetCustomerTierRequest(customer_id=ids[i % len(ids)]).SerializeToString() for i in range(calls)]
        return "tiering", "/kequn.tiering.v1.TieringService/GetCustomerTier", "core_banking", bodies[:300], bodies
    if name == "benefits.ListEntitlements":
        ids = [f"CUST-{i:07d}" for i in range(1, 2001)]
        bodies = [bpb.ListEntitlementsRequest(customer_id=ids[(i * 7919) % len(ids)]).SerializeToString()
                  for i in range(calls)]
        return "benefits", "/kequn.benefits.v1.BenefitsService/ListEntitlements", "mobile_banking", \
            bodies[:300], bodies
    if name == "benefits.ClaimBenefit":  # every claimer eligible (seed_claimers), each claims once
        def body(i, prefix):
            return bpb.ClaimBenefitRequest(customer_id=f"CLAIM-{i:06d}", benefit_id="PROFILE_GIFT", channel="MOBILE",
                                           request_id=f"{prefix}-{i}").SerializeToString()
        return "benefits", "/kequn.benefits.v1.BenefitsService/ClaimBenefit", "mobile_banking", \
            [body(i, "w") for i in range(1, 301)], [body(i, "m") for i in range(301, 301 + calls)]
    raise SystemExit(f"unknown workload {name}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("workloads", nargs="+")
    ap.add_argument("--calls", type=int, default=1500)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()
    service = args.workloads[0].split(".")[0]
    assert all(w.startswith(service + ".") for w in args.workloads), "one service per run"
    tmp = Path(tempfile.mkdtemp(prefix="kequn-profile-"))
    dbs = {s: PgDatabase() for s in ("tiering", service)}
    deps = Suite(tmp / "deps", services=("tiering",), database_urls={"tiering": dbs["tiering"].url},
                 extra_env={"KEQUN_LOG_LEVEL": "WARNING"}) if service != "tiering" else None
    tokens = dev_tokens(tmp)
    port = free_port()
    env = {"KEQUN_DATA_DIR": str(tmp), "KEQUN_TOKENS_FILE": str(tokens.path), "KEQUN_LOG_LEVEL": "WARNING",
           f"KEQUN_{service.upper()}_GRPC_PORT": str(port), f"KEQUN_{service.upper()}_METRICS_PORT": "0",
           f"KEQUN_{service.upper()}_DATABASE_URL": dbs[service].url, "KEQUN_SERVICE_TOKEN": tokens["service"]}
    prof = Profiler()
    prof.install()
    server = ctx = None
    try:
        if deps is not None:
            deps.tokens = tokens  # one tokens file for all
            deps.env.update({"KEQUN_TOKENS_FILE": str(tokens.path), "KEQUN_SERVICE_TOKEN": tokens["service"]})
            deps.start()
            env["KEQUN_TIERING_TARGET"] = deps.target("tiering")
            seed_tiering(deps.target("tiering"), tokens["core_banking"])
            seed_claimers(deps.target("tiering"), tokens["core_banking"], args.calls + 301)
        server, ctx = in_process(service, env)
        if service == "benefits":
            seed_benefits(f"127.0.0.1:{port}", tokens["operations"])
        else:
            seed_tiering(f"127.0.0.1:{port}", tokens["core_banking"], start=1_000_000, n=300)
        mp = multiprocessing.get_context("spawn")
        for name in args.workloads:
            svc, method, role, warm, bodies = workload(name, args.calls)
            for phase, items in (("warm", warm), ("measure", bodies)):
                q = mp.Queue()
                prof.enabled = phase == "measure"
                prof.reset()
                proc = mp.Process(target=client, args=(f"127.0.0.1:{port}", method, tokens[role], items,
                                                       args.concurrency, q))
                proc.start()
                wall, failures = q.get()
                proc.join()
                prof.enabled = False
            print_profile(name, prof.stats(), len(bodies), wall, failures, args.top)
    finally:
        if server is not None:
            server.stop(1)
            ctx.close()
        if deps is not None:
            deps.close()
        for d in dbs.values():
            d.drop()
    return 0


def seed_tiering(target, token, start=1, n=2000):
    channel = grpc.insecure_channel(target)
    call = channel.stream_stream("/kequn.tiering.v1.TieringService/EvaluateCustomerBatches",
                                 request_serializer=tpb.EvaluateCustomerBatchesRequest.SerializeToString,
                                 response_deserializer=tpb.EvaluateCustomerBatchesResponse.FromString)
    customers = list(synthetic_customers(n, seed=7, start=start))
    msgs = [tpb.EvaluateCustomerBatchesRequest(requests=[tpb.EvaluateCustomerRequest(customer=to_proto(s))
                                                         for s in customers[i:i + 500]])
            for i in range(0, n, 500)]
    for _ in call(iter(msgs), metadata=bearer_metadata(token), timeout=300):
        pass
    channel.close()


def seed_claimers(target, token, n):
    """CLAIM-000001.. in tier WEALTH: eligible for the profiled gift."""
    channel = grpc.insecure_channel(target)
    call = channel.stream_stream("/kequn.tiering.v1.TieringService/EvaluateCustomerBatches",
                                 request_serializer=tpb.EvaluateCustomerBatchesRequest.SerializeToString,
                                 response_deserializer=tpb.EvaluateCustomerBatchesResponse.FromString)
    reqs = [tpb.EvaluateCustomerRequest(customer=tpb.CustomerSnapshot(
        customer_id=f"CLAIM-{i:06d}", as_of="2026-01-31", annual_avg_aum_fen=50_000_000,
        monthly_avg_aum_fen=50_000_000)) for i in range(1, n + 1)]
    msgs = [tpb.EvaluateCustomerBatchesRequest(requests=reqs[i:i + 500]) for i in range(0, n, 500)]
    for _ in call(iter(msgs), metadata=bearer_metadata(token), timeout=300):
        pass
    channel.close()


def seed_benefits(target, token):
    channel = grpc.insecure_channel(target)
    md = bearer_metadata(token)
    upsert = channel.unary_unary("/kequn.benefits.v1.BenefitsService/UpsertBenefit",
                                 request_serializer=bpb.UpsertBenefitRequest.SerializeToString,
                                 response_deserializer=bpb.UpsertBenefitResponse.FromString)
    upsert(bpb.UpsertBenefitRequest(benefit=bpb.Benefit(
        benefit_id="PROFILE_GIFT", name="profile gift", kind="GIFT", eligibility_rule="benefit.points_gift",
        quota_per_period=1, quota_period=bpb.QUOTA_PERIOD_DAY, active=True), request_id="pg"), metadata=md,
        timeout=30)
    channel.close()


def print_profile(name, st, calls, wall, failures, top):
    print(f"\n=== {name}: {calls} calls in {wall:.1f} s ({calls / wall:.0f}/s, profiled), failures {failures}")
    if st is None:
        print("no samples")
        return
    by_layer: dict[str, float] = {}
    total = 0.0
    for key, (_cc, _nc, tt, _ct, _callers) in st.stats.items():
        layer = layer_of(key)
        by_layer[layer] = by_layer.get(layer, 0.0) + tt
        total += tt
    print(f"server CPU under the profiler: {total / calls * 1e6:.0f} µs/call")
    for layer, tt in sorted(by_layer.items(), key=lambda kv: -kv[1]):
        print(f"  {layer:34s} {tt / calls * 1e6:7.0f} µs  {100 * tt / total:5.1f} %")
    print("top functions by own CPU (µs/call):")
    rows = sorted(st.stats.items(), key=lambda kv: -kv[1][2])[:top]
    for (filename, line, func), (_cc, nc, tt, ct, _c) in rows:
        short = filename.split("site-packages/")[-1].replace(str(ROOT) + "/", "")
        print(f"  {tt / calls * 1e6:7.1f} own {ct / calls * 1e6:8.1f} cum {nc / calls:6.1f}×  {short}:{line} {func}")


if __name__ == "__main__":
    raise SystemExit(main())
