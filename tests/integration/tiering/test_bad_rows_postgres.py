"""A chunk whose write PostgreSQL refuses because of some of its rows is
written again without them: every other row is stored, each refused row
answers its own error, in order, and the change feed stays gap-free.

The refused rows are made by data, on real PostgreSQL: values validation lets
through today (a NUL byte, a branch id longer than its column) and, so the
test holds whatever the edge learns to refuse, a CHECK constraint the test
adds to the decisions table ("the database refuses this row")."""
from __future__ import annotations

import pytest
from sqlalchemy import text

from services.common.errors import InvalidArgument
from services.tiering.domain import Holding, Snapshot
from services.tiering.service import EvaluateRequest

pytestmark = pytest.mark.postgres


def _poison(harness) -> None:
    with harness.engine.begin() as conn:
        conn.execute(text("ALTER TABLE tiering_decisions ADD CONSTRAINT test_poison "
                          "CHECK (customer_id NOT LIKE 'POISON%')"))


def _request(customer_id: str, aum: int = 30_000_000, **kwargs) -> EvaluateRequest:
    return EvaluateRequest(Snapshot(customer_id, as_of="2026-01-31", annual_avg_aum_fen=aum, **kwargs))


def _check_chunk(harness, requests, bad: set[int]) -> None:
    outcomes = harness.service.evaluate_batch_chunk(requests)
    assert len(outcomes) == len(requests)
    for i, (request, outcome) in enumerate(zip(requests, outcomes)):
        assert outcome.customer_id == request.snapshot.customer_id  # in order
        if i in bad:
            assert isinstance(outcome.error, InvalidArgument), (i, outcome)
            assert outcome.error.reason == "INVALID_INPUT" and outcome.stored is None
        else:
            assert outcome.error is None, (i, outcome.error)
            stored = harness.service.get_customer_tier(request.snapshot.customer_id)
            assert stored.decision_id in {o.stored.decision_id for o in outcomes if o.stored}
    good = [r.snapshot.customer_id for i, r in enumerate(requests) if i not in bad]
    assert harness.count("tiering_decisions") == len(good)
    with harness.engine.connect() as conn:
        cursors = conn.execute(text("SELECT cursor FROM tiering_changes ORDER BY cursor")).scalars().all()
        refused_stored = conn.execute(text("SELECT count(*) FROM tiering_customers WHERE customer_id LIKE 'POISON%'"
                                           " OR length(home_branch_id) > 100")).scalar_one()
    assert cursors == list(range(1, len(cursors) + 1))  # the feed has no gap
    assert refused_stored == 0


@pytest.mark.parametrize("size", [7, 120])  # executemany and COPY
def test_rows_the_database_refuses_answer_their_error_and_the_rest_is_stored(pg_harness, size):
    _poison(pg_harness)
    bad = {0, size // 3, size - 1}
    requests = [_request(f"POISON-{i}" if i in bad else f"G{i}") for i in range(size)]
    _check_chunk(pg_harness, requests, bad)


def test_values_postgres_refuses_fail_alone(pg_harness):
    """Today's validation lets these through; PostgreSQL refuses them (at the
    read of the customers' states for the NUL byte, at the write for the
    branch id). Either way only their own item fails."""
    requests = [_request("G0"), _request("BAD\x00NUL"), _request("G2"),
                _request("G3", point_in_time_aum_fen=100, holdings=(Holding("B" * 150, 100),)),
                _request("G4")]
    _check_chunk(pg_harness, requests, {1, 3})


def test_the_same_customer_on_both_sides_of_a_refused_row_keeps_its_order(pg_harness):
    _poison(pg_harness)
    requests = [_request("SAME", aum=30_000_000), _request("POISON-1"),
                _request("SAME", aum=700_000_000), _request("POISON-2")]
    outcomes = pg_harness.service.evaluate_batch_chunk(requests)
    assert [o.error is None for o in outcomes] == [True, False, True, False]
    assert [(o.stored.decision.previous_tier, o.stored.decision.tier) for o in outcomes if o.stored] == [
        ("", "WEALTH"), ("WEALTH", "PRIVATE_BANKING")]


def test_a_unary_call_with_a_refused_row_gets_invalid_argument_not_internal(pg_harness):
    _poison(pg_harness)
    with pytest.raises(InvalidArgument) as refused:
        pg_harness.service.evaluate(_request("POISON-X"))
    assert refused.value.metadata == {"stage": "store"}
    assert pg_harness.service.evaluate(_request("G1")).decision.tier == "WEALTH"
