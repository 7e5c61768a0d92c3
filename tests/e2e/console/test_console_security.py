"""Attacks on the console, over real HTTP and in the real browser, against the
real suite: forged or missing CSRF tokens, cookie flags, hostile ids and
texts, people acting beyond their roles. Each refused attempt changes
nothing in the services."""
from __future__ import annotations

import re
from contextlib import closing
from urllib.parse import quote

import httpx
import pytest

from kequn.assignment.v1 import assignment_pb2 as apb

from .conftest import start_console, stop

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    return CSRF.search(html).group(1)


def signed_in(world, role: str) -> tuple[httpx.Client, str]:
    """An HTTP client signed in as `role`, and its session's CSRF token."""
    client = httpx.Client(base_url=world.url, follow_redirects=False, timeout=30)
    page = client.get("/signin")
    answer = client.post("/signin", data={"csrf_token": csrf_of(page.text), "token": world.tokens[role], "next": "/"})
    assert answer.status_code == 303, answer.text
    return client, csrf_of(client.get("/").text)


def test_a_decision_without_or_with_a_forged_csrf_token_is_refused_and_changes_nothing(world):
    customer = "C4"
    source = world.manager(customer)
    cr = world.request_change("branch_staff", customer, "WM-2" if source == "WM-1" else "WM-1", "csrf probe")
    approver, csrf = signed_in(world, "branch_approver")
    _, other_csrf = signed_in(world, "branch_approver")  # a valid token, of another session
    path = f"/approvals/{cr.change_request_id}/decide"
    with closing(approver):
        for form in ({"decision": "approve"},
                     {"decision": "approve", "csrf_token": ""},
                     {"decision": "approve", "csrf_token": "forged" + csrf[6:]},
                     {"decision": "approve", "csrf_token": other_csrf}):
            refused = approver.post(path, data=form)
            assert refused.status_code == 403, form
            assert "CSRF" in refused.text
        # A cross-site form post carries no cookie at all (SameSite=Strict): it is not signed in.
        anonymous = httpx.post(world.url + path, data={"decision": "approve", "csrf_token": csrf})
        assert anonymous.status_code == 403
        assert world.status_of(cr.change_request_id).status == apb.CHANGE_REQUEST_STATUS_PENDING
        assert world.manager(customer) == source

        # The same post with the session's own token goes through.
        accepted = approver.post(path, data={"decision": "reject", "comment": "no", "csrf_token": csrf})
        assert accepted.status_code == 303
    assert world.status_of(cr.change_request_id).status == apb.CHANGE_REQUEST_STATUS_REJECTED


def test_sign_in_and_sign_out_need_a_csrf_token_and_sign_out_ends_the_session(world):
    client = httpx.Client(base_url=world.url, follow_redirects=False, timeout=30)
    with closing(client):
        client.get("/signin")
        assert client.post("/signin", data={"token": world.tokens["operations"]}).status_code == 403
        client_csrf = csrf_of(client.get("/signin").text)
        assert client.post("/signin", data={"token": world.tokens["operations"], "csrf_token": client_csrf}) \
            .status_code == 303
        old_cookie = dict(client.cookies)
        assert client.get("/operations").status_code == 200
        csrf = csrf_of(client.get("/").text)
        assert client.post("/signout", data={}).status_code == 403  # a forced sign-out needs the token too
        assert client.post("/signout", data={"csrf_token": csrf}).status_code == 303
    replay = httpx.get(world.url + "/operations", cookies=old_cookie, follow_redirects=False)
    assert replay.status_code == 303 and replay.headers["location"].startswith("/signin")


def test_the_session_cookie_is_httponly_strict_and_holds_no_token(world, person):
    ops = person("operations")
    cookies = ops.context.cookies()
    assert len(cookies) == 1
    cookie = cookies[0]
    assert cookie["name"] == "kequn_console" and cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    assert cookie["secure"] is False  # plain HTTP here; Secure with __Host- over TLS (tests/unit/console)
    assert world.tokens["operations"] not in cookie["value"]
    assert ops.page.evaluate("document.cookie") == ""  # scripts cannot read it
    response = ops.page.goto(world.url + "/operations")
    headers = response.headers
    assert "script-src 'none'" in headers["content-security-policy"]
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY" and headers["x-content-type-options"] == "nosniff"
    assert headers["cache-control"] == "no-store"


HOSTILE = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">"\'&'


def test_a_hostile_customer_id_and_a_hostile_reason_are_shown_as_text(world, person):
    # Stored: a maker writes markup into a change request's reason.
    customer = "C5"
    source = world.manager(customer)
    cr = world.request_change("branch_staff", customer, "WM-2" if source == "WM-1" else "WM-1", HOSTILE)

    staff = person("branch_staff")
    dialogs = []
    staff.page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page = staff.go("/customers?customer_id=" + quote(HOSTILE, safe=""))
    assert page.locator("#customer-title .id").inner_text() == HOSTILE
    assert page.locator("#customer_id").input_value() == HOSTILE
    assert page.evaluate("window.__pwned") is None and page.locator("main script, main img").count() == 0
    html = page.content()
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in html
    assert staff.errors == []  # the services' refusals of that id are shown in the page, not as errors

    approver = person("branch_approver")
    page = approver.go("/approvals")
    row = page.locator(f'[id="cr-{cr.change_request_id}"]')
    assert HOSTILE in row.inner_text()
    assert page.evaluate("window.__pwned") is None and row.locator("script, img").count() == 0
    assert dialogs == []
    assert approver.errors == []


def test_a_person_without_the_role_neither_sees_nor_can_post_an_action(world, person):
    customer = "C6"
    source = world.manager(customer)
    cr = world.request_change("branch_staff", customer, "WM-2" if source == "WM-1" else "WM-1", "role probe")

    staff = person("branch_staff")
    nav = staff.page.get_by_role("navigation").inner_text()
    assert "Approvals" not in nav and "Rules" not in nav and "Operations" not in nav and "Scores" not in nav
    page = staff.go("/approvals")
    assert page.locator("#error-message").inner_text() == "Your roles do not allow this page or action."
    staff.answered(403)

    client, csrf = signed_in(world, "branch_staff")
    with closing(client):
        assert client.get("/approvals").status_code == 403
        refused = client.post(f"/approvals/{cr.change_request_id}/decide",
                              data={"decision": "approve", "csrf_token": csrf})
        assert refused.status_code == 403
        assert client.get("/rules").status_code == 403
        assert client.post("/rules/tiering/tiering.tiers/versions",
                           data={"document": "name: x", "csrf_token": csrf}).status_code == 403
        assert client.get(f"/scores/{'2025Q4'}/csv").status_code == 403
    assert world.status_of(cr.change_request_id).status == apb.CHANGE_REQUEST_STATUS_PENDING

    ops, ops_csrf = signed_in(world, "operations")  # sees rules, may not upload them
    with closing(ops):
        assert ops.get("/rules/tiering/tiering.tiers").status_code == 200
        assert "Upload a new version" not in ops.get("/rules/tiering/tiering.tiers").text
        assert ops.post("/rules/tiering/tiering.tiers/versions",
                        data={"document": "name: x", "csrf_token": ops_csrf}).status_code == 403

    hr = person("hr")
    assert hr.page.get_by_role("navigation").inner_text().split() == ["Overview", "Books", "Scores"]  # as rbac.yaml says
    page = hr.go("/overview")  # the book fill hr may read; not the tier feed, stock or budgets
    assert page.locator("#fill").count() == 1
    assert page.locator("#tiers, #stock, #budgets").count() == 0
    hr.check_page("overview-hr")


def test_a_request_body_over_the_limit_is_refused(world):
    client, csrf = signed_in(world, "rule_admin")
    with closing(client):
        big = "x" * (3 * 1024 * 1024)
        answer = client.post("/rules/tiering/tiering.tiers/versions", data={"document": big, "csrf_token": csrf})
        assert answer.status_code == 413


def test_served_over_https_the_cookie_is_secure_and_host_bound(world, tmp_path):
    import ssl
    import time

    from tests.security.certs import CertificateAuthority

    ca = CertificateAuthority(tmp_path / "pki")
    issued = ca.issue("console", "127.0.0.1", ips=("127.0.0.1",), server=True)
    process, port = start_console(world.suite, tmp_path, "console-https", KEQUN_CONSOLE_HTTPS_CERT=str(issued.cert),
                                  KEQUN_CONSOLE_HTTPS_KEY=str(issued.key))
    trust = ssl.create_default_context(cafile=str(ca.path))
    try:
        client = httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=trust, follow_redirects=False, timeout=30)
        with closing(client):
            deadline = time.monotonic() + 60
            while True:
                try:
                    page = client.get("/signin")
                    break
                except httpx.TransportError:
                    assert process.poll() is None, (tmp_path / "console-https.log").read_text()
                    assert time.monotonic() < deadline, "console over HTTPS did not come up"
                    time.sleep(0.3)
            cookie = page.headers["set-cookie"]
            assert cookie.startswith("__Host-kequn_console=") and "; Secure" in cookie and "HttpOnly" in cookie
            answer = client.post("/signin", data={"csrf_token": csrf_of(page.text), "token": world.tokens["hr"]})
            assert answer.status_code == 303 and "; Secure" in answer.headers["set-cookie"]
            assert client.get("/scores").status_code == 200
        with pytest.raises(httpx.TransportError):  # and not over plain HTTP on that port
            httpx.get(f"http://127.0.0.1:{port}/signin", timeout=5).raise_for_status()
    finally:
        stop(process)


HOSTILE_GETS = [
    "/books?staff_id=" + quote("x" * 5000), "/books?staff_id=WM-1&page_token=" + quote("not a token!"),
    "/approvals?branch_id=%00&page_token=%FF%FE", "/approvals?page_token=" + quote("{}"),
    "/customers?customer_id=" + quote("客户'\"<>%00"), "/customers?customer_id=" + quote("\u202e" * 300),
    "/scores?period_id=" + quote("../../etc/passwd") + "&page_token=zzz", "/scores/%2e%2e/csv",
    "/scores/" + quote("2025Q4\r\nSet-Cookie: x=1", safe="") + "/csv",
    "/scores/2025Q4/staff/" + quote("<svg onload=alert(1)>", safe=""),
    "/rules/nope/x", "/rules/tiering/" + quote("a" * 3000), "/rules/tiering/tiering.tiers/v/99999999999999999999",
    "/rules/tiering/tiering.tiers/v/-1", "/rules/tiering/tiering.tiers/diff?from=x&to=1",
    "/rules/tiering/tiering.tiers/diff?from=1&to=987654", "/operations?page_token=%%%&actor=" + quote("a" * 4000),
    "/static/../web.py", "/static/%2e%2e/web.py", "/nowhere", "/signin?next=" + quote("javascript:alert(1)"),
]


def test_hostile_requests_get_answers_not_server_errors(world):
    client, csrf = signed_in(world, "admin")  # every page open: the most code reached
    with closing(client):
        for path in HOSTILE_GETS:
            answer = client.get(path)
            assert answer.status_code < 500, (path, answer.status_code, answer.text[:300])
            assert "Traceback" not in answer.text and "x=1" not in answer.headers.get("set-cookie", "")
        assert client.get("/static/../web.py").status_code == 404
        for path, form in [
            ("/approvals/%00/decide", {"decision": "approve"}),
            ("/approvals/" + quote("x" * 3000) + "/decide", {"decision": "maybe", "comment": "c" * 5000}),
            ("/customers/C1/change-requests", {"action": "EXPLODE"}),
            ("/customers/" + quote("<b>") + "/change-requests", {"action": "ADD", "to_staff_id": "\x00"}),
            ("/rules/tiering/tiering.tiers/versions", {"document": "\x00\x01: [", "comment": "x"}),
            ("/rules/tiering/tiering.tiers/v/1/simulate", {"sample": "[" * 10000}),
            ("/rules/tiering/tiering.tiers/v/1/simulate", {"sample": '{"annual_avg_aum_fen": "lots"}'}),
            ("/rules/tiering/tiering.tiers/v/1/explode", {}),
            ("/lang", {"lang": "<script>", "next": "//evil.example"}),
        ]:
            answer = client.post(path, data={**form, "csrf_token": csrf})
            assert answer.status_code < 500, (path, answer.status_code, answer.text[:300])
            if answer.status_code == 303:
                assert answer.headers["location"].startswith("/") and not answer.headers["location"].startswith("//")
    assert world.process.poll() is None  # still serving


def test_an_idle_session_expires_and_the_person_signs_in_again(world, tmp_path):
    import time

    process, port = start_console(world.suite, tmp_path, "console-idle", KEQUN_CONSOLE_SESSION_IDLE_SECONDS="5")
    try:
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", follow_redirects=False, timeout=30)
        with closing(client):
            page = client.get("/signin")
            client.post("/signin", data={"csrf_token": csrf_of(page.text), "token": world.tokens["hr"]})
            assert client.get("/scores").status_code == 200
            time.sleep(6)  # idle past the limit (a lower bound: no timing is asserted)
            expired = client.get("/scores")
            assert expired.status_code == 303 and expired.headers["location"].startswith("/signin")
    finally:
        stop(process)
