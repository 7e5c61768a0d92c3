"""The role matrix covers every RPC the protos define (deny by default is a
safety net, not a policy: an RPC without a line is a forgotten decision)."""
from __future__ import annotations

from services.common.auth import ADMIN_ROLE, ROLES, SERVICE_ROLE, Policy
from tests.security.rpcs import all_rpcs


def test_every_rpc_in_the_protos_has_a_line_in_rbac_yaml():
    policy = Policy.load()
    missing = [rpc.path for rpc in all_rpcs()
               if rpc.path not in policy.methods and f"/{rpc.service}/*" not in policy.methods]
    assert not missing, "RPCs without a role line in services/common/rbac.yaml:\n" + "\n".join(missing)


def test_rbac_yaml_names_only_known_rpcs_and_roles():
    policy = Policy.load()
    known_paths = {rpc.path for rpc in all_rpcs()} | {f"/{rpc.service}/*" for rpc in all_rpcs()}
    known_roles = set(ROLES) | {SERVICE_ROLE}
    stale = sorted(set(policy.methods) - known_paths)
    assert not stale, f"rbac.yaml lines for RPCs that do not exist: {stale}"
    unknown = sorted({(m, r) for m, roles in policy.methods.items() for r in roles if r not in known_roles})
    assert not unknown, f"rbac.yaml names unknown roles: {unknown}"


def test_nothing_is_open_to_everyone_but_admin_is_allowed_everywhere():
    policy = Policy.load()
    from services.common.auth import Principal
    everyone = set(ROLES) | {SERVICE_ROLE}
    for rpc in all_rpcs():
        assert policy.roles_for(rpc.path) != everyone, f"{rpc.path} is open to every role"
        assert policy.allows(Principal("root", frozenset({ADMIN_ROLE})), rpc.path)
