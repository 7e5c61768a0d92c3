"""The hostile inputs of issue 11, each sent on purpose to the running suite on
PostgreSQL (where SQLite had hidden them): NUL bytes, a 101-character branch,
int64-max amounts twice, 21-digit and JSON page tokens, forged, tampered and
foreign tokens, a 1 MB id, and streams with over a thousand bad items.

Every answer is a clear INVALID_ARGUMENT (reason INVALID_INPUT, with the
field named in BadRequest) or FAILED_PRECONDITION; never INTERNAL or
UNKNOWN; no process dies; refused requests change no table of any service.
Figures go to bench/results/reliability-attacks.txt for docs/reliability.md.
"""
from __future__ import annotations

import base64
import hashlib
import json
import time

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2
from grpc_status import rpc_status

from kequn.assignment.v1 import assignment_pb2
from kequn.benefits.v1 import benefits_pb2
from kequn.rules.v1 import rules_pb2
from kequn.scoring.v1 import scoring_pb2
from kequn.tiering.v1 import tiering_pb2
from services.common.bounds import declared
from tests.security.conftest import AVAILABLE, record
from tests.security.rpcs import all_rpcs, call, rpcs_served_by
from tests.security.strategies import string_fields, with_string

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

NEVER = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
INVALID = grpc.StatusCode.INVALID_ARGUMENT
ECHO_LIMIT = 64  # no error may quote more than this many characters of what the caller sent
FIGURES: dict[str, int] = {}


def rpc(service: str, method: str):
    return next(r for r in all_rpcs() if r.service.endswith("." + service) and r.name == method)


class Answer:
    def __init__(self, code, status):
        self.code, self.status = code, status

    @property
    def text(self) -> str:
        """Everything the caller reads: message and every detail."""
        return "" if self.status is None else str(self.status.message) + "".join(
            str(_unpack(d)) for d in self.status.details)

    def detail(self, kind):
        for d in (self.status.details if self.status is not None else ()):
            if d.Is(kind.DESCRIPTOR):
                return _unpack(d, kind)
        return None

    @property
    def reason(self) -> str | None:
        info = self.detail(error_details_pb2.ErrorInfo)
        return info.reason if info else None

    @property
    def fields(self) -> list[str]:
        bad = self.detail(error_details_pb2.BadRequest)
        return [v.field for v in bad.field_violations] if bad else []


def _unpack(detail, kind=None):
    for k in ([kind] if kind else [error_details_pb2.ErrorInfo, error_details_pb2.BadRequest,
                                   error_details_pb2.RetryInfo]):
        if detail.Is(k.DESCRIPTOR):
            out = k()
            detail.Unpack(out)
            return out
    return detail


def send(suite, service, target, request, timeout=30.0) -> Answer:
    channel = suite.channel(service, "admin")
    try:
        call(channel, target, request, timeout=timeout)
    except grpc.RpcError as exc:
        answer = Answer(exc.code(), rpc_status.from_call(exc))
    else:
        answer = Answer(grpc.StatusCode.OK, None)
    FIGURES["calls"] = FIGURES.get("calls", 0) + 1
    assert answer.code not in NEVER, f"{target.path} answered {answer.code.name}: {answer.text[:300]}"
    return answer


def refused(suite, service, target, request, field: str | None = None) -> Answer:
    answer = send(suite, service, target, request)
    assert answer.code == INVALID, f"{target.path}: {answer.code.name} {answer.text[:300]}"
    assert answer.reason == "INVALID_INPUT"
    if field is not None:
        assert field in answer.fields, f"{target.path}: {answer.fields}"
    return answer


def digests(suite) -> dict[str, dict[str, str]]:
    return {s: suite.pg.digest(s) for s in AVAILABLE}


def quiet_digests(suite, timeout=30.0):
    """The state once background work (assignment following tiering's feed) has settled."""
    deadline = time.monotonic() + timeout
    previous = digests(suite)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        current = digests(suite)
        if current == previous:
            return current
        previous = current
    return previous


def assert_alive(suite):
    for service in AVAILABLE:
        process = suite.processes[service]
        assert process.poll() is None, f"{service} died (exit {process.returncode}):\n{suite.log(service)[-3000:]}"
        assert suite.health(service) == health_pb2.HealthCheckResponse.SERVING


@pytest.fixture(scope="module")
def pg(pg_suite):
    if set(AVAILABLE) != {"tiering", "assignment", "scoring", "benefits"}:
        pytest.skip("needs all four services")
    yield pg_suite
    assert_alive(pg_suite)


# --- NUL bytes, column widths, overflowing amounts --------------------------------------------

def _customer(**kw):
    values = dict(customer_id="ATK1", as_of="2025-03-01", annual_avg_aum_fen=1_000)
    values.update(kw)
    return tiering_pb2.CustomerSnapshot(**values)


NUL_CASES = [
    ("tiering", "TieringService", "EvaluateCustomer",
     tiering_pb2.EvaluateCustomerRequest(customer=_customer(customer_id="C\x001")), "customer.customer_id"),
    ("tiering", "TieringService", "EvaluateCustomer",
     tiering_pb2.EvaluateCustomerRequest(customer=_customer(attributes={"k": "v\x00"})), "customer.attributes[0].value"),
    ("tiering", "TieringService", "GetCustomerTier", tiering_pb2.GetCustomerTierRequest(customer_id="C\x00"),
     "customer_id"),
    ("tiering", "TieringService", "ListTierChanges", tiering_pb2.ListTierChangesRequest(customer_id="C\x00"),
     "customer_id"),
    ("benefits", "BenefitsService", "ClaimBenefit", benefits_pb2.ClaimBenefitRequest(
        customer_id="C1", benefit_id="LOBBY_GIFT", channel="MOBILE", request_id="r\x00"), "request_id"),
    ("benefits", "BenefitsService", "ListEntitlements", benefits_pb2.ListEntitlementsRequest(customer_id="C\x00"),
     "customer_id"),
    ("benefits", "BenefitsService", "CreditPoints", benefits_pb2.CreditPointsRequest(
        customer_id="C1", points=5, reason="nul \x00 reason", request_id="p-nul"), "reason"),
    ("assignment", "AssignmentService", "GetCustomerManagers",
     assignment_pb2.GetCustomerManagersRequest(customer_id="C\x00"), "customer_id"),
    ("assignment", "AssignmentService", "ListAuditEvents", assignment_pb2.ListAuditEventsRequest(subject="s\x00"),
     "subject"),
    ("assignment", "AssignmentService", "ListAuditEvents", assignment_pb2.ListAuditEventsRequest(actor="a\x00"),
     "actor"),
    ("assignment", "AssignmentService", "ListChangeRequests",
     assignment_pb2.ListChangeRequestsRequest(branch_id="B\x00"), "branch_id"),
    ("assignment", "AssignmentService", "ListChangeRequests",
     assignment_pb2.ListChangeRequestsRequest(customer_id="C\x00"), "customer_id"),
    ("scoring", "ScoringService", "GetScore", scoring_pb2.GetScoreRequest(staff_id="S\x00", period_id="P1"),
     "staff_id"),
    ("scoring", "RuleStoreService", "GetRuleset", rules_pb2.GetRulesetRequest(name="x\x00", version=1), "name"),
]


def test_nul_bytes_are_invalid_argument_naming_the_field(pg):
    before = quiet_digests(pg)
    for service, svc, method, request, field in NUL_CASES:
        refused(pg, service, rpc(svc, method), request, field)
    FIGURES["nul_cases"] = len(NUL_CASES)
    assert quiet_digests(pg) == before


def test_column_widths_and_int64_amounts_are_refused_before_the_database(pg):
    before = quiet_digests(pg)
    evaluate = rpc("TieringService", "EvaluateCustomer")
    refused(pg, "tiering", evaluate, tiering_pb2.EvaluateCustomerRequest(customer=_customer(
        holdings=[tiering_pb2.BranchHolding(branch_id="B" * 101, aum_fen=1)])), "customer.holdings[0].branch_id")
    refused(pg, "tiering", evaluate, tiering_pb2.EvaluateCustomerRequest(
        customer=_customer(annual_avg_aum_fen=2**63 - 1)), "customer.annual_avg_aum_fen")
    adjust, credit = rpc("BenefitsService", "AdjustInventory"), rpc("BenefitsService", "CreditPoints")
    for attempt in range(2):  # twice: the second used to overflow the first's sum
        refused(pg, "benefits", adjust, benefits_pb2.AdjustInventoryRequest(
            benefit_id="LOBBY_GIFT", delta=2**63 - 1, reason="restock", request_id=f"inv-max-{attempt}"), "delta")
        refused(pg, "benefits", credit, benefits_pb2.CreditPointsRequest(
            customer_id="C-MAX", points=2**63 - 1, reason="bonus", request_id=f"pts-max-{attempt}"), "points")
    refused(pg, "benefits", rpc("BenefitsService", "SetBudget"), benefits_pb2.SetBudgetRequest(
        group="PAYROLL", period="2099-01", amount_fen=2**63 - 1, request_id="budget-max"), "amount_fen")
    for service in ("tiering", "scoring"):  # versions are INTEGER columns
        refused(pg, service, rpc("RuleStoreService", "GetRuleset"),
                rules_pb2.GetRulesetRequest(name="tiering.tiers", version=2**40), "version")
    refused(pg, "assignment", rpc("AssignmentService", "ListAuditEvents"), assignment_pb2.ListAuditEventsRequest(
        start_time={"seconds": -2**63}), "start_time.seconds")
    assert quiet_digests(pg) == before


# --- page tokens ------------------------------------------------------------------------------

def _b64_json(value) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode()


FORGED_TOKENS = ["9" * 21, "1" + "0" * 20, _b64_json(10**21), _b64_json("x"), _b64_json([1, 2]),
                 _b64_json({"a": 1}), _b64_json(["2025-01-01", "c1"]), _b64_json([["P1", "", "", False], ["a", "b", "c"]]),
                 "abc", "a.b", "\x00", "x" * 600]

LISTS = [  # (service, rpc, request with page_token set by the test)
    ("tiering", rpc("TieringService", "ListTierChanges"), lambda t: tiering_pb2.ListTierChangesRequest(page_token=t)),
    ("assignment", rpc("AssignmentService", "ListChangeRequests"),
     lambda t: assignment_pb2.ListChangeRequestsRequest(page_token=t)),
    ("assignment", rpc("AssignmentService", "ListAuditEvents"),
     lambda t: assignment_pb2.ListAuditEventsRequest(page_token=t)),
    ("assignment", rpc("AssignmentService", "GetBook"),
     lambda t: assignment_pb2.GetBookRequest(staff_id="S-ATK", page_token=t)),
    ("scoring", rpc("ScoringService", "ListScores"),
     lambda t: scoring_pb2.ListScoresRequest(period_id="P1", page_token=t)),
    ("benefits", rpc("BenefitsService", "ListClaims"), lambda t: benefits_pb2.ListClaimsRequest(customer_id="C1",
                                                                                                page_token=t)),
    *[(s, rpc("RuleStoreService", "ListRulesets"), lambda t: rules_pb2.ListRulesetsRequest(page_token=t))
      for s in ("tiering", "assignment", "scoring", "benefits")],
    ("tiering", rpc("RuleStoreService", "ListRulesetVersions"),
     lambda t: rules_pb2.ListRulesetVersionsRequest(name="tiering.tiers", page_token=t)),
]


def test_forged_and_foreign_page_tokens_are_refused_by_every_list(pg):
    before = quiet_digests(pg)
    # a genuine token: tiering's rule store has more than one ruleset
    list_rulesets = rpc("RuleStoreService", "ListRulesets")
    first = call(pg.channel("tiering"), list_rulesets, rules_pb2.ListRulesetsRequest(page_size=1), timeout=10)
    genuine = first.next_page_token
    assert genuine, "tiering has at least two rulesets"
    second = call(pg.channel("tiering"), list_rulesets, rules_pb2.ListRulesetsRequest(page_size=1, page_token=genuine),
                  timeout=10)
    assert second.rulesets[0].name != first.rulesets[0].name
    body, mac = genuine.split(".")
    tampered = [_b64_json(10**21).rstrip("=") + "." + mac, genuine[:-3], body + "." + mac[::-1], genuine + "x"]
    n = 0
    for service, target, build in LISTS:
        foreign = [] if target.name == "ListRulesets" and service == "tiering" else [genuine]
        for token in FORGED_TOKENS + tampered + foreign:
            answer = refused(pg, service, target, build(token), "page_token")
            assert token[:ECHO_LIMIT + 1] not in answer.text or len(token) <= 3
            n += 1
    # the same token from another service's rule store (same list, other kinds) is foreign too
    refused(pg, "scoring", list_rulesets, rules_pb2.ListRulesetsRequest(page_size=1, page_token=genuine), "page_token")
    FIGURES["token_cases"] = n + 1
    assert quiet_digests(pg) == before


# --- what errors quote -----------------------------------------------------------------------

def _distinctive(n: int) -> str:
    """n characters in which every 65-character window is unique (hex of a hash chain)."""
    out, h = [], b"kequn"
    while sum(map(len, out)) < n:
        h = hashlib.sha256(h).digest()
        out.append(h.hex())
    return "".join(out)[:n]


def _echoes(text: str, sent: str) -> bool:
    return any(text[i:i + ECHO_LIMIT + 1] in sent for i in range(max(0, len(text) - ECHO_LIMIT)))


def test_a_megabyte_id_gets_a_short_answer_on_every_rpc_that_takes_a_customer(pg):
    huge = "C" * 1_000_000
    n = 0
    for service in AVAILABLE:
        for target in rpcs_served_by(service):
            if target.client_streaming or "customer_id" not in target.input.DESCRIPTOR.fields_by_name:
                continue
            answer = refused(pg, service, target, target.input(customer_id=huge), "customer_id")
            assert len(answer.status.message) <= 300 and not _echoes(answer.text, huge)
            n += 1
    assert n >= 8
    FIGURES["megabyte_ids"] = n


def test_no_error_quotes_more_than_a_short_prefix_of_any_string_sent(pg):
    """Every RPC, up to three string fields each, filled to their declared maximum with a value
    whose every 65-character window is unique: whatever the answer, it quotes none of them."""
    n = 0
    for service in AVAILABLE:
        for target in rpcs_served_by(service):
            if target.server_streaming:
                continue
            for path in string_fields(target.input.DESCRIPTOR):
                field = target.input.DESCRIPTOR
                for name in path[:-1]:
                    field = field.fields_by_name[name].message_type
                bound = declared(field.fields_by_name[path[-1]])
                value = _distinctive(min(bound.max_len, 100_000))
                request = with_string(target.input, path, value)
                answer = send(pg, service, target, [request] if target.client_streaming else request)
                assert not _echoes(answer.text, value), f"{target.path} {'.'.join(path)} quoted: {answer.text[:300]}"
                n += 1
    FIGURES["echo_cases"] = n
    assert_alive(pg)


# --- streams with bad items -------------------------------------------------------------------

BAD_ITEMS = [
    lambda i: _customer(customer_id=f"ST\x00{i}"),
    lambda i: _customer(customer_id=f"ST{i}", as_of="2025-03-01\x00"),
    lambda i: _customer(customer_id=f"ST{i}", holdings=[tiering_pb2.BranchHolding(branch_id="B" * 101, aum_fen=1)]),
    lambda i: _customer(customer_id="C" * 70_000),
    lambda i: _customer(customer_id=f"ST{i}", annual_avg_aum_fen=-2**63),
    lambda i: _customer(customer_id=f"ST{i}", attributes={f"a{j}": "v" for j in range(300)}),
    lambda i: _customer(customer_id=f"ST{i}", attributes={"k\x00": "v"}),
    lambda i: _customer(customer_id=f"\u202eST{i}"),
    lambda i: _customer(customer_id=f"ST{i}", card_level="GOLD\n"),
    lambda i: _customer(customer_id=f"ST{i}", age=-5),
    lambda i: _customer(customer_id=f"ST{i}", as_of="2025-13-45"),  # within bounds, refused by the use case
]


def _stream_items(n: int, tag: str):
    """(request, is_bad): two bad items out of three, of every kind in turn; good ones are stored."""
    items = []
    for i in range(n):
        if i % 3 == 2:
            items.append((tiering_pb2.EvaluateCustomerRequest(
                customer=_customer(customer_id=f"{tag}{i:05d}", annual_avg_aum_fen=i * 10_007),
                request_id=f"{tag}-{i}"), False))
        else:
            items.append((tiering_pb2.EvaluateCustomerRequest(customer=BAD_ITEMS[i % len(BAD_ITEMS)](f"{tag}{i}"),
                                                              request_id=f"{tag}-{i}"), True))
        if i % 7 == 0 and items[-1][1]:  # oversized idempotency key on some bad items
            items[-1][0].request_id = "r" * 129
    return items


def _check_answers(items, answers, tag):
    assert len(answers) == len(items), "every item answers, the stream goes on"
    bad_seen = 0
    for (request, bad), answer in zip(items, answers):
        assert answer.error.code not in (2, 13), f"INTERNAL/UNKNOWN in place: {answer.error.message}"
        if bad:
            assert answer.HasField("error") and answer.error.code == INVALID.value[0], answer
            assert len(answer.customer_id) <= ECHO_LIMIT and len(answer.error.message) <= 300
            bad_seen += 1
        else:
            assert not answer.HasField("error"), answer.error.message
            assert answer.customer_id == request.customer.customer_id and answer.decision_id
    return bad_seen


def test_streams_answer_every_bad_item_in_place_and_go_on(pg):
    tiering = pg.channel("tiering")
    items = _stream_items(1200, "SE")
    stream = tiering.stream_stream("/kequn.tiering.v1.TieringService/EvaluateCustomers",
                                   request_serializer=lambda m: m.SerializeToString(),
                                   response_deserializer=tiering_pb2.TierDecision.FromString)
    bad = _check_answers(items, list(stream((r for r, _ in items), timeout=300)), "SE")

    batch_items = _stream_items(900, "SB")
    batches = tiering.stream_stream("/kequn.tiering.v1.TieringService/EvaluateCustomerBatches",
                                    request_serializer=lambda m: m.SerializeToString(),
                                    response_deserializer=tiering_pb2.EvaluateCustomerBatchesResponse.FromString)
    messages = [tiering_pb2.EvaluateCustomerBatchesRequest(requests=[r for r, _ in batch_items[k:k + 300]])
                for k in range(0, len(batch_items), 300)]
    responses = list(batches(iter(messages), timeout=300))
    assert len(responses) == len(messages)
    bad += _check_answers(batch_items, [d for resp in responses for d in resp.decisions], "SB")
    assert bad >= 1000
    FIGURES["stream_items"] = len(items) + len(batch_items)
    FIGURES["bad_stream_items"] = bad

    # Nothing of a refused item was stored; every good one was.
    get = rpc("TieringService", "GetCustomerTier")
    for request, is_bad in (items + batch_items)[::29]:
        customer_id = request.customer.customer_id
        if not is_bad:
            assert send(pg, "tiering", get, tiering_pb2.GetCustomerTierRequest(customer_id=customer_id)).code == \
                grpc.StatusCode.OK
        elif customer_id.startswith("ST") and len(customer_id) <= 64 and customer_id.isprintable():
            assert send(pg, "tiering", get, tiering_pb2.GetCustomerTierRequest(customer_id=customer_id)).code == \
                grpc.StatusCode.NOT_FOUND
    assert_alive(pg)


def test_figures_are_recorded(pg):
    if not {"nul_cases", "token_cases", "megabyte_ids", "echo_cases", "bad_stream_items"} <= FIGURES.keys():
        pytest.skip("only after the whole module ran")
    record("attacks", " ".join(f"{k}={v}" for k, v in sorted(FIGURES.items())))
