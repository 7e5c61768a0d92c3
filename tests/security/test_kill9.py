"""`kill -9` in the middle of the work, then a restart, on PostgreSQL:
nothing acknowledged is lost, nothing is doubled when clients retry with
their request_id, and the change feed resumes where its reader stopped.
Also: tiering killed while benefits runs — benefits' documented fallback."""
from __future__ import annotations

import secrets
import threading
import time
from datetime import datetime
from zoneinfo import ZoneInfo

import grpc
import pytest
from grpc_health.v1 import health_pb2

from kequn.benefits.v1 import benefits_pb2 as bpb
from kequn.benefits.v1 import benefits_pb2_grpc
from kequn.tiering.v1 import tiering_pb2 as tpb
from kequn.tiering.v1 import tiering_pb2_grpc
from services.common.auth import bearer_metadata
from tests.security.conftest import record, require, start_suite

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]
SERVING = health_pb2.HealthCheckResponse.SERVING


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


@pytest.fixture
def stack(pg, tmp_path):
    """Start services on fresh databases of our own PostgreSQL: stack(["tiering", "benefits"])."""
    suites = []

    def start(services):
        for s in services:
            require(s)
        tag = secrets.token_hex(3)
        urls = {s: pg.create_database(f"{s}_{tag}") for s in services}
        suite = start_suite(tmp_path / tag, services=services, database_urls=urls)
        suites.append(suite)
        return suite
    yield start
    for suite in suites:
        suite.close()


def snapshot(i: int, aum: int, prefix: str) -> tpb.CustomerSnapshot:
    return tpb.CustomerSnapshot(customer_id=f"{prefix}{i:05d}", as_of="2025-03-01", annual_avg_aum_fen=aum,
                                monthly_avg_aum_fen=aum, point_in_time_aum_fen=aum)


class FeedReader:
    """Follows WatchTierChanges like assignment does: on any error, reconnects
    after the last cursor it saw."""

    def __init__(self, suite, token):
        self.suite, self.token = suite, token
        self.seen: list[tuple[int, str]] = []
        self.reconnects = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop.is_set():
            after = self.seen[-1][0] if self.seen else 0
            try:
                with grpc.insecure_channel(self.suite.target("tiering")) as channel:
                    stream = tiering_pb2_grpc.TieringServiceStub(channel).WatchTierChanges(
                        tpb.WatchTierChangesRequest(after_cursor=after), metadata=bearer_metadata(self.token))
                    for change in stream:
                        self.seen.append((change.cursor, change.customer_id))
                        if self.stop.is_set():
                            stream.cancel()
                            return
            except grpc.RpcError:
                self.reconnects += 1
                time.sleep(0.2)


def test_tiering_killed_mid_batch_loses_and_doubles_nothing_and_the_feed_resumes(stack):
    suite = stack(["tiering"])
    meta = bearer_metadata(suite.tokens["core_banking"])
    n = 2000
    requests = [tpb.EvaluateCustomerRequest(customer=snapshot(i, 1_000_000 + 997 * i, "K9T"), request_id=f"k9t-{i}")
                for i in range(n)]
    reader = FeedReader(suite, suite.tokens["service"])
    acked: dict[str, str] = {}
    with grpc.insecure_channel(suite.target("tiering")) as channel:
        answers = tiering_pb2_grpc.TieringServiceStub(channel).EvaluateCustomers(iter(requests), metadata=meta,
                                                                                 timeout=120)
        with pytest.raises(grpc.RpcError) as cut:
            for answer in answers:
                assert not answer.HasField("error"), answer.error.message
                acked[answer.customer_id] = answer.decision_id
                if len(acked) == 300:
                    suite.processes["tiering"].kill()  # SIGKILL mid-batch
        assert cut.value.code() == grpc.StatusCode.UNAVAILABLE
    assert 300 <= len(acked) < n
    seen_before_restart = len(reader.seen)
    suite.stop("tiering")
    suite.start("tiering")

    stub = tiering_pb2_grpc.TieringServiceStub(suite.channel("tiering", "core_banking"))
    replay = list(stub.EvaluateCustomers(iter(requests), timeout=180))  # the client re-sends the whole night
    assert len(replay) == n and not [a for a in replay if a.HasField("error")]
    for answer in replay:
        if answer.customer_id in acked:  # acknowledged before the kill: the same stored decision
            assert answer.decision_id == acked[answer.customer_id]

    wait_for(lambda: len({c for _, c in reader.seen}) >= n, 120, "the feed reader to see every customer")
    reader.stop.set()
    cursors = [c for c, _ in reader.seen]
    customers = [c for _, c in reader.seen]
    assert cursors == sorted(set(cursors)), "the feed repeated or reordered entries"
    assert sorted(customers) == sorted(f"K9T{i:05d}" for i in range(n)), "one NEW entry per customer, none lost"
    assert reader.reconnects >= 1 and seen_before_restart < n
    record("kill9-tiering", f"tiering SIGKILLed after {len(acked)} of {n} batch answers; replay of {n}: "
                            f"{len(acked)} identical decisions, 0 doubled; feed reader reconnected "
                            f"{reader.reconnects}x, {len(cursors)} entries, no gap or repeat")
    for cid in list(acked)[:50]:
        assert len(stub.ListTierChanges(tpb.ListTierChangesRequest(customer_id=cid), timeout=10).changes) == 1


def _month() -> str:
    return datetime.now(ZoneInfo("Asia/Shanghai")).strftime("%Y-%m")


def _affluent_customers(suite, n, prefix):
    stub = tiering_pb2_grpc.TieringServiceStub(suite.channel("tiering", "core_banking"))
    answers = list(stub.EvaluateCustomers(iter(
        [tpb.EvaluateCustomerRequest(customer=snapshot(i, 10_000_000, prefix), request_id=f"{prefix}-{i}")
         for i in range(n)]), timeout=120))
    assert {a.tier for a in answers} == {"AFFLUENT"}
    return [a.customer_id for a in answers]


def test_benefits_killed_mid_claims_loses_and_doubles_nothing(stack):
    suite = stack(["tiering", "benefits"])
    customers = _affluent_customers(suite, 200, "K9B")
    ops = benefits_pb2_grpc.BenefitsServiceStub(suite.channel("benefits", "operations"))
    ops.AdjustInventory(bpb.AdjustInventoryRequest(benefit_id="LOBBY_GIFT", delta=1000, reason="stock",
                                                   request_id="inv-1"), timeout=30)
    ops.SetBudget(bpb.SetBudgetRequest(group="AFFLUENT", period=_month(), amount_fen=100_000_000,
                                       request_id="bud-1"), timeout=30)

    acked: dict[str, str] = {}
    lock = threading.Lock()

    def claim(stub, cid):
        return stub.ClaimBenefit(bpb.ClaimBenefitRequest(customer_id=cid, benefit_id="LOBBY_GIFT", channel="LOBBY",
                                                         request_id=f"k9b-{cid}"), timeout=30)

    def worker(part):
        stub = benefits_pb2_grpc.BenefitsServiceStub(suite.channel("benefits", "branch_staff"))
        for cid in part:
            try:
                c = claim(stub, cid)
            except grpc.RpcError as exc:
                assert exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED), exc
                return
            with lock:
                acked[cid] = c.claim_id

    threads = [threading.Thread(target=worker, args=(customers[k::4],)) for k in range(4)]
    for t in threads:
        t.start()
    wait_for(lambda: len(acked) >= 40, 120, "40 acknowledged claims")
    suite.processes["benefits"].kill()  # SIGKILL with claims in flight
    for t in threads:
        t.join(60)
    assert len(acked) < len(customers)
    suite.stop("benefits")
    suite.start("benefits")

    stub = benefits_pb2_grpc.BenefitsServiceStub(suite.channel("benefits", "branch_staff"))
    for cid in customers:  # every client retries with its request_id
        again = claim(stub, cid)
        if cid in acked:
            assert again.claim_id == acked[cid], "an acknowledged claim was lost or doubled"
    ops = benefits_pb2_grpc.BenefitsServiceStub(suite.channel("benefits", "operations"))
    for cid in customers:
        claims = ops.ListClaims(bpb.ListClaimsRequest(customer_id=cid), timeout=30).claims
        assert len(claims) == 1, f"{cid}: {len(claims)} claims"
    inventory = ops.GetInventory(bpb.GetInventoryRequest(benefit_id="LOBBY_GIFT"), timeout=30).inventory
    assert (inventory.on_hand, inventory.reserved) == (1000, len(customers))
    budget = ops.GetBudget(bpb.GetBudgetRequest(group="AFFLUENT", period=_month()), timeout=30).budget
    assert budget.spent_fen == 3000 * len(customers)
    assert ops.Reconcile(bpb.ReconcileRequest(), timeout=60).ok
    record("kill9-benefits", f"benefits SIGKILLed after {len(acked)} of {len(customers)} claims acknowledged; "
                             f"after retries: {len(customers)} claims, 1 per customer, stock reserved "
                             f"{inventory.reserved}, budget spent {budget.spent_fen} fen, reconcile ok")


def test_tiering_down_while_benefits_and_assignment_run(stack):
    """docs/benefits.md: last-known profile (≤ profile_max_staleness_seconds old) while tiering is
    down, UNAVAILABLE for a customer never fetched. Assignment keeps serving what it knows and its
    feed follower reconnects by itself. Both stay SERVING; both catch up when tiering returns."""
    from kequn.assignment.v1 import assignment_pb2 as apb
    from kequn.assignment.v1 import assignment_pb2_grpc
    from tests.e2e.harness import metric_value

    suite = stack(["tiering", "assignment", "benefits"])
    known, unknown = _affluent_customers(suite, 2, "TDB")
    mobile = benefits_pb2_grpc.BenefitsServiceStub(suite.channel("benefits", "mobile_banking"))
    assert mobile.ListEntitlements(bpb.ListEntitlementsRequest(customer_id=known), timeout=30).tier == "AFFLUENT"
    cursor = lambda: metric_value(suite.metrics("assignment"), "kequn_assignment_feed_cursor") or 0
    wait_for(lambda: cursor() >= 2, 60, "assignment to follow the feed")
    ops = assignment_pb2_grpc.AssignmentServiceStub(suite.channel("assignment", "operations"))

    suite.processes["tiering"].kill()
    suite.stop("tiering")
    assert mobile.ListEntitlements(bpb.ListEntitlementsRequest(customer_id=known), timeout=30).tier == "AFFLUENT"
    with pytest.raises(grpc.RpcError) as err:
        mobile.ListEntitlements(bpb.ListEntitlementsRequest(customer_id=unknown), timeout=30)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    ops.ListChangeRequests(apb.ListChangeRequestsRequest(), timeout=30)  # assignment answers from its own data
    ops.UpsertBranch(apb.Branch(branch_id="BR-9", level=apb.BRANCH_LEVEL_BRANCH), timeout=30)  # and writes
    for service in ("benefits", "assignment"):
        assert suite.health(service) == SERVING and suite.processes[service].poll() is None

    suite.start("tiering")  # back: both recover by themselves
    wait_for(lambda: _tier_or_none(mobile, unknown) == "AFFLUENT", 60, "benefits to reach tiering again")
    before = cursor()
    _affluent_customers(suite, 3, "TDA")
    wait_for(lambda: cursor() >= before + 3, 60, "assignment's feed follower to resume")


def _tier_or_none(stub, cid):
    try:
        return stub.ListEntitlements(bpb.ListEntitlementsRequest(customer_id=cid), timeout=10).tier
    except grpc.RpcError:
        return None


def test_assignment_killed_mid_approvals_loses_and_doubles_nothing(stack):
    from kequn.assignment.v1 import assignment_pb2 as apb
    from kequn.assignment.v1 import assignment_pb2_grpc

    suite = stack(["tiering", "assignment"])
    ops = assignment_pb2_grpc.AssignmentServiceStub(suite.channel("assignment", "operations"))
    for branch_id, parent, level in (("BR-1", "", apb.BRANCH_LEVEL_BRANCH),
                                     ("SUB-11", "BR-1", apb.BRANCH_LEVEL_SUB_BRANCH),
                                     ("OUT-111", "SUB-11", apb.BRANCH_LEVEL_OUTLET)):
        ops.UpsertBranch(apb.Branch(branch_id=branch_id, parent_branch_id=parent, level=level), timeout=30)
    for staff_id, branch_id, role in (("LM-1", "OUT-111", "LOBBY_MANAGER"), ("LM-2", "OUT-111", "LOBBY_MANAGER"),
                                      ("branch_approver", "BR-1", "BRANCH_APPROVER")):
        ops.UpsertStaff(apb.Staff(staff_id=staff_id, branch_id=branch_id, role=role, active=True), timeout=30)
    n = 60
    tiering = tiering_pb2_grpc.TieringServiceStub(suite.channel("tiering", "core_banking"))
    list(tiering.EvaluateCustomers(iter([tpb.EvaluateCustomerRequest(customer=tpb.CustomerSnapshot(
        customer_id=f"K9A{i:03d}", as_of="2026-01-31", annual_avg_aum_fen=10_000_000, monthly_avg_aum_fen=10_000_000,
        point_in_time_aum_fen=10_000_000, holdings=[tpb.BranchHolding(branch_id="OUT-111", aum_fen=10_000_000)]))
        for i in range(n)]), timeout=60))

    def book(staff_id):
        return ops.GetBook(apb.GetBookRequest(staff_id=staff_id, page_size=1000), timeout=30)
    # Placed through tiering's change feed; then split between the two lobby managers.
    wait_for(lambda: book("LM-1").size + book("LM-2").size == n, 60, "every customer placed")
    moves = [(cid, "LM-1", "LM-2") for cid in book("LM-1").customer_ids] + \
            [(cid, "LM-2", "LM-1") for cid in book("LM-2").customer_ids]
    requests = [ops.CreateChangeRequest(apb.CreateChangeRequestRequest(
        customer_id=cid, action=apb.CHANGE_ACTION_TRANSFER, from_staff_id=src, to_staff_id=dst, reason="swap",
        request_id=f"cr-{cid}"), timeout=30).change_request_id for cid, src, dst in moves]

    acked: set[str] = set()
    lock = threading.Lock()

    def approve(stub, crid):
        return stub.ApproveChangeRequest(apb.DecideChangeRequestRequest(
            change_request_id=crid, comment="ok", request_id=f"ap-{crid}"), timeout=30)

    def worker(part):
        stub = assignment_pb2_grpc.AssignmentServiceStub(suite.channel("assignment", "branch_approver"))
        for crid in part:
            try:
                approve(stub, crid)
            except grpc.RpcError as exc:
                assert exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED), exc
                return
            with lock:
                acked.add(crid)

    threads = [threading.Thread(target=worker, args=(requests[k::2],)) for k in range(2)]
    for t in threads:
        t.start()
    wait_for(lambda: len(acked) >= 10, 60, "10 acknowledged approvals")
    suite.processes["assignment"].kill()  # SIGKILL with approvals in flight
    for t in threads:
        t.join(60)
    assert len(acked) < len(requests)
    suite.stop("assignment")
    suite.start("assignment")

    approver = assignment_pb2_grpc.AssignmentServiceStub(suite.channel("assignment", "branch_approver"))
    ops = assignment_pb2_grpc.AssignmentServiceStub(suite.channel("assignment", "operations"))
    for crid in requests:  # the approver's client retries every decision with its request_id
        assert approve(approver, crid).status == apb.CHANGE_REQUEST_STATUS_APPROVED
    expected = {cid: dst for cid, _, dst in moves}
    for cid, dst in expected.items():
        managers = ops.GetCustomerManagers(apb.GetCustomerManagersRequest(customer_id=cid), timeout=30).assignments
        assert [(a.role, a.staff_id) for a in managers] == [("LOBBY_MANAGER", dst)]
    assert book("LM-1").size + book("LM-2").size == n
    for crid in requests:  # one approval each in the audit trail: nothing doubled
        events = ops.ListAuditEvents(apb.ListAuditEventsRequest(
            subject=f"change_request/{crid}", action="change_request.approve", page_size=100), timeout=30)
        assert len(events.audit_events) == 1, crid
    record("kill9-assignment", f"assignment SIGKILLed after {len(acked)} of {len(requests)} approvals "
                               f"acknowledged; after retries all {len(requests)} APPROVED once, books "
                               f"{book('LM-1').size}+{book('LM-2').size} = {n}")
