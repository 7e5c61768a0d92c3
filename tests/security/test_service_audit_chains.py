"""After the session's traffic (authz matrix, fuzzing), the audit chains of
the running services that write through append_audit verify."""
from __future__ import annotations

import pytest
from sqlalchemy import inspect

from services.common.audit import default_table_name
from services.common.db import make_engine
from tests.security.conftest import AVAILABLE
from tests.security.rpcs import SERVICES
from tests.security.test_audit import _cli


@pytest.mark.e2e
@pytest.mark.parametrize("service", SERVICES)
def test_running_services_audit_chains_verify(suite, service):
    """For services that adopted append_audit: their chain after this session's traffic is intact."""
    if service not in AVAILABLE:
        pytest.skip(f"services/{service} has no __main__ yet")
    url = suite.env[f"KEQUN_{service.upper()}_DATABASE_URL"]
    engine = make_engine(url)
    try:
        if not inspect(engine).has_table(default_table_name(service)):
            pytest.skip(f"{service} does not write {default_table_name(service)} through append_audit yet")
    finally:
        engine.dispose()
    result = _cli("--service", service, "--database-url", url)
    assert result.returncode == 0, result.stdout + result.stderr
