"""The governance actions at the HTTP edge with a stand-in backend: CSRF on
every form, only the roles rbac.yaml allows, refusals in words, the
effective date sent as the exact UTC instant, and an explanation escaped."""
from __future__ import annotations

import re
import warnings
from datetime import datetime, timezone

import pytest

from kequn.rules.v1 import rules_pb2 as rpb
from kequn.tiering.v1 import tiering_pb2 as tpb
from services.common.auth import Policy, TokenStore, generate_dev_tokens
from services.console.access import Access
from services.console.backend import BackendError, CallStats
from services.console.config import ConsoleConfig
from services.console.web import Console

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

EN = {"accept-language": "en-GB,en;q=0.9"}
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
RULESET = "/rules/tiering/tiering.tiers"


class StandIn:
    def __init__(self):
        self.stats = CallStats()
        self.calls = []

    def health(self, service):
        return "SERVING"

    def get_ruleset(self, token, service, name, version=0):
        return rpb.RulesetVersion(name=name, version=version or 1, status=rpb.RULESET_STATUS_DRAFT, kind="k",
                                  document="name: x\n")

    def list_ruleset_versions(self, token, service, name, page_size=50, page_token=""):
        return rpb.ListRulesetVersionsResponse(versions=[self.get_ruleset(token, service, name, 2)])

    def ruleset_summary(self, token, service, name):
        return rpb.RulesetSummary(name=name, four_eyes=True)

    def list_releases(self, token, service, name="", page_size=20, page_token=""):
        return rpb.ListReleasesResponse(releases=[rpb.Release(
            release_id="R1", name=name, version=2, status=rpb.RELEASE_STATUS_PENDING, requested_by="rule_owner_1",
            comment="<script>alert(1)</script>")])

    def request_release(self, token, service, name, version, effective, comment, request_id):
        self.calls.append(("RequestRelease", token, version, effective, comment))
        r = rpb.Release(release_id="R2", name=name, version=version, status=rpb.RELEASE_STATUS_PENDING)
        if effective is not None:
            r.effective_from.FromDatetime(effective)
        return r

    def decide_release(self, token, service, release_id, approve, comment):
        self.calls.append(("Approve" if approve else "Reject", token, release_id, comment))
        raise BackendError("PERMISSION_DENIED", "SELF_APPROVAL", "rule_owner_1 requested release R1")

    def explain_decision(self, token, decision_id):
        self.calls.append(("ExplainDecision", token, decision_id))
        return tpb.DecisionExplanation(
            decision=tpb.TierDecision(customer_id="<b>C1</b>", tier="WEALTH", decision_id=decision_id),
            snapshot=tpb.CustomerSnapshot(customer_id="<b>C1</b>", annual_avg_aum_fen=12345),
            reproduced=False, difference="tier <i>differs</i>")


@pytest.fixture
def setup(tmp_path):
    tokens = generate_dev_tokens(tmp_path / "tokens.yaml")
    config = ConsoleConfig(tokens_file=tmp_path / "tokens.yaml")
    backend = StandIn()
    console = Console(config, backend, TokenStore(config.tokens_file), Access(Policy.load()))
    return TestClient(console.app(), headers=EN), backend, tokens


def sign_in(client, token) -> str:
    csrf = CSRF.search(client.get("/signin").text).group(1)
    client.post("/signin", data={"csrf_token": csrf, "token": token, "next": "/"}, follow_redirects=False)
    return CSRF.search(client.get("/").text).group(1)


def test_a_release_decision_needs_the_csrf_token(setup):
    client, backend, tokens = setup
    csrf = sign_in(client, tokens["rule_owner_1"])
    for sent in ({}, {"csrf_token": "forged"}, {"csrf_token": csrf + "x"}):
        answer = client.post(f"{RULESET}/releases/R1/approve", data={**sent, "comment": "ok"})
        assert answer.status_code == 403
    assert backend.calls == []


def test_a_refused_approval_is_said_in_words(setup):
    client, backend, tokens = setup
    csrf = sign_in(client, tokens["rule_owner_1"])
    answer = client.post(f"{RULESET}/releases/R1/approve", data={"csrf_token": csrf, "comment": "mine"},
                         follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == f"{RULESET}#releases"
    assert backend.calls == [("Approve", tokens["rule_owner_1"], "R1", "mine")]
    page = client.get(RULESET).text
    assert "You cannot decide a request you made yourself" in page and "[SELF_APPROVAL]" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert(1)" not in page


def test_only_rule_owners_decide_and_only_known_decisions(setup):
    client, backend, tokens = setup
    csrf = sign_in(client, tokens["operations"])  # may read releases, not decide them
    page = client.get(RULESET).text
    assert 'id="release-R1"' in page and "Approve release" not in page
    assert client.post(f"{RULESET}/releases/R1/approve", data={"csrf_token": csrf}).status_code == 403
    assert client.post(f"{RULESET}/releases/R1/cancel", data={"csrf_token": csrf}).status_code == 403
    csrf = sign_in(client, tokens["rule_owner_2"])
    assert client.post(f"{RULESET}/releases/R1/publish", data={"csrf_token": csrf}).status_code == 404
    assert backend.calls == []


def test_a_release_request_sends_the_shanghai_date_as_the_exact_instant(setup):
    client, backend, tokens = setup
    csrf = sign_in(client, tokens["rule_owner_1"])
    page = client.get(f"{RULESET}/v/2").text
    assert "Request a release" in page and 'id="publish"' not in page  # four eyes: no single-step publish
    answer = client.post(f"{RULESET}/v/2/request_release", follow_redirects=False, data={
        "csrf_token": csrf, "effective_from": "2030-02-01T08:00", "release_comment": "why"})
    assert answer.status_code == 303
    assert backend.calls == [("RequestRelease", tokens["rule_owner_1"], 2,
                              datetime(2030, 2, 1, 0, 0, tzinfo=timezone.utc), "why")]
    assert "(effective 2030-02-01 08:00)" in client.get(answer.headers["location"]).text
    bad = client.post(f"{RULESET}/v/2/request_release", data={"csrf_token": csrf, "effective_from": "soon"})
    assert bad.status_code == 400 and "The effective date is not a date and time." in bad.text
    assert len(backend.calls) == 1


def test_an_explanation_is_escaped_and_refused_to_roles_without_it(setup):
    client, backend, tokens = setup
    sign_in(client, tokens["branch_staff"])
    assert client.get("/decisions/D1").status_code == 403 and backend.calls == []
    sign_in(client, tokens["branch_approver"])
    page = client.get("/decisions/D1").text
    assert "&lt;b&gt;C1&lt;/b&gt;" in page and "<b>C1</b>" not in page
    assert "tier &lt;i&gt;differs&lt;/i&gt;" in page and "no: re-evaluating gives a different answer." in page
    assert "12345 (¥123.45)" in page
