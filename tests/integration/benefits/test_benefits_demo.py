"""The demo loads once (a second run changes nothing) and never logs a
customer id in clear (SQLite and PostgreSQL)."""
from __future__ import annotations

import logging
from types import SimpleNamespace

from services.benefits.demo import DEMO_CUSTOMERS, load_demo
from services.benefits.domain import Profile
from services.common.logging import JsonFormatter


def test_demo_is_idempotent_and_masks_customer_ids(svc_and_profiles, caplog):
    svc, profiles = svc_and_profiles
    # Tiering knows the first two demo customers; the others are skipped with a log line.
    profiles.put(Profile(DEMO_CUSTOMERS[0], "AFFLUENT", ("PAYROLL", "MOBILE_BANKING")))
    profiles.put(Profile(DEMO_CUSTOMERS[1], "MASS"))  # eligible for nothing
    ctx = SimpleNamespace(benefits=svc)
    with caplog.at_level(logging.INFO, logger="services.benefits.demo"):
        load_demo(ctx)
    first = svc.list_claims(DEMO_CUSTOMERS[0])[0]
    assert len(first) == 1
    load_demo(ctx)
    assert svc.list_claims(DEMO_CUSTOMERS[0])[0] == first

    lines = [JsonFormatter("benefits").format(r) for r in caplog.records]
    assert any("demo claim" in line and DEMO_CUSTOMERS[0][-4:] in line for line in lines)
    assert any("skipped" in line for line in lines)
    for line in lines:
        for customer_id in DEMO_CUSTOMERS:
            assert customer_id not in line, line
