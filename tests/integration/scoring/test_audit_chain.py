"""Every mutation of scoring appends to the tamper-evident `scoring_audit_log`
(SQLite and PostgreSQL): one record per request — a bulk submission or a
calculation is summarised in one record — with the caller, the x-request-id,
and what changed; refused and replayed requests write nothing."""
from __future__ import annotations

import hashlib
import json

import pytest
from sqlalchemy import select, update

from services.common import testing
from services.common.audit import verify_chain
from services.common.errors import AlreadyExists, FailedPrecondition, InvalidArgument
from services.scoring.store import audit_log, results, values

from .conftest import metric

RM, WA = "REMOTE_MANAGER", "WEALTH_ADVISOR"


def calling_as(name: str, request_id: str):
    return testing.calling_as(name, request_id, "hr")


def records(scoring) -> list:
    with scoring.engine.connect() as conn:
        return conn.execute(select(audit_log).order_by(audit_log.c.id)).fetchall()


def chain(scoring):
    with scoring.engine.connect() as conn:
        return verify_chain(conn, audit_log)


def before_after(row) -> tuple:
    return json.loads(row.before_json), json.loads(row.after_json)


def stored_values_digest(scoring, period, staff_ids, ratings=False) -> str:
    with scoring.engine.connect() as conn:
        rows = conn.execute(select(values.c.staff_id, values.c.input_key, values.c.value).where(
            values.c.period_id == period, values.c.staff_id.in_(staff_ids), values.c.is_rating == ratings)
            .order_by(values.c.staff_id, values.c.input_key)).all()
    return hashlib.sha256("".join(f"{s}\t{k}\t{v}\n" for s, k, v in rows).encode()).hexdigest()


def stored_results_digest(scoring, period, role) -> str:
    with scoring.engine.connect() as conn:
        rows = conn.execute(select(results.c.staff_id, results.c.total, results.c.rank).where(
            results.c.period_id == period, results.c.role == role, results.c.revision == 1)
            .order_by(results.c.staff_id)).all()
    return hashlib.sha256("".join(f"{role}\t{s}\t{t}\t{r}\n" for s, t, r in rows).encode()).hexdigest()


def test_each_mutation_writes_one_record_with_who_what_before_and_after(scoring):
    with calling_as("hr-ann", "req-create"):
        scoring.create_period("2025", "2025-01-01", "2025-12-31", "2026-01-31", actor="hr-ann")
    with calling_as("ops-bob", "req-metrics"):
        scoring.submit("2025", [metric("R1", RM, "calls_made", 1800), metric("R2", RM, "calls_made", 500),
                                metric("R2", RM, "customer_development", 200)], ratings=False, actor="ops-bob")
    with calling_as("mgr-cy", "req-ratings"):
        scoring.submit("2025", [metric("R1", RM, "training_tests", 90)], ratings=True, actor="mgr-cy")
    with calling_as("hr-ann", "req-calc"):
        scoring.calculate("2025", role=RM)
    with calling_as("hr-ann", "req-final"):
        scoring.finalize("2025", actor="hr-ann")
    old = scoring.get_score("R2", "2025")
    with calling_as("hr-lead", "req-revise"):
        new = scoring.revise("R2", "2025", "call log was incomplete", [metric("R2", RM, "calls_made", 900)],
                             actor="hr-lead")

    rows = records(scoring)
    assert [(r.actor, r.request_id, r.action, r.subject) for r in rows] == [
        ("hr-ann", "req-create", "period.create", "period/2025"),
        ("ops-bob", "req-metrics", "values.submit_metrics", "period/2025"),
        ("mgr-cy", "req-ratings", "values.submit_ratings", "period/2025"),
        ("hr-ann", "req-calc", "period.calculate", "period/2025"),
        ("hr-ann", "req-final", "period.finalize", "period/2025"),
        ("hr-lead", "req-revise", "score.revise", "score/2025/R2"),
    ]
    create, metrics, ratings, calc, final, revise = rows

    assert before_after(create) == (None, {"period_id": "2025", "starts_on": "2025-01-01", "ends_on": "2025-12-31",
                                           "due_on": "2026-01-31", "status": "OPEN"})

    before, after = before_after(metrics)
    assert before == {"status": "OPEN"} and after["status"] == "OPEN"
    assert (after["values"], after["people"], after["new_people"], after["moved_people"]) == (3, 2, 2, 0)
    assert after["by_role"] == {RM: {"people": 2, "values": 3, "scorecard": "scoring.remote_manager",
                                     "scorecard_version": 1}}
    assert after["branches"] == ["B1"] and after["stale_roles"] == [RM]
    assert after["values_sha256"] == stored_values_digest(scoring, "2025", ["R1", "R2"]) != ""
    _, after = before_after(ratings)
    assert (after["values"], after["people"], after["new_people"]) == (1, 1, 0)
    assert after["values_sha256"] == stored_values_digest(scoring, "2025", ["R1"], ratings=True)

    before, after = before_after(calc)
    assert before == {"status": "OPEN"}
    assert after["status"] == "CALCULATED" and (after["role"], after["branch_id"], after["scored"]) == (RM, "", 2)
    assert after["by_role"] == {RM: {"scored": 2, "scorecard": "scoring.remote_manager", "scorecard_version": 1,
                                     "peer_groups": 1}}
    assert after["results_sha256"] == stored_results_digest(scoring, "2025", RM)

    assert before_after(final) == ({"status": "CALCULATED"}, {"status": "FINALIZED", "results": 2})

    before, after = before_after(revise)
    assert revise.reason == "call log was incomplete"
    assert (before["revision"], before["total"], before["rank"], before["corrections"]) == (
        1, old.total, old.rank, {})
    assert (after["revision"], after["total"], after["rank"], after["corrections"]) == (
        2, new.total, new.rank, {"calls_made": "900"})
    assert before["total"] != after["total"]
    assert (after["scorecard_name"], after["scorecard_version"]) == ("scoring.remote_manager", 1)

    assert chain(scoring) == (True, None)


def test_bulk_submission_and_calculation_write_one_summary_record_each(scoring):
    with calling_as("hr", "req-create"):
        scoring.create_period("2025", "2025-01-01", "2025-12-31", "2026-01-31", actor="hr")
    remote = [metric(f"R{i}", RM, "calls_made", 400 + i, branch=f"B{i % 3}") for i in range(150)]
    advisors = [metric(f"A{i}", WA, "new_pb_customers", i % 40, branch=f"B{i % 3}") for i in range(150)]
    with calling_as("ops", "req-bulk"):
        assert scoring.submit("2025", remote + advisors, ratings=False, actor="ops") == 300
    with calling_as("hr", "req-calc-all"):
        assert scoring.calculate("2025") == (300, "CALCULATED")
    with calling_as("hr", "req-calc-branch"):
        scoring.calculate("2025", role=WA, branch_id="B1")

    rows = records(scoring)
    assert [r.action for r in rows] == ["period.create", "values.submit_metrics", "period.calculate",
                                        "period.calculate"]
    _, submitted = before_after(rows[1])
    assert (submitted["values"], submitted["people"], submitted["new_people"]) == (300, 300, 300)
    assert {r: (v["people"], v["values"]) for r, v in submitted["by_role"].items()} == {RM: (150, 150),
                                                                                         WA: (150, 150)}
    assert submitted["branches"] == ["B0", "B1", "B2"] and submitted["stale_roles"] == [RM, WA]
    assert submitted["values_sha256"] == stored_values_digest(scoring, "2025", [v.staff_id for v in remote + advisors])

    before, everyone = before_after(rows[2])
    assert before == {"status": "OPEN"} and (everyone["role"], everyone["branch_id"]) == ("", "")
    assert {r: v["scored"] for r, v in everyone["by_role"].items()} == {RM: 150, WA: 150}
    before, branch = before_after(rows[3])
    assert before == {"status": "CALCULATED"} and (branch["role"], branch["branch_id"]) == (WA, "B1")
    assert branch["scored"] == branch["by_role"][WA]["scored"] == 50     # B1's peer group only
    assert chain(scoring) == (True, None)


def test_refused_and_replayed_requests_write_nothing(scoring):
    with calling_as("hr", "req-1"):
        scoring.create_period("2025", "2025-01-01", "2025-12-31", "2026-01-31", actor="hr")
        scoring.submit("2025", [metric("R1", RM, "calls_made", 1000)], ratings=False, actor="hr", request_id="s-1")
    written = len(records(scoring))
    with calling_as("hr", "req-2"):
        with pytest.raises(AlreadyExists):
            scoring.create_period("2025", "2025-01-01", "2025-12-31", "2026-01-31", actor="hr")
        with pytest.raises(InvalidArgument):
            scoring.submit("2025", [metric("R1", "NO_SUCH_ROLE", "calls_made", 1)], ratings=False, actor="hr")
        with pytest.raises(FailedPrecondition):
            scoring.finalize("2025", actor="hr")                          # not calculated yet
        with pytest.raises(FailedPrecondition):
            scoring.revise("R1", "2025", "x", [metric("R1", RM, "calls_made", 9)], actor="hr")
        # the same request again: answered from the first, nothing changes, nothing recorded
        assert scoring.submit("2025", [metric("R1", RM, "calls_made", 1000)], ratings=False, actor="hr",
                              request_id="s-1") == 1
    assert len(records(scoring)) == written == 2
    assert chain(scoring) == (True, None)


def test_outside_an_rpc_the_actor_is_system(scoring, open_period):
    scoring.submit(open_period, [metric("R1", RM, "calls_made", 1000)], ratings=False, actor="demo")
    scoring.calculate(open_period)
    assert [(r.actor, r.request_id) for r in records(scoring)] == [("system", "")] * 3


@pytest.mark.parametrize("column, value", [("after_json", '{"status":"OPEN"}'), ("actor", "mallory"),
                                           ("request_id", "forged")])
def test_tampering_a_row_breaks_the_chain_at_that_row(scoring, column, value):
    with calling_as("hr", "req-t"):
        scoring.create_period("2025", "2025-01-01", "2025-12-31", "2026-01-31", actor="hr")
        scoring.submit("2025", [metric("R1", RM, "calls_made", 1000)], ratings=False, actor="hr")
        scoring.calculate("2025")
        scoring.finalize("2025", actor="hr")
    rows = records(scoring)
    assert chain(scoring) == (True, None) and len(rows) == 4
    target = rows[2].id                                                    # the calculation
    with scoring.engine.begin() as conn:
        conn.execute(update(audit_log).where(audit_log.c.id == target).values({column: value}))
    assert chain(scoring) == (False, target)
