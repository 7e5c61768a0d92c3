"""Concurrent requests against PostgreSQL: nothing lost, nothing doubled."""
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, select

from services.common.errors import FailedPrecondition
from services.scoring.store import results

from .conftest import metric

pytestmark = pytest.mark.postgres
RM = "REMOTE_MANAGER"


@pytest.fixture
def db_url(pg_url):
    return pg_url


def run_together(n, fn):
    barrier = threading.Barrier(n)

    def go(i):
        barrier.wait()
        try:
            return fn(i)
        except Exception as exc:  # noqa: BLE001 - the outcome is what we check
            return exc
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(go, range(n)))


def calls_of(score):
    return next(i.raw_value for i in score.indicators if i.indicator_id == "calls_made")


def test_submissions_racing_finalize_are_either_in_the_final_results_or_refused(scoring, open_period):
    scoring.submit(open_period, [metric(f"R{i}", RM, "calls_made", 100) for i in range(8)], ratings=False, actor="t")
    scoring.calculate(open_period)

    def act(i):
        if i == 8:  # HR: calculate and finalize until the values hold still
            while True:
                scoring.calculate(open_period)
                try:
                    return scoring.finalize(open_period, actor="hr")
                except FailedPrecondition as exc:
                    if "calculate again" not in str(exc):
                        raise
        outcomes = []
        for round_ in range(5):
            try:
                scoring.submit(open_period, [metric(f"R{i}", RM, "calls_made", 200 + round_)], ratings=False,
                               actor="t")
                outcomes.append(200 + round_)
            except FailedPrecondition:
                outcomes.append(None)
        return outcomes

    outcomes = run_together(9, act)
    assert outcomes[8] == (8, "FINALIZED")
    for i in range(8):
        accepted = [v for v in outcomes[i] if v is not None]
        assert outcomes[i] == accepted + [None] * (5 - len(accepted))   # refused only after the finalize
        stored = scoring._read(lambda s: s.values_of(open_period, f"R{i}"))["calls_made"]
        assert stored == str(accepted[-1] if accepted else 100)          # the last accepted value, never a refused one
        assert calls_of(scoring.get_score(f"R{i}", open_period)) == stored   # and the frozen result used it


def test_concurrent_revisions_each_get_their_own_number(scoring, open_period):
    scoring.submit(open_period, [metric("R1", RM, "calls_made", 100)], ratings=False, actor="t")
    scoring.calculate(open_period)
    scoring.finalize(open_period, actor="hr")
    answers = run_together(6, lambda i: scoring.revise("R1", open_period, f"fix {i}",
                                                       [metric("R1", RM, "calls_made", 1000 + i)], actor="hr"))
    assert sorted(a.revision for a in answers) == [2, 3, 4, 5, 6, 7]
    with scoring.engine.connect() as conn:
        latest = conn.execute(select(results.c.revision).where(results.c.staff_id == "R1",
                                                               results.c.is_latest.is_(True))).scalars().all()
    assert latest == [7]
    assert [scoring.get_score("R1", open_period, r).revision for r in range(1, 8)] == list(range(1, 8))


def test_the_same_request_id_at_once_is_one_revision(scoring, open_period):
    scoring.submit(open_period, [metric("R1", RM, "calls_made", 100)], ratings=False, actor="t")
    scoring.calculate(open_period)
    scoring.finalize(open_period, actor="hr")
    answers = run_together(5, lambda i: scoring.revise("R1", open_period, "fix", [metric("R1", RM, "calls_made", 900)],
                                                       actor="hr", request_id="same"))
    assert {a.revision for a in answers} == {2}
    assert scoring.get_score("R1", open_period).revision == 2


def test_concurrent_calculations_never_double_a_result(scoring, open_period):
    scoring.submit(open_period, [metric(f"R{i}", RM, "calls_made", 100 * i) for i in range(50)], ratings=False,
                   actor="t")
    answers = run_together(4, lambda i: scoring.calculate(open_period))
    assert answers == [(50, "CALCULATED")] * 4
    with scoring.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(results)).scalar_one() == 50
