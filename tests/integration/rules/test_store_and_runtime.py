"""The rule store on a real database (SQLite and PostgreSQL): lifecycle,
immutability, rollback, audit, idempotency, and hot reload into a runtime."""
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from services.common.db import make_engine
from services.common.errors import Aborted, FailedPrecondition, InvalidArgument, NotFound, Unavailable
from services.rules.admin import RuleAdmin
from services.rules.engine import RuleEngine
from services.rules.kinds import KindRegistry
from services.rules.runtime import RuleRuntime
from services.rules.store import RuleStore
from services.rules.testing import migrate_rules

from tests.unit.rules.conftest import CUSTOMER, DOC


@pytest.fixture
def admin(db_url):
    migrate_rules(db_url)
    return RuleAdmin(RuleStore(make_engine(db_url)), KindRegistry([CUSTOMER]), RuleEngine())


def test_lifecycle_draft_published_retired_with_who_when_why(admin):
    v1 = admin.create(DOC, "alice", "first")
    assert (v1.version, v1.status, v1.active) == (1, "DRAFT", False)
    with pytest.raises(NotFound):
        admin.store.get("test.tiers")  # nothing active yet
    admin.publish("test.tiers", 1, "bob", "go live")
    v2 = admin.create(DOC.replace("silver_age: 60", "silver_age: 61"), "alice", "older silver hair")
    admin.publish("test.tiers", 2, "carol", "policy change")
    versions = {v.version: v for v in admin.store.list_versions("test.tiers")}
    assert versions[1].status == "RETIRED" and versions[2].status == "PUBLISHED" and versions[2].active
    assert versions[2].published_by == "carol" and versions[2].checksum != versions[1].checksum
    assert [(e["action"], e["version"], e["actor"], e["reason"]) for e in admin.store.events("test.tiers")] == [
        ("CREATE", 1, "alice", "first"), ("PUBLISH", 1, "bob", "go live"),
        ("CREATE", 2, "alice", "older silver hair"), ("PUBLISH", 2, "carol", "policy change")]
    assert v2.document != v1.document


def test_published_versions_are_immutable_and_rollback_reactivates(admin):
    admin.create(DOC, "a")
    admin.publish("test.tiers", 1, "a")
    with pytest.raises(FailedPrecondition):
        admin.publish("test.tiers", 1, "a")  # already published
    admin.create(DOC.replace("silver_age: 60", "silver_age: 61"), "a")
    admin.publish("test.tiers", 2, "a")
    rolled = admin.rollback("test.tiers", 1, "ops", "bad change")
    assert rolled.active and rolled.status == "PUBLISHED"
    assert admin.store.get("test.tiers").version == 1
    assert admin.store.get("test.tiers", 2).status == "RETIRED"
    with pytest.raises(FailedPrecondition):
        admin.rollback("test.tiers", 1, "ops")  # already active


def test_invalid_documents_and_failing_examples_never_get_stored(admin):
    with pytest.raises(InvalidArgument) as err:
        admin.create(DOC.replace("from: 5000000,", "from: 5000001,"), "a")
    assert any(field == "document.bands[0].bands[2].from" for field, _ in err.value.violations)
    with pytest.raises(InvalidArgument):
        admin.create(DOC.replace("expect: {tier: PRIVATE_BANKING", "expect: {tier: MASS"), "a")
    assert admin.store.names() == []


def test_same_request_id_creates_one_version(admin):
    first = admin.create(DOC, "a", request_id="req-1")
    again = admin.create(DOC, "a", request_id="req-1")
    assert first.version == again.version == 1
    assert len(admin.store.list_versions("test.tiers")) == 1


def test_concurrent_creates_get_distinct_versions_or_abort_cleanly(admin):
    def create(i):
        try:
            return admin.create(DOC, f"user{i}").version
        except Aborted:
            return None

    with ThreadPoolExecutor(max_workers=6) as pool:
        versions = [v for v in pool.map(create, range(12)) if v is not None]
    assert len(versions) == len(set(versions))
    stored = [v.version for v in admin.store.list_versions("test.tiers")]
    assert sorted(stored) == sorted(versions)


def test_runtime_hot_reloads_a_published_version_and_keeps_serving_on_failure(admin):
    runtime = RuleRuntime(admin.store, admin.kinds, admin.engine, poll_seconds=0.05)
    with pytest.raises(FailedPrecondition) as never:
        runtime.active("test.tiers")
    assert never.value.reason == "RULESET_NOT_PUBLISHED"
    admin.create(DOC, "a")
    admin.publish("test.tiers", 1, "a")
    with pytest.raises(Unavailable) as loading:  # published, not picked up by this runtime yet
        runtime.active("test.tiers")
    assert loading.value.reason == "RULESET_LOADING" and loading.value.retry_after
    assert loading.value.metadata == {"ruleset": "test.tiers", "version": "1"}
    assert runtime.refresh() == ["test.tiers"]
    assert "SILVER_HAIR" in runtime.active("test.tiers").evaluate({"aum": 1, "age": 60}).outcome["segments"]

    admin.create(DOC.replace("silver_age: 60", "silver_age: 61"), "a")
    admin.publish("test.tiers", 2, "a")
    runtime.start()
    try:
        deadline = threading.Event()
        for _ in range(100):
            if runtime.active("test.tiers").version == 2:
                break
            deadline.wait(0.05)
        evaluation = runtime.active("test.tiers").evaluate({"aum": 1, "age": 60})
        assert evaluation.version == 2 and evaluation.outcome["segments"] == []
        # A published version that no longer loads (here: its kind changed under it)
        # must leave the previous one serving.
        from sqlalchemy import update
        from services.rules.store import versions
        admin.create(DOC.replace("silver_age: 60", "silver_age: 59"), "a")
        admin.publish("test.tiers", 3, "a")
        with admin.store.engine.begin() as conn:
            conn.execute(update(versions).where(versions.c.version == 3)
                         .values(document=DOC.replace("age:", "agex:")))
        runtime.stop()
        runtime = RuleRuntime(admin.store, admin.kinds, admin.engine, poll_seconds=0.05)
        admin.rollback("test.tiers", 2, "a")
        runtime.refresh()
        admin.store.rollback("test.tiers", 3, "a")  # store-level: skips validation on purpose
        runtime.refresh()
        assert runtime.active("test.tiers").version == 2
        assert runtime.metrics.load_ok.labels("test.tiers")._value.get() == 0
        assert runtime.metrics.failures.labels("test.tiers")._value.get() == 1
    finally:
        runtime.stop()
