"""Whatever a browser sends — any path segment, query or form value — the
console answers with a page, never a server error (a stand-in backend that
refuses every call, so each page's refusal path runs too)."""
from __future__ import annotations

import re
import warnings
from urllib.parse import quote

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.common.auth import Policy, TokenStore, generate_dev_tokens
from services.console.access import Access
from services.console.backend import BackendError, CallStats
from services.console.config import ConsoleConfig
from services.console.web import Console

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


class Refusing:
    """Every RPC refused with a reason the pages must put in words."""

    def __init__(self):
        self.stats = CallStats()

    def health(self, service):
        return "UNREACHABLE"

    def __getattr__(self, name):
        def refuse(*args, **kwargs):
            raise BackendError("FAILED_PRECONDITION", "BOOK_FULL", "<b>refused</b>")
        return refuse


def _client(tmp_path_factory):
    directory = tmp_path_factory.mktemp("console-fuzz")
    tokens = generate_dev_tokens(directory / "tokens.yaml")
    config = ConsoleConfig(tokens_file=directory / "tokens.yaml")
    client = TestClient(Console(config, Refusing(), TokenStore(config.tokens_file), Access(Policy.load())).app(),
                        headers={"accept-language": "en"})
    csrf = CSRF.search(client.get("/signin").text).group(1)
    client.post("/signin", data={"csrf_token": csrf, "token": tokens["admin"]})
    return client, CSRF.search(client.get("/").text).group(1)


TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
GETS = ["/approvals?branch_id={}&page_token={}", "/books?staff_id={}&page_token={}", "/customers?customer_id={}&x={}",
        "/scores?period_id={}&role={}", "/scores/{}/staff/{}", "/scores/{}/csv?{}", "/rules/{}/{}",
        "/rules/tiering/{}/diff?from={}&to=2", "/rules/tiering/{}/v/{}", "/operations?actor={}&page_token={}",
        "/overview?{}={}", "/books?staff_id={}&group={}", "/books?unplaced_token={}&staff_token={}",
        "/benefits?include_inactive={}&page_token={}", "/benefits/{}?{}"]
POSTS = ["/approvals/{}/decide", "/customers/{}/change-requests", "/rules/tiering/{}/versions",
         "/rules/scoring/{}/v/1/simulate", "/rules/tiering/{}/v/2/test", "/rules/benefits/{}/v/3/publish", "/lang"]


def test_no_input_gets_a_server_error(tmp_path_factory):
    client, csrf = _client(tmp_path_factory)

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.sampled_from(GETS), TEXT, TEXT)
    def gets(template, a, b):
        answer = client.get(template.format(quote(a, safe=""), quote(b, safe="")), follow_redirects=False)
        assert answer.status_code < 500, (template, a, b, answer.text[:200])
        assert "<b>refused</b>" not in answer.text

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.sampled_from(POSTS), TEXT, st.dictionaries(st.sampled_from(
        ["decision", "comment", "action", "from_staff_id", "to_staff_id", "reason", "document", "sample",
         "comment", "lang", "next"]), TEXT, max_size=5))
    def posts(template, a, form):
        answer = client.post(template.format(quote(a, safe="")), data={**form, "csrf_token": csrf},
                             follow_redirects=False)
        assert answer.status_code < 500, (template, a, form, answer.text[:200])
        if answer.status_code == 303:
            assert answer.headers["location"].startswith("/") and not answer.headers["location"].startswith("//")

    gets()
    posts()
