"""Four-eyes releases and effective dates on a real store (SQLite and
PostgreSQL), with a clock the test moves."""
from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import pytest

from services.common.db import make_engine
from services.common.errors import FailedPrecondition, KequnError, PermissionDenied, Unavailable
from services.rules.admin import RuleAdmin
from services.rules.engine import RuleEngine
from services.rules.kinds import KindRegistry
from services.rules.runtime import RuleRuntime
from services.rules.store import RuleStore
from services.rules.testing import migrate_rules

from tests.unit.rules.conftest import CUSTOMER, DOC

GOVERNED = dataclasses.replace(CUSTOMER, four_eyes=True)
V2 = DOC.replace("silver_age: 60", "silver_age: 61")
LEAD = 30.0


class Clock:
    def __init__(self):
        self.now = datetime(2026, 3, 31, 12, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def admin(db_url, clock):
    """A governed kind; v1 installed as a shipped default (no release needed)."""
    migrate_rules(db_url)
    admin = RuleAdmin(RuleStore(make_engine(db_url), clock=clock), KindRegistry([GOVERNED]), RuleEngine(),
                      lead_seconds=LEAD)
    record = admin.create(DOC, "system")
    admin._publish(record, "system", "shipped default", None)
    yield admin
    admin.store.engine.dispose()


@pytest.fixture
def runtime(admin, clock):
    runtime = RuleRuntime(admin.store, admin.kinds, admin.engine, clock=clock)
    runtime.refresh()
    yield runtime
    runtime.stop()


def served(runtime) -> int:
    return runtime.active("test.tiers").version


def test_publish_is_refused_where_four_eyes_apply_and_nothing_changes(admin):
    admin.create(V2, "alice")
    with pytest.raises(FailedPrecondition) as err:
        admin.publish("test.tiers", 2, "alice")
    assert err.value.reason == "FOUR_EYES_REQUIRED"
    assert admin.store.get("test.tiers").version == 1
    assert admin.store.get("test.tiers", 2).status == "DRAFT"


def test_the_requester_cannot_approve_their_own_release(admin):
    admin.create(V2, "alice")
    release = admin.request_release("test.tiers", 2, None, "bob", "please")
    with pytest.raises(PermissionDenied) as err:
        admin.approve_release(release.release_id, "bob")
    assert err.value.reason == "SELF_APPROVAL"
    assert admin.releases.get(release.release_id).status == "PENDING"
    assert admin.store.get("test.tiers").version == 1


def test_the_author_of_the_version_cannot_approve_its_release(admin):
    admin.create(V2, "alice")
    release = admin.request_release("test.tiers", 2, None, "bob")
    with pytest.raises(PermissionDenied) as err:
        admin.approve_release(release.release_id, "alice")
    assert err.value.reason == "SELF_APPROVAL"
    assert admin.releases.get(release.release_id).status == "PENDING"
    assert admin.store.get("test.tiers").version == 1


def test_a_second_rule_owner_approves_and_the_whole_story_is_on_the_audit_trail(admin, runtime):
    admin.create(V2, "alice", "older silver hair")
    release = admin.request_release("test.tiers", 2, None, "alice", "policy 2026")
    approved = admin.approve_release(release.release_id, "carol", "checked the impact")
    assert (approved.status, approved.requested_by, approved.decided_by) == ("ACTIVE", "alice", "carol")
    assert admin.store.get("test.tiers").version == 2
    assert admin.store.get("test.tiers", 2).published_by == "carol"
    assert admin.store.get("test.tiers", 1).status == "RETIRED"
    runtime.refresh()
    assert served(runtime) == 2
    trail = [(e["action"], e["version"], e["actor"]) for e in admin.store.events("test.tiers")]
    assert trail[2:] == [("CREATE", 2, "alice"), ("RELEASE_REQUEST", 2, "alice"), ("RELEASE_APPROVE", 2, "carol"),
                         ("RELEASE_ACTIVATE", 2, "carol")]
    with pytest.raises(FailedPrecondition):
        admin.approve_release(release.release_id, "dave")  # decided once


def test_a_rejected_release_never_activates(admin):
    admin.create(V2, "alice")
    release = admin.request_release("test.tiers", 2, None, "alice")
    rejected = admin.reject_release(release.release_id, "carol", "not this quarter")
    assert (rejected.status, rejected.decided_by) == ("REJECTED", "carol")
    with pytest.raises(FailedPrecondition):
        admin.approve_release(release.release_id, "dave")
    assert admin.store.get("test.tiers").version == 1
    assert admin.store.events("test.tiers")[-1]["action"] == "RELEASE_REJECT"


def test_a_scheduled_release_switches_at_its_instant_not_at_the_next_poll(admin, runtime, clock):
    admin.create(V2, "alice")
    instant = clock.now + timedelta(hours=1)
    release = admin.request_release("test.tiers", 2, instant, "alice")
    approved = admin.approve_release(release.release_id, "carol")
    assert approved.status == "APPROVED" and approved.effective_from == instant
    runtime.refresh()                                  # loaded ahead, not serving
    assert runtime.scheduled("test.tiers") == [(instant, 2)]
    assert served(runtime) == 1
    clock.now = instant - timedelta(microseconds=1)
    assert served(runtime) == 1
    clock.now = instant                                # no poll in between
    assert served(runtime) == 2
    assert runtime.active("test.tiers", at=instant - timedelta(seconds=1)).version == 1
    assert admin.store.get("test.tiers").version == 1  # the store catches up on the next poll...
    runtime.refresh()
    assert admin.store.get("test.tiers").version == 2  # ...and the runtime keeps serving v2
    assert admin.releases.get(release.release_id).status == "ACTIVE"
    assert served(runtime) == 2 and runtime.scheduled("test.tiers") == []
    assert admin.store.events("test.tiers")[-1]["action"] == "RELEASE_ACTIVATE"


def test_two_replicas_switch_at_the_same_instant_of_the_test_clock(db_url, admin, clock):
    """Two replicas (each its own store connection pool, engine and runtime, one
    database) load the approved version ahead and both switch at the instant,
    with no poll in between; neither names the old version after it."""
    replicas = []
    for _ in range(2):
        store = RuleStore(make_engine(db_url), clock=clock)
        replica = RuleRuntime(store, admin.kinds, RuleEngine(), clock=clock)
        replica.refresh()
        replicas.append(replica)
    try:
        admin.create(V2, "alice")
        instant = clock.now + timedelta(hours=1)
        admin.approve_release(admin.request_release("test.tiers", 2, instant, "alice").release_id, "carol")
        for replica in replicas:
            replica.refresh()
            assert replica.scheduled("test.tiers") == [(instant, 2)]
        clock.now = instant - timedelta(microseconds=1)
        assert [served(r) for r in replicas] == [1, 1]
        clock.now = instant
        assert [served(r) for r in replicas] == [2, 2]
        clock.advance(3600)
        for replica in replicas:
            replica.refresh()
        assert [served(r) for r in replicas] == [2, 2]
    finally:
        for replica in replicas:
            replica.stop()
            replica.store.engine.dispose()


def test_a_cancelled_future_release_never_activates(admin, runtime, clock):
    admin.create(V2, "alice")
    instant = clock.now + timedelta(hours=1)
    release = admin.request_release("test.tiers", 2, instant, "alice")
    admin.approve_release(release.release_id, "carol")
    runtime.refresh()
    assert runtime.scheduled("test.tiers") == [(instant, 2)]
    cancelled = admin.reject_release(release.release_id, "dave", "board postponed it")
    assert (cancelled.status, cancelled.decided_by) == ("CANCELLED", "dave")
    runtime.refresh()
    clock.now = instant + timedelta(days=1)
    assert served(runtime) == 1
    runtime.refresh()
    assert served(runtime) == 1
    assert admin.store.get("test.tiers").version == 1
    assert admin.store.get("test.tiers", 2).status == "DRAFT"
    assert admin.releases.get(release.release_id).status == "CANCELLED"


def test_dates_too_close_to_call_are_refused(admin, clock):
    admin.create(V2, "alice")
    soon = admin.request_release("test.tiers", 2, clock.now + timedelta(seconds=LEAD / 2), "alice")
    with pytest.raises(FailedPrecondition) as err:
        admin.approve_release(soon.release_id, "carol")    # replicas might not have it loaded in time
    assert err.value.reason == "EFFECTIVE_FROM_TOO_SOON"
    admin.reject_release(soon.release_id, "alice", "withdrawn")
    instant = clock.now + timedelta(hours=1)
    later = admin.request_release("test.tiers", 2, instant, "alice")
    admin.approve_release(later.release_id, "carol")
    clock.now = instant - timedelta(seconds=LEAD / 2)
    with pytest.raises(FailedPrecondition) as err:
        admin.reject_release(later.release_id, "dave")     # replicas might not hear of it in time
    assert err.value.reason == "TOO_LATE_TO_CANCEL"
    with pytest.raises(KequnError):
        admin.request_release("test.tiers", 2, clock.now - timedelta(seconds=1), "alice")


def test_a_due_release_that_did_not_load_refuses_rather_than_answer_with_the_old_version(admin, runtime, clock):
    admin.create(V2, "alice")
    instant = clock.now + timedelta(hours=1)
    admin.approve_release(admin.request_release("test.tiers", 2, instant, "alice").release_id, "carol")
    runtime.kinds = KindRegistry([dataclasses.replace(GOVERNED, fields={"aum": "int"})])  # v2 no longer loads
    runtime.refresh()
    clock.now = instant
    with pytest.raises(Unavailable) as err:
        runtime.active("test.tiers")
    assert err.value.reason == "RULESET_LOADING"


def test_per_ruleset_policy_overrides_the_kind_default(admin):
    admin.create(V2, "alice")
    admin.releases.set_policy("test.tiers", False, "admin", "sandbox ruleset")
    assert admin.publish("test.tiers", 2, "alice").active
    assert admin.store.events("test.tiers")[-2]["action"] == "POLICY_4EYES_OFF"


def test_two_approvers_at_once_activate_the_version_once(admin):
    admin.create(V2, "alice")
    release = admin.request_release("test.tiers", 2, None, "alice")

    def approve(who):
        try:
            return admin.approve_release(release.release_id, who).status
        except KequnError as exc:
            return exc.reason

    with ThreadPoolExecutor(max_workers=2) as pool:
        outcomes = list(pool.map(approve, ["carol", "dave"]))
    assert outcomes.count("ACTIVE") == 1
    assert set(outcomes) - {"ACTIVE"} <= {"WRONG_STATE", "CONFLICT"}
    actions = [e["action"] for e in admin.store.events("test.tiers")]
    assert actions.count("RELEASE_ACTIVATE") == 1 and actions.count("RELEASE_APPROVE") == 1


def test_a_repeated_request_id_returns_the_first_release(admin):
    admin.create(V2, "alice")
    first = admin.request_release("test.tiers", 2, None, "bob", request_id="rq-1")
    again = admin.request_release("test.tiers", 2, None, "bob", request_id="rq-1")
    assert again.release_id == first.release_id
    assert len(admin.releases.list(["test.tiers"])) == 1
    with pytest.raises(KequnError) as err:  # another request while one is open
        admin.request_release("test.tiers", 2, None, "bob", request_id="rq-2")
    assert err.value.reason == "CONFLICT"
