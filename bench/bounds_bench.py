"""What the edge bounds (services/common/bounds.py) cost on tiering's hot path.

1. In process: bounds.violations() on typical EvaluateCustomerRequests (the
   synthetic demo customers), per request; beside it, in the same run, what
   the API already spends on the same request: parsing its bytes
   (FromString) and converting it to the domain snapshot.
2. Through gRPC: a unary EvaluateCustomer on an in-process server whose
   handler answers at once (so the interceptor is all that differs), with
   the whole interceptor chain of services/common/server.py, once with and
   once without BoundsInterceptor, calls alternating; p50 per call.

    python bench/bounds_bench.py            # ~20 s
"""
from __future__ import annotations

import statistics
import sys
import time
from concurrent import futures
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "gen" / "python")]

import grpc  # noqa: E402

from kequn.tiering.v1 import tiering_pb2 as pb  # noqa: E402
from services.common import bounds  # noqa: E402
from services.common.grpc_errors import ErrorInterceptor  # noqa: E402
from services.common.guards import GuardInterceptor  # noqa: E402
from services.tiering.api import snapshot_from_proto  # noqa: E402
from services.tiering.demo import synthetic_customers  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from tiering_bench import to_proto  # noqa: E402

METHOD = "/kequn.tiering.v1.TieringService/EvaluateCustomer"


def per_request_ns(fn, items, rounds=7) -> float:
    """Median over rounds of the mean cost of fn(item), in ns."""
    results = []
    for _ in range(rounds):
        start = time.perf_counter_ns()
        for item in items:
            fn(item)
        results.append((time.perf_counter_ns() - start) / len(items))
    return statistics.median(results)


def in_process(n=2000):
    requests = [pb.EvaluateCustomerRequest(customer=to_proto(s), request_id=f"bench-{i}")
                for i, s in enumerate(synthetic_customers(n))]
    assert all(not bounds.violations(r) for r in requests)
    wire = [r.SerializeToString() for r in requests]
    check = per_request_ns(bounds.violations, requests)
    parse = per_request_ns(pb.EvaluateCustomerRequest.FromString, wire)
    convert = per_request_ns(lambda r: snapshot_from_proto(r.customer), requests)
    size = statistics.mean(len(w) for w in wire)
    print(f"in process, {n} typical requests ({size:.0f} bytes on average):")
    print(f"  bounds check   {check / 1000:6.1f} µs per request")
    print(f"  parse bytes    {parse / 1000:6.1f} µs per request  (ratio check/parse {check / parse:.2f})")
    print(f"  to domain      {convert / 1000:6.1f} µs per request  (ratio check/convert {check / convert:.2f})")
    return requests


def serve(with_bounds: bool):
    def answer(request, context):
        return pb.TierDecision(customer_id=request.customer.customer_id)

    handler = grpc.method_handlers_generic_handler("kequn.tiering.v1.TieringService", {
        "EvaluateCustomer": grpc.unary_unary_rpc_method_handler(
            answer, request_deserializer=pb.EvaluateCustomerRequest.FromString,
            response_serializer=pb.TierDecision.SerializeToString)})
    chain = [GuardInterceptor(), *([bounds.BoundsInterceptor()] if with_bounds else []), ErrorInterceptor()]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), interceptors=chain)
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


def through_grpc(requests, rounds=10, per_round=1000):
    servers = {flag: serve(flag) for flag in (False, True)}
    channels = {flag: grpc.insecure_channel(f"127.0.0.1:{port}") for flag, (_, port) in servers.items()}
    stubs = {flag: ch.unary_unary(METHOD, request_serializer=pb.EvaluateCustomerRequest.SerializeToString,
                                  response_deserializer=pb.TierDecision.FromString) for flag, ch in channels.items()}
    samples = {False: [], True: []}
    for flag in (False, True):  # warm up
        for r in requests[:100]:
            stubs[flag](r, timeout=10)
    for k in range(rounds):
        for r in requests[:per_round]:  # alternate call by call: the shared machine's load hits both alike
            for flag in ((False, True) if k % 2 else (True, False)):
                start = time.perf_counter_ns()
                stubs[flag](r, timeout=10)
                samples[flag].append(time.perf_counter_ns() - start)
    for ch in channels.values():
        ch.close()
    for server, _ in servers.values():
        server.stop(0)
    without, with_ = (statistics.median(samples[f]) / 1000 for f in (False, True))
    print(f"unary call through gRPC, {rounds * per_round} calls each, p50:")
    print(f"  without bounds {without:7.1f} µs")
    print(f"  with bounds    {with_:7.1f} µs  (+{with_ - without:.1f} µs, ratio {with_ / without:.3f})")


if __name__ == "__main__":
    reqs = in_process()
    through_grpc(reqs)
