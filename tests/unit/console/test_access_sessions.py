"""Who sees which page (the suite's own rbac.yaml) and how sessions end."""
from __future__ import annotations

import pytest

from services.common.auth import Policy, Principal
from services.console.access import ACTIONS, PAGES, Access
from services.console.sessions import SessionStore


def who(*roles):
    return Principal("someone", frozenset(roles))


@pytest.fixture(scope="module")
def access():
    return Access(Policy.load())


@pytest.mark.parametrize("roles, pages", [
    (("branch_approver",), ["overview", "approvals", "books", "customers", "scores"]),
    (("branch_staff",), ["overview", "books", "customers", "benefits"]),
    (("hr",), ["overview", "books", "scores"]),
    (("rule_admin",), ["rules"]),
    (("operations",), ["overview", "books", "customers", "benefits", "scores", "rules", "operations"]),
    (("mobile_banking",), ["customers", "benefits"]),
    (("service",), ["overview", "books", "customers"]),
    (("admin",), [p.name for p in PAGES]),
    ((), []),
])
def test_pages_follow_the_role_matrix(access, roles, pages):
    assert access.pages(who(*roles)) == pages


def test_actions_follow_the_role_matrix(access):
    assert access.can(who("branch_approver"), "approvals.approve")
    assert not access.can(who("branch_staff"), "approvals.approve")
    assert access.can(who("rule_admin"), "rules.upload") and access.can(who("rule_admin"), "rules.publish")
    assert not access.can(who("operations"), "rules.upload") and access.can(who("operations"), "rules.test")
    assert not access.can(who("branch_approver"), "customers.entitlements")
    assert access.can(who("branch_staff"), "customers.request_change")  # makers
    assert not access.can(who("mobile_banking"), "customers.request_change")


def test_every_action_names_rpcs_the_role_matrix_knows():
    policy = Policy.load()
    for action, rpcs in ACTIONS.items():
        for rpc in rpcs:
            assert policy.roles_for(rpc), f"{action}: {rpc} is not in rbac.yaml"


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_a_session_ends_after_idling_and_after_its_maximum_life():
    clock = Clock()
    store = SessionStore(idle=60, absolute=300, clock=clock)
    anon = store.new("en")
    s = store.sign_in(anon, "tok", who("hr"))
    assert store.get(anon.sid) is None and s.sid != anon.sid and s.csrf != anon.csrf  # new id: no fixation
    assert s.lang == "en"
    for _ in range(5):  # kept alive by use...
        clock.now += 50
        assert store.get(s.sid) is s
    clock.now += 50  # ...but never past its maximum life (300 s after sign-in)
    assert store.get(s.sid) is None

    t = store.sign_in(None, "tok", who("hr"))
    clock.now += 61
    assert store.get(t.sid) is None  # idle too long
    assert store.get("") is None and store.get("unknown") is None


def test_the_store_is_bounded_and_drops_the_least_recently_used():
    store = SessionStore(capacity=3)
    first, second = store.new(), store.new()
    store.get(first.sid)
    store.new(), store.new()
    assert len(store) == 3 and store.get(second.sid) is None and store.get(first.sid) is first


def test_flashes_are_shown_once():
    s = SessionStore().new()
    s.flash("ok", "done")
    assert s.take_flashes() == [("ok", "done")] and s.take_flashes() == []
