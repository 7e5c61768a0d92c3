"""The demo: org, staff, customers placed, one branch locked, pending requests; loads once."""
from __future__ import annotations

import threading
from types import SimpleNamespace

from services.assignment.demo import load_demo

from .conftest import customers


def test_demo_loads_once(svc):
    ctx = SimpleNamespace(db=svc.engine, rules=svc.rules, stopping=threading.Event())
    rows = [(f"D{i:04}", tier, f"OUT-{i % 20 + 1:03}")
            for i, tier in enumerate(["WEALTH", "AFFLUENT", "LONG_TAIL", "PRIVATE_BANKING"] * 100)]
    customers(svc, rows)
    assert load_demo(ctx, svc, wait=False)
    assert not load_demo(ctx, svc, wait=False)
    pending, _ = svc.list_change_requests("PENDING", "BR-2", "", 100, "")
    assert len(pending) == 3 and all(p["period_id"].startswith("DEMO-") for p in pending)
    assert svc.snapshot()["locks"] == 1
    assert svc.snapshot()["unplaced"] == {}
    assert svc.get_book("WM-06-1", 0, "").locked
