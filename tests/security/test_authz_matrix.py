"""Every RPC of every running service × every role (and no token): the
answer matches services/common/rbac.yaml. Empty requests: authorization is
decided before the request is looked at."""
from __future__ import annotations

import grpc
import pytest

from services.common.auth import ROLES, SERVICE_ROLE, Policy, Principal
from tests.security.conftest import AVAILABLE, require
from tests.security.rpcs import SERVICES, call, code_of, rpcs_served_by

pytestmark = pytest.mark.e2e
AUTH_CODES = (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED)


def _empty(rpc):
    return [rpc.input()] if rpc.client_streaming else rpc.input()


@pytest.mark.parametrize("service", SERVICES)
def test_role_matrix_matches_rbac_yaml_on_every_rpc(suite, service):
    require(service)
    policy = Policy.load()
    wrong = []
    for role in (*ROLES, SERVICE_ROLE):
        channel = suite.channel(service, role)
        principal = Principal(role, frozenset({role}))
        for rpc in rpcs_served_by(service):
            code = code_of(lambda: call(channel, rpc, _empty(rpc), timeout=3, max_responses=1))
            allowed = policy.allows(principal, rpc.path)
            if allowed and code in AUTH_CODES:
                wrong.append(f"{role} on {rpc.path}: allowed by rbac.yaml but got {code.name}")
            if not allowed and code != grpc.StatusCode.PERMISSION_DENIED:
                wrong.append(f"{role} on {rpc.path}: denied by rbac.yaml but got {code.name}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("service", SERVICES)
def test_no_token_or_a_bad_token_is_unauthenticated_everywhere_but_health(suite, service):
    require(service)
    anonymous = suite.channel(service, None)
    wrong = []
    for rpc in rpcs_served_by(service):
        for metadata in ((), (("authorization", "Bearer not-a-real-token"),), (("authorization", "Basic eDp5"),)):
            code = code_of(lambda: call(anonymous, rpc, _empty(rpc), metadata=metadata, timeout=3))
            if code != grpc.StatusCode.UNAUTHENTICATED:
                wrong.append(f"{rpc.path} with {metadata or 'no token'}: {code.name}")
    assert not wrong, "\n".join(wrong)
    assert suite.health(service) is not None  # health answers without a token


def test_the_suite_has_at_least_one_service_to_attack():
    assert AVAILABLE, "no service has a __main__ yet"
