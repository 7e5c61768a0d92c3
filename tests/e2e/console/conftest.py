"""The console against the real suite: the four services as processes on
PostgreSQL (one schema each), the console as a process, and Debian's Chromium
driven by Playwright. Started once for this package and shared by the
console's browser and security tests; each test uses its own data.
"""
from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import grpc
import pytest

from kequn.assignment.v1 import assignment_pb2 as apb
from kequn.assignment.v1 import assignment_pb2_grpc
from kequn.benefits.v1 import benefits_pb2_grpc
from kequn.rules.v1 import rules_pb2_grpc
from kequn.scoring.v1 import scoring_pb2 as spb
from kequn.scoring.v1 import scoring_pb2_grpc
from kequn.tiering.v1 import tiering_pb2 as tpb
from kequn.tiering.v1 import tiering_pb2_grpc
from services.common.testing import REPO_ROOT, free_port, start_service_process
from tests.e2e.harness import Suite, eventually, seed_one_branch

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = REPO_ROOT / "tests" / "artifacts" / "console"
YUAN = 100
PERIOD = "2025Q4"


def _pg_schema_urls(pg_database, names) -> dict[str, str]:
    """One fresh schema per service in the session's PostgreSQL database."""
    import psycopg

    base = pg_database.ensure()
    urls = {}
    with psycopg.connect(base.replace("postgresql+psycopg://", "postgresql://", 1), autocommit=True) as conn:
        for name in names:
            schema = f"console_{name}_{secrets.token_hex(4)}"
            conn.execute(f'CREATE SCHEMA "{schema}"')
            urls[name] = base + ("&" if "?" in base else "?") + "options=" + quote(f"-csearch_path={schema}")
    return urls


@dataclass
class World:
    suite: Suite
    url: str
    port: int
    process: object
    tokens: dict
    customers: dict = field(default_factory=dict)   # customer id -> its wealth manager at the start

    def stub(self, service: str, role: str):
        stubs = {"assignment": assignment_pb2_grpc.AssignmentServiceStub,
                 "tiering": tiering_pb2_grpc.TieringServiceStub,
                 "scoring": scoring_pb2_grpc.ScoringServiceStub,
                 "benefits": benefits_pb2_grpc.BenefitsServiceStub}
        return stubs[service](self.suite.channel(service, role))

    def rules(self, service: str, role: str):
        return rules_pb2_grpc.RuleStoreServiceStub(self.suite.channel(service, role))

    def manager(self, customer_id: str, role: str = "WEALTH_MANAGER") -> str | None:
        try:
            found = self.stub("assignment", "operations").GetCustomerManagers(
                apb.GetCustomerManagersRequest(customer_id=customer_id))
        except grpc.RpcError:
            return None
        return next((a.staff_id for a in found.assignments if a.role == role), None)

    def request_change(self, maker: str, customer_id: str, to_staff: str, reason: str) -> apb.ChangeRequest:
        from_staff = self.manager(customer_id)
        return self.stub("assignment", maker).CreateChangeRequest(apb.CreateChangeRequestRequest(
            customer_id=customer_id, action=apb.CHANGE_ACTION_TRANSFER, from_staff_id=from_staff,
            to_staff_id=to_staff, reason=reason))

    def status_of(self, change_request_id: str) -> apb.ChangeRequest:
        for status in (apb.CHANGE_REQUEST_STATUS_PENDING, apb.CHANGE_REQUEST_STATUS_APPROVED,
                       apb.CHANGE_REQUEST_STATUS_REJECTED):
            page = self.stub("assignment", "operations").ListChangeRequests(
                apb.ListChangeRequestsRequest(status=status, page_size=500))
            for r in page.change_requests:
                if r.change_request_id == change_request_id:
                    return r
        raise AssertionError(f"change request {change_request_id} not found")


def _seed(world: World) -> None:
    ops = world.stub("assignment", "operations")
    seed_one_branch(ops)

    tiering = world.stub("tiering", "core_banking")
    for i in range(1, 9):
        aum = (250_000 + 10_000 * i) * YUAN
        tiering.EvaluateCustomer(tpb.EvaluateCustomerRequest(customer=tpb.CustomerSnapshot(
            customer_id=f"C{i}", as_of="2026-01-31", annual_avg_aum_fen=aum, monthly_avg_aum_fen=aum,
            point_in_time_aum_fen=aum, holdings=[tpb.BranchHolding(branch_id="OUT-111", aum_fen=aum)])))
    for i in range(1, 9):
        world.customers[f"C{i}"] = eventually(lambda i=i: world.manager(f"C{i}"), what=f"C{i} placed")
    # Before the lock period opens: WM-1 claims a payroll group book by employer, which covers CP-1
    # (affluent, held by the lobby manager); CU-1 (affluent with a loan) needs a loan manager the
    # branch does not have, so it is unplaced.
    ops.ClaimGroup(apb.GroupClaim(staff_id="WM-1", group="PAYROLL", selector={"payroll_employer_id": "E-CONSOLE"},
                                  request_id="console-claim-1"))
    affluent = 100_000 * YUAN
    for customer_id, extra in (("CP-1", {"payroll_employer_id": "E-CONSOLE"}), ("CU-1", {"has_personal_loan": True})):
        tiering.EvaluateCustomer(tpb.EvaluateCustomerRequest(customer=tpb.CustomerSnapshot(
            customer_id=customer_id, as_of="2026-01-31", annual_avg_aum_fen=affluent, monthly_avg_aum_fen=affluent,
            point_in_time_aum_fen=affluent, holdings=[tpb.BranchHolding(branch_id="OUT-111", aum_fen=affluent)],
            **extra)))
    eventually(lambda: "CP-1" in ops.GetGroupBook(apb.GetGroupBookRequest(staff_id="WM-1", group="PAYROLL"))
               .customer_ids, what="CP-1 in WM-1's payroll group book")
    eventually(lambda: any(u.customer_id == "CU-1" for u in ops.ListUnplaced(
        apb.ListUnplacedRequest(branch_id="BR-1")).unplaced), what="CU-1 unplaced")
    ops.OpenLockPeriod(apb.LockPeriod(period_id="2026", branch_id="BR-1", starts_on="2026-01-01",
                                      ends_on="2099-12-31"))

    hr = world.stub("scoring", "hr")
    hr.CreatePeriod(spb.CreatePeriodRequest(period_id=PERIOD, starts_on="2025-10-01", ends_on="2025-12-31",
                                            due_on="2026-01-31"))
    hr.SubmitMetrics(spb.SubmitMetricsRequest(period_id=PERIOD, values=[
        spb.MetricValue(staff_id=f"RM-{i}", role="REMOTE_MANAGER", branch_id=f"OUT-{i % 2 + 1:03d}",
                        indicator_id="calls_made", value=str(400 + 173 * i)) for i in range(1, 8)]))
    hr.CalculatePeriod(spb.CalculatePeriodRequest(period_id=PERIOD))
    hr.FinalizePeriod(spb.FinalizePeriodRequest(period_id=PERIOD))


def start_console(suite: Suite, workdir: Path, name: str = "console", **settings: str):
    """`python -m services.console` against `suite`, on a free port; (process, port) once it answers."""
    port = free_port()
    env = {**suite.env, "KEQUN_CONSOLE_PORT": str(port), **settings}
    log_path = workdir / f"{name}.log"
    process = start_service_process("services.console", env, stdout=open(log_path, "ab"),
                                    stderr=subprocess.STDOUT)
    if "KEQUN_CONSOLE_HTTPS_CERT" in settings:
        return process, port  # the caller checks it with its own trust

    def up():
        if process.poll() is not None:
            raise RuntimeError(f"console exited: {log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False
    eventually(up, what="console up")
    return process, port


def stop(process) -> None:
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="package")  # stopped when the console tests are done, not at session end
def world(tmp_path_factory, _pg_database):
    workdir = tmp_path_factory.mktemp("console-world")
    urls = _pg_schema_urls(_pg_database, ("tiering", "assignment", "scoring", "benefits"))
    suite = Suite(workdir, database_urls=urls)
    process = None
    try:
        suite.start()
        process, port = start_console(suite, workdir)
        w = World(suite, f"http://127.0.0.1:{port}", port, process, suite.tokens)
        _seed(w)
        yield w
    finally:
        stop(process)
        suite.close()


@pytest.fixture(scope="package")
def browser():
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} missing (apt-get install chromium)", pytrace=False)
        pytest.skip(f"{CHROMIUM} missing (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


# Every visible form control has a label; every svg/img says what it shows;
# every button has a name. Returns what is missing, so a test can list it.
A11Y_CHECK = """() => {
  const missing = [];
  for (const el of document.querySelectorAll('input, select, textarea')) {
    if (el.type === 'hidden') continue;
    const named = (el.labels && el.labels.length && [...el.labels].some(l => l.textContent.trim()))
      || el.getAttribute('aria-label') || el.getAttribute('aria-labelledby');
    if (!named) missing.push('control ' + (el.id || el.name));
  }
  for (const el of document.querySelectorAll('svg')) {
    const title = el.querySelector(':scope > title');
    if (!(el.getAttribute('aria-label') || (title && title.textContent.trim()))) missing.push('svg');
  }
  for (const el of document.querySelectorAll('img')) {
    if (!el.hasAttribute('alt')) missing.push('img ' + el.src);
  }
  for (const el of document.querySelectorAll('button')) {
    if (!(el.textContent.trim() || el.getAttribute('aria-label'))) missing.push('button');
  }
  if (!document.documentElement.lang) missing.push('html lang');
  if (!document.title.trim()) missing.push('title');
  return missing;
}"""


class Person:
    """One person's browser tab: signs in with a token, collects console errors."""

    def __init__(self, browser, world: World, role: str, **context_args):
        self.world, self.role = world, role
        self.context = browser.new_context(locale="en-US", accept_downloads=True, **context_args)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(f"{m.type}: {m.text}") if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))

    def sign_in(self) -> "Person":
        self.page.goto(self.world.url + "/signin")
        self.page.get_by_label("Access token").fill(self.world.tokens[self.role])
        self.page.get_by_role("button", name="Sign in").click()
        self.page.wait_for_load_state()
        assert self.page.locator("#me").inner_text() == self.role
        return self

    def go(self, path: str):
        self.page.goto(self.world.url + path)
        return self.page

    def answered(self, status: int) -> None:
        """The page just loaded was refused with `status` on purpose: Chromium logs exactly that
        one failed load as a console error, and nothing else may be there."""
        assert len(self.errors) == 1 and f"status of {status} " in self.errors[0], self.errors
        self.errors.clear()

    def check_page(self, name: str) -> None:
        """No console errors, accessible labels, and a screenshot kept as a test artefact."""
        missing = self.page.evaluate(A11Y_CHECK)
        assert missing == [], f"{name}: unlabelled {missing}"
        assert self.errors == [], f"{name}: console errors {self.errors}"
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def person(browser, world):
    opened: list[Person] = []

    def open_as(role: str, **kwargs) -> Person:
        p = Person(browser, world, role, **kwargs)
        opened.append(p)
        return p.sign_in()
    yield open_as
    for p in opened:
        p.close()


def keep_docs_screenshot(source: Path) -> None:
    """docs/console.png for the README, rewritten only when asked (KEQUN_DOCS_SCREENSHOT=1)."""
    if os.environ.get("KEQUN_DOCS_SCREENSHOT") == "1":
        shutil.copyfile(source, REPO_ROOT / "docs" / "console.png")
