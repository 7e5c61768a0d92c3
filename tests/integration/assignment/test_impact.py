"""Downstream impact of a tier candidate on the books (issue 15): the figures
book_impact reports from simulated tiers equal a real dry-run assignment run
after those tiers arrived through the feed."""
from __future__ import annotations

from collections import Counter

from services.assignment.impact import SimulatedCustomer, book_impact
from services.rules.testing import release

from .conftest import ROOT, customers, org

SMALL_BOOKS = ("    WEALTH_MANAGER: {initial: 400, max: 500}\n", "    WEALTH_MANAGER: {initial: 2, max: 3}\n")


def _small_books(svc) -> None:
    """A policy with tiny wealth books, released with four eyes."""
    text = (ROOT / "rulesets" / "policy.yaml").read_text(encoding="utf-8")
    assert SMALL_BOOKS[0] in text
    admin = svc.rules.admin
    record = admin.create(text.replace(*SMALL_BOOKS), "author")
    release(admin, record.name, record.version, requester="author", approver="checker")
    svc.rules.refresh()


def test_book_impact_equals_a_real_dry_run_with_the_new_tiers(svc):
    org(svc)
    _small_books(svc)
    svc.upsert_staff("hr", "WM1", "SUB-11", "WEALTH_MANAGER", True)
    svc.upsert_staff("hr", "WM2", "SUB-12", "WEALTH_MANAGER", True)
    svc.upsert_staff("hr", "LM1", "OUT-111", "LOBBY_MANAGER", True)
    customers(svc, [("C01", "WEALTH", "OUT-111"), ("C02", "WEALTH", "OUT-112"), ("C03", "AFFLUENT", "OUT-111"),
                    ("C04", "AFFLUENT", "OUT-111"), ("C05", "AFFLUENT", "OUT-112"), ("C06", "MASS", "OUT-121"),
                    ("C07", "AFFLUENT", "OUT-121"), ("C08", "WEALTH", "OUT-121")])
    svc.run_assignment("ops")
    # The candidate: more wealth customers under SUB-11 than WM1's book holds, one down to affluent.
    simulated = [SimulatedCustomer("C03", "WEALTH"), SimulatedCustomer("C04", "WEALTH"),
                 SimulatedCustomer("C05", "WEALTH"), SimulatedCustomer("C08", "AFFLUENT"),
                 SimulatedCustomer("C06", "WEALTH"), SimulatedCustomer("NOBODY", "WEALTH")]
    impact = book_impact(svc, simulated)
    assert (impact.simulated, impact.unknown) == (5, 1)
    assert impact.baseline.assigned == 0 and not impact.baseline.new_manager  # as stored: nothing to do

    # The real thing: the new tiers arrive through the feed, then a dry run.
    customers(svc, [("C03", "WEALTH", "OUT-111"), ("C04", "WEALTH", "OUT-111"), ("C05", "WEALTH", "OUT-112"),
                    ("C08", "AFFLUENT", "OUT-121"), ("C06", "WEALTH", "OUT-121")])
    real = svc.run_assignment("ops", dry_run=True)
    assert Counter((u["branch_id"], u["role"], u["reason"]) for u in real.unplaced) == impact.candidate.unplaced
    assert (real.assigned, real.moved, real.removed) == (impact.candidate.assigned, impact.candidate.moved,
                                                         impact.candidate.removed)
    assert sum(impact.candidate.new_manager.values()) == real.assigned + real.moved + real.suggestions_created
    assert impact.candidate.unplaced[("OUT-112", "WEALTH_MANAGER", "ALL_BOOKS_FULL")] \
        + impact.candidate.unplaced[("OUT-111", "WEALTH_MANAGER", "ALL_BOOKS_FULL")] > 0
    assert [(b["staff_id"], b["load"], b["max"]) for b in impact.full_books] == [("WM1", 3, 3)]
