"""The demo population: every tier, group and flag occurs; loading twice is a no-op."""
from __future__ import annotations

import json
from types import SimpleNamespace

from sqlalchemy import text

from services.tiering.demo import OUTLETS, load_demo


def test_demo_tiers_everyone_once_with_every_tier_group_and_flag(harness):
    ctx = SimpleNamespace(service=harness.service)
    assert load_demo(ctx, n=1500) == 1500
    assert load_demo(ctx, n=1500) == 0
    with harness.engine.connect() as conn:
        rows = conn.execute(text("SELECT tier, segments, flags, home_branch_id FROM tiering_customers")).all()
    assert len(rows) == 1500 and harness.count("tiering_decisions") == 1500
    assert {r.tier for r in rows} == {"MASS", "LONG_TAIL", "AFFLUENT", "WEALTH", "PRIVATE_BANKING"}
    groups = harness.runtime.active("tiering.groups").document
    codes = {code for rule in groups.rules for key in ("segments", "flags") for code in rule.then.get(key, ())}
    seen = {c for r in rows for c in json.loads(r.segments) + json.loads(r.flags)}
    assert seen == codes
    assert {r.home_branch_id for r in rows} <= set(OUTLETS)
