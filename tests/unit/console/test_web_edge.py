"""The console's HTTP edge with a stand-in backend: cookies over TLS, the SSO
gateway's trusted header, revoked tokens, redirects, health and metrics.
(The real services and a real browser are in tests/e2e/console.)"""
from __future__ import annotations

import re
import warnings

import pytest

from kequn.assignment.v1 import assignment_pb2 as apb
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


class StandInBackend:
    """Answers GetBook for WM-1 only, as the person whose token is passed."""

    def __init__(self):
        self.stats = CallStats()
        self.calls = []

    def get_book(self, token, staff_id, page_size=50, page_token=""):
        self.calls.append(("GetBook", token, staff_id))
        self.stats.add("assignment", "GetBook", "OK" if staff_id == "WM-1" else "NOT_FOUND", 0.001)
        if staff_id != "WM-1":
            raise BackendError("NOT_FOUND", "NOT_FOUND", f"staff {staff_id} not found")
        return apb.Book(staff_id="WM-1", role="WEALTH_MANAGER", size=3, max_size=500, branch_id="SUB-1",
                        customer_ids=["C1", "C2", "C3"], locked=True)

    def get_group_book(self, token, staff_id, group, page_size=50, page_token=""):
        self.calls.append(("GetGroupBook", token, staff_id))
        return apb.GroupBook(staff_id=staff_id, group=group)

    def list_lock_periods(self, token, branch_id, page_size=50, page_token=""):
        self.calls.append(("ListLockPeriods", token, branch_id))
        return apb.ListLockPeriodsResponse(lock_periods=[apb.LockPeriod(
            period_id="2026", branch_id="BR-1", starts_on="2026-01-01", ends_on="2026-12-31",
            status=apb.LOCK_PERIOD_STATUS_OPEN, in_force=True)])

    def list_unplaced(self, token, branch_id, page_size=50, page_token=""):
        self.calls.append(("ListUnplaced", token, branch_id))
        return apb.ListUnplacedResponse(unplaced=[apb.Unplaced(
            customer_id="C9", reason="ALL_BOOKS_FULL", tier="WEALTH", role="WEALTH_MANAGER", branch_id=branch_id,
            tried_branch_ids=["SUB-1", "BR-1"])])

    def list_staff(self, token, branch_id="", role="", page_size=50, page_token=""):
        self.calls.append(("ListStaff", token, branch_id))
        return apb.ListStaffResponse(staff=[apb.Staff(staff_id="WM-1", branch_id=branch_id, role="WEALTH_MANAGER",
                                                      active=True)])

    def health(self, service):
        return "SERVING"


@pytest.fixture
def tokens(tmp_path):
    return generate_dev_tokens(tmp_path / "tokens.yaml")


def make(tmp_path, **settings):
    config = ConsoleConfig(tokens_file=tmp_path / "tokens.yaml", **settings)
    backend = StandInBackend()
    console = Console(config, backend, TokenStore(config.tokens_file), Access(Policy.load()))
    return console, backend


def sign_in(client, token):
    csrf = CSRF.search(client.get("/signin").text).group(1)
    return client.post("/signin", data={"csrf_token": csrf, "token": token, "next": "/books"}, follow_redirects=False)


def test_over_tls_the_cookie_is_secure_with_the_host_prefix(tmp_path, tokens):
    console, backend = make(tmp_path)
    client = TestClient(console.app(), base_url="https://console.bank.test", headers=EN)
    answer = sign_in(client, tokens["branch_staff"])
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith("__Host-kequn_console=") and "Secure" in cookie and "HttpOnly" in cookie
    assert "samesite=strict" in cookie.lower() and "Path=/" in cookie and "Domain" not in cookie
    page = client.get("/books")
    assert page.status_code == 200 and "WM-1" not in page.text  # my book: the person's own name
    assert backend.calls[-1] == ("GetBook", tokens["branch_staff"], "branch_staff")  # the person's token


def test_plain_http_cookie_is_not_secure_unless_forced(tmp_path, tokens):
    console, _ = make(tmp_path)
    assert "Secure" not in sign_in(TestClient(console.app(), headers=EN), tokens["hr"]).headers["set-cookie"]
    forced, _ = make(tmp_path, cookie_secure="true")  # TLS ends at a gateway in front
    assert "Secure" in sign_in(TestClient(forced.app(), headers=EN), tokens["hr"]).headers["set-cookie"]


def test_the_gateway_header_signs_in_only_when_configured(tmp_path, tokens):
    plain, _ = make(tmp_path)
    client = TestClient(plain.app(), headers=EN)
    answer = client.get("/books", headers={"x-kequn-token": tokens["branch_staff"]}, follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"].startswith("/signin")  # ignored

    gated, backend = make(tmp_path, trusted_header="x-kequn-token", token_signin=False)
    client = TestClient(gated.app(), headers=EN)
    page = client.get("/books?staff_id=WM-1", headers={"X-Kequn-Token": "Bearer " + tokens["branch_staff"]})
    assert page.status_code == 200 and 'id="me">branch_staff<' in page.text
    assert backend.calls[-1][1] == tokens["branch_staff"]
    # Another person behind the same browser: the header wins, with a new session.
    page = client.get("/books?staff_id=WM-1", headers={"X-Kequn-Token": tokens["hr"]})
    assert 'id="me">hr<' in page.text
    # A header the tokens file does not know ends the session the cookie held.
    answer = client.get("/books?staff_id=WM-1", headers={"X-Kequn-Token": "revoked-or-forged"},
                        follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"].startswith("/signin")
    # An unknown token in the header signs nobody in; the token form is off in this mode.
    fresh = TestClient(gated.app(), headers=EN)
    assert fresh.get("/books", headers={"X-Kequn-Token": "forged"}, follow_redirects=False).status_code == 303
    assert 'name="token"' not in fresh.get("/signin").text
    assert sign_in(fresh, tokens["hr"]).status_code == 403


def test_a_revoked_token_ends_the_session_at_the_next_request(tmp_path, tokens):
    console, _ = make(tmp_path)
    client = TestClient(console.app(), headers=EN)
    assert sign_in(client, tokens["branch_staff"]).status_code == 303
    assert client.get("/books?staff_id=WM-1").status_code == 200
    generate_dev_tokens(tmp_path / "tokens.yaml")  # every token rotated
    answer = client.get("/books?staff_id=WM-1", follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"].startswith("/signin")
    assert "Your session ended" in client.get("/signin").text


def test_after_sign_in_only_local_paths_are_followed(tmp_path, tokens):
    console, _ = make(tmp_path)
    client = TestClient(console.app(), headers=EN)
    csrf = CSRF.search(client.get("/signin").text).group(1)
    for hostile in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        answer = client.post("/signin", data={"csrf_token": csrf, "token": tokens["hr"], "next": hostile},
                             follow_redirects=False)
        assert answer.headers["location"] == "/"
        csrf = CSRF.search(client.get("/").text).group(1)


def test_health_readiness_and_metrics(tmp_path, tokens):
    console, _ = make(tmp_path)
    client = TestClient(console.app(), headers=EN)
    assert client.get("/healthz").text == "ok"
    ready = client.get("/readyz").json()
    assert ready == {"ready": True, "backends": {s: "SERVING" for s in ("tiering", "assignment", "scoring",
                                                                        "benefits")}}
    sign_in(client, tokens["branch_staff"])
    client.get("/books?staff_id=WM-1")
    client.get("/books?staff_id=NOPE")
    text = client.get("/metrics").text
    assert 'kequn_console_http_requests_total{code="200",method="GET",route="books"} 2.0' in text
    assert 'kequn_console_backend_calls_total{grpc_code="NOT_FOUND",method="GetBook",service="assignment"} 1.0' \
        in text
    assert 'kequn_console_sessions{state="signed_in"} 1.0' in text


def test_the_book_page_shows_fill_and_lock(tmp_path, tokens):
    console, _ = make(tmp_path)
    client = TestClient(console.app(), headers=EN)
    sign_in(client, tokens["branch_approver"])
    page = client.get("/books?staff_id=WM-1").text
    assert 'id="book-size">3<' in page and "Locked (lock period)" in page
    assert 'aria-label="Fill: 3 / 500"' in page and "C2" in page


def test_config_from_the_environment():
    config = ConsoleConfig.from_env({"KEQUN_CONSOLE_PORT": "9090", "KEQUN_CONSOLE_TRUSTED_HEADER": "X-Token",
                                     "KEQUN_ASSIGNMENT_TARGET": "assignment:50052"})
    assert config.port == 9090 and config.trusted_header == "x-token" and config.token_signin is False
    assert config.targets["assignment"] == "assignment:50052" and config.url == "http://127.0.0.1:9090/"
    assert ConsoleConfig.from_env({}).port == 8080 and ConsoleConfig.from_env({}).token_signin is True
    from services.common.config import ConfigError
    with pytest.raises(ConfigError):
        ConsoleConfig.from_env({"KEQUN_CONSOLE_COOKIE_SECURE": "sometimes"})
    with pytest.raises(ConfigError):
        ConsoleConfig.from_env({"KEQUN_CONSOLE_HTTPS_CERT": "/c.pem"})


def test_kequn_serve_console_runs_the_console(monkeypatch):
    from services.cli import main as cli
    import services.console.__main__ as console_main

    ran = []
    monkeypatch.setattr(console_main, "main", lambda: ran.append("console") or 0)
    args = cli.build_parser().parse_args(["serve", "console"])
    assert args.func(args) == 0 and ran == ["console"]
