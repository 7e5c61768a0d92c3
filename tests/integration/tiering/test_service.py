"""Tiering use cases on a real database (SQLite and PostgreSQL)."""
from __future__ import annotations

import pytest

from services.common.errors import InvalidArgument, NotFound
from services.tiering.domain import DOWNGRADE, NEW, UNCHANGED, UPGRADE, Holding, Snapshot
from services.tiering.service import EvaluateRequest

from .conftest import ROOT


def ask(harness, customer_id="C1", as_of="2026-01-31", dry_run=False, request_id="", **figures):
    snapshot = Snapshot(customer_id, as_of=as_of, **figures)
    return harness.service.evaluate(EvaluateRequest(snapshot, dry_run, request_id))


BOUNDARIES = [(600_000_000, "PRIVATE_BANKING"), (599_999_999, "WEALTH"), (20_000_000, "WEALTH"),
              (19_999_999, "AFFLUENT"), (5_000_000, "AFFLUENT"), (4_999_999, "LONG_TAIL"),
              (1_000_000, "LONG_TAIL"), (999_999, "MASS")]


def test_boundaries_to_the_fen_are_stored_and_served(harness):
    for i, (amount, tier) in enumerate(BOUNDARIES):
        stored = ask(harness, f"B{i}", annual_avg_aum_fen=amount)
        assert (stored.decision.tier, stored.decision.change) == (tier, NEW)
        assert harness.service.get_customer_tier(f"B{i}").decision.tier == tier
    assert harness.count("tiering_decisions") == len(BOUNDARIES)


def test_an_answer_names_everything_behind_it(harness):
    stored = ask(harness, annual_avg_aum_fen=19_999_999, monthly_avg_aum_fen=19_999_999, age=61, payroll_employer_id="EMP-1",
                 point_in_time_aum_fen=300, holdings=(Holding("OUT-002", 100), Holding("OUT-001", 200)))
    d = stored.decision
    assert d.tier == "AFFLUENT" and d.next_tier == "WEALTH" and d.gap_fen == 1
    assert d.segments == ("PAYROLL", "SILVER_HAIR") and d.home_branch_id == "OUT-001"
    assert (d.ruleset, d.ruleset_version) == ("tiering.tiers", 1)
    assert {(r, rs) for r, rs, _ in d.fired} == {("tier.AFFLUENT", "tiering.tiers"),
                                                  ("group.payroll", "tiering.groups"),
                                                  ("group.silver_hair", "tiering.groups")}
    assert stored.cursor > 0 and harness.service.get_customer_tier("C1").cursor == stored.cursor


def test_grace_sequence_with_the_change_feed(harness):
    seen = [ask(harness, as_of="2026-01-31", annual_avg_aum_fen=30_000_000).decision]
    for month, amount in [("02-28", 10_000_000), ("03-31", 10_000_000), ("04-30", 40_000_000),
                          ("05-31", 10_000_000), ("06-30", 10_000_000), ("07-31", 10_000_000),
                          ("08-31", 700_000_000)]:
        seen.append(ask(harness, as_of=f"2026-{month}", annual_avg_aum_fen=amount).decision)
    assert [(d.tier, d.change, d.downgrade_pending) for d in seen] == [
        ("WEALTH", NEW, 0),
        ("WEALTH", UNCHANGED, 2), ("WEALTH", UNCHANGED, 1),
        ("WEALTH", UNCHANGED, 0),                       # back in the band: the count starts again
        ("WEALTH", UNCHANGED, 2), ("WEALTH", UNCHANGED, 1), ("AFFLUENT", DOWNGRADE, 0),
        ("PRIVATE_BANKING", UPGRADE, 0),
    ]
    changes, _ = harness.service.list_changes(customer_id="C1")
    assert [(c.from_tier, c.to_tier, c.change) for c in changes] == [
        ("", "WEALTH", NEW), ("WEALTH", "AFFLUENT", DOWNGRADE), ("AFFLUENT", "PRIVATE_BANKING", UPGRADE)]
    assert changes[1].as_of == "2026-07-31" and changes[1].ruleset_version == 1


def test_groups_flags_and_home_branch_changes_reach_the_feed(harness):
    ask(harness, annual_avg_aum_fen=30_000_000)
    ask(harness, as_of="2026-02-28", annual_avg_aum_fen=30_000_000)                 # nothing new
    ask(harness, as_of="2026-03-31", annual_avg_aum_fen=30_000_000, car_owner=True)  # a group
    ask(harness, as_of="2026-04-30", annual_avg_aum_fen=30_000_000, car_owner=True,
        point_in_time_aum_fen=10, holdings=(Holding("OUT-007", 10),))               # a home branch
    changes, _ = harness.service.list_changes(customer_id="C1")
    assert [(c.change, c.segments, c.previous_segments, c.home_branch_id) for c in changes] == [
        (NEW, (), (), ""), (UNCHANGED, ("CAR_OWNER",), (), ""), (UNCHANGED, ("CAR_OWNER",), ("CAR_OWNER",), "OUT-007")]


def test_dry_run_stores_nothing(harness):
    stored = ask(harness, dry_run=True, annual_avg_aum_fen=700_000_000)
    assert stored.decision.tier == "PRIVATE_BANKING" and stored.cursor == 0
    assert harness.count("tiering_decisions") == harness.count("tiering_changes") == 0
    with pytest.raises(NotFound):
        harness.service.get_customer_tier("C1")


def test_the_same_request_id_is_one_evaluation(harness):
    first = ask(harness, request_id="R-1", annual_avg_aum_fen=30_000_000)
    again = ask(harness, request_id="R-1", annual_avg_aum_fen=1)  # a retry answers the first result
    assert again.decision_id == first.decision_id and again.decision.tier == "WEALTH"
    assert harness.count("tiering_decisions") == 1 and harness.count("tiering_changes") == 1


@pytest.mark.parametrize("figures, field", [
    ({"customer_id": ""}, "customer.customer_id"),
    ({"annual_avg_aum_fen": -1}, "customer.annual_avg_aum_fen"),
    ({"point_in_time_aum_fen": 5, "holdings": (Holding("A", 6),)}, "customer.holdings"),
    ({"card_level": "TITANIUM"}, "customer.card_level"),
    ({"as_of": "2026-13-01"}, "customer.as_of"),
    ({"age": 151}, "customer.age"),
])
def test_bad_input_is_refused_and_changes_nothing(harness, figures, field):
    args = {"customer_id": "C1", "as_of": "2026-01-31", **figures}
    with pytest.raises(InvalidArgument) as err:
        ask(harness, **args)
    assert field in dict(err.value.violations)
    assert harness.count("tiering_decisions") == harness.count("tiering_customers") == 0


def test_a_batch_chunk_answers_in_order_with_per_item_errors(harness):
    requests = [EvaluateRequest(Snapshot(f"K{i}", as_of="2026-01-31", annual_avg_aum_fen=i * 1_000_000,
                                         age=200 if i == 2 else 30)) for i in range(5)]
    requests.append(EvaluateRequest(Snapshot("K1", as_of="2026-02-28", annual_avg_aum_fen=30_000_000)))
    outcomes = harness.service.evaluate_batch_chunk(requests)
    assert [o.customer_id for o in outcomes] == ["K0", "K1", "K2", "K3", "K4", "K1"]
    assert isinstance(outcomes[2].error, InvalidArgument)
    assert [o.stored.decision.tier for o in outcomes if o.stored] == ["MASS", "LONG_TAIL", "LONG_TAIL", "LONG_TAIL",
                                                                      "WEALTH"]
    assert (outcomes[5].stored.decision.previous_tier, outcomes[5].stored.decision.change) == ("LONG_TAIL", UPGRADE)
    assert harness.service.get_customer_tier("K1").decision.tier == "WEALTH"
    assert harness.count("tiering_decisions") == 5


def test_the_feed_resumed_mid_way_loses_and_repeats_nothing(harness):
    harness.service.evaluate_batch_chunk(
        [EvaluateRequest(Snapshot(f"F{i:03}", as_of="2026-01-31", annual_avg_aum_fen=i * 300_000)) for i in range(120)])
    first, token = harness.service.list_changes(page_size=50)
    rest, cursor = [], first[-1].cursor  # "disconnect" here, resume from the last cursor seen
    harness.service.evaluate_batch_chunk(
        [EvaluateRequest(Snapshot(f"F{i:03}", as_of="2026-02-28", annual_avg_aum_fen=10**9)) for i in range(10)])
    while True:
        page = harness.service.changes_after(cursor, limit=37)
        if not page:
            break
        rest.extend(page)
        cursor = page[-1].cursor
    cursors = [c.cursor for c in first + rest]
    assert cursors == list(range(1, 131))
    again, _ = harness.service.list_changes(page_size=50, page_token=token)
    assert [c.cursor for c in again] == list(range(51, 101))
    assert len({(c.customer_id, c.as_of) for c in first + rest}) == 130


def test_switching_to_seed_001_is_a_publish(harness):
    assert ask(harness, "S1", annual_avg_aum_fen=2_500_000).decision.tier == "LONG_TAIL"
    version = harness.publish(ROOT / "rulesets" / "alternatives" / "seed001_sub_branch.yaml")
    d = ask(harness, "S1", as_of="2026-02-28", annual_avg_aum_fen=2_500_000).decision
    assert (d.tier, d.ruleset_version, d.fired[0][:2]) == ("POTENTIAL", version, ("tier.POTENTIAL", "tiering.tiers"))
    assert (d.next_tier, d.gap_fen) == ("GENERAL", 2_500_000)
    d = ask(harness, "S2", point_in_time_aum_fen=5_000_000, annual_avg_aum_fen=0).decision
    assert d.tier == "POTENTIAL"


def test_switching_to_seed_002_tiers_by_monthly_average(harness):
    harness.publish(ROOT / "rulesets" / "alternatives" / "seed002_monthly.yaml")
    d = ask(harness, annual_avg_aum_fen=0, monthly_avg_aum_fen=500_000_000).decision
    assert (d.tier, d.next_tier, d.gap_fen) == ("DIAMOND_SUNFLOWER", "PRIVATE_BANKING", 500_000_000)


def test_page_size_out_of_range_is_refused(harness):
    with pytest.raises(InvalidArgument):
        harness.service.list_changes(page_size=-1)
    with pytest.raises(InvalidArgument):
        harness.service.list_changes(page_token="abc")
    with pytest.raises(InvalidArgument):
        harness.service.list_changes(after_cursor=-1)


def test_group_keys_travel_on_the_feed_and_a_new_employer_alone_is_a_change(harness):
    """Group books are claimed by employer and market: the feed carries them."""
    ask(harness, annual_avg_aum_fen=30_000_000, payroll_employer_id="EMP-1",
        attributes={"merchant_market_id": "MKT-7", "cash_only": "false"})
    ask(harness, as_of="2026-02-28", annual_avg_aum_fen=30_000_000, payroll_employer_id="EMP-1",
        attributes={"merchant_market_id": "MKT-7"})  # nothing the feed carries changed
    ask(harness, as_of="2026-03-31", annual_avg_aum_fen=30_000_000, payroll_employer_id="EMP-2",
        attributes={"merchant_market_id": "MKT-7"})  # same groups, another employer
    changes, _ = harness.service.list_changes(customer_id="C1")
    assert [dict(c.group_keys) for c in changes] == [
        {"payroll_employer_id": "EMP-1", "merchant_market_id": "MKT-7"},
        {"payroll_employer_id": "EMP-2", "merchant_market_id": "MKT-7"}]
    assert changes[1].segments == changes[0].segments and changes[1].to_tier == changes[0].to_tier


def test_decisions_carry_the_group_keys_and_get_customer_tier_reads_them_in_its_one_statement(harness):
    """TierDecision.group_keys: benefits names the employer or market from
    GetCustomerTier, which reads them by a join (no second query)."""
    first = ask(harness, annual_avg_aum_fen=30_000_000, payroll_employer_id="EMP-1", request_id="r-1",
                attributes={"merchant_market_id": "MKT-7"})
    keys = (("merchant_market_id", "MKT-7"), ("payroll_employer_id", "EMP-1"))
    assert first.group_keys == keys and harness.service.get_customer_tier("C1").group_keys == keys
    dry = ask(harness, as_of="2026-02-28", annual_avg_aum_fen=30_000_000, payroll_employer_id="EMP-2", dry_run=True)
    assert dry.group_keys == (("payroll_employer_id", "EMP-2"),)            # the evaluated snapshot's keys
    assert harness.service.get_customer_tier("C1").group_keys == keys         # a dry run stores nothing
    assert ask(harness, annual_avg_aum_fen=30_000_000, request_id="r-1").group_keys == ()  # a replay: not known
    # Another employer, nothing else: the read follows the stored state.
    ask(harness, as_of="2026-03-31", annual_avg_aum_fen=30_000_000, payroll_employer_id="EMP-2")
    assert harness.service.get_customer_tier("C1").group_keys == (("payroll_employer_id", "EMP-2"),)
    # Keys gone: an empty map, not the old ones.
    ask(harness, as_of="2026-04-30", annual_avg_aum_fen=30_000_000)
    latest = harness.service.get_customer_tier("C1")
    assert latest.group_keys == () and latest.decision.as_of == "2026-04-30"


def test_get_customer_tier_is_one_statement_on_postgresql(pg_harness, monkeypatch):
    """The hot read joins the customer's keys: one statement, one round trip."""
    import psycopg

    ask(pg_harness, customer_id="K1", annual_avg_aum_fen=30_000_000, payroll_employer_id="EMP-1")
    ask(pg_harness, customer_id="K2", annual_avg_aum_fen=30_000_000)
    statements: list[str] = []
    real = psycopg.Cursor.execute

    def counting(self, query, *args, **kwargs):
        statements.append(str(query))
        return real(self, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "execute", counting)
    found = pg_harness.service.get_customer_tier("K1")
    monkeypatch.undo()
    assert found.group_keys == (("payroll_employer_id", "EMP-1"),)
    reads = [s for s in statements if "tiering_" in s]   # (a pool's liveness check is not a read)
    assert len(reads) == 1 and "JOIN tiering_customers" in reads[0]
    assert pg_harness.service.get_customer_tier("K2").group_keys == ()
