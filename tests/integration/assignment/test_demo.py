"""The demo: org, staff, customers placed, one branch locked, pending requests; loads once."""
from __future__ import annotations

import json
from collections import Counter
import threading
from types import SimpleNamespace

from services.assignment.demo import load_demo

from .conftest import customers


def test_demo_loads_once(svc):
    ctx = SimpleNamespace(db=svc.engine, rules=svc.rules, stopping=threading.Event())
    rows = [(f"D{i:04}", tier, f"OUT-{i % 20 + 1:03}",
             {"segments": ("PAYROLL",), "group_keys": {"payroll_employer_id": f"EMP-{i % 3}"}} if i % 2 else {})
            for i, tier in enumerate(["WEALTH", "AFFLUENT", "LONG_TAIL", "PRIVATE_BANKING"] * 100)]
    customers(svc, rows)
    assert load_demo(ctx, svc, wait=False)
    assert not load_demo(ctx, svc, wait=False)
    pending, _ = svc.list_change_requests("PENDING", "BR-2", "", 100, "")
    assert len(pending) == 3 and all(p["period_id"].startswith("DEMO-") for p in pending)
    assert svc.snapshot()["locks"] == 1
    assert svc.snapshot()["unplaced"] == {}
    assert svc.get_book("WM-06-1", 0, "").locked
    # The approver sits at a 分行; the demo has a group book by employer in SUB-01.
    assert next(s for s in svc.list_staff("", "BRANCH_APPROVER", 0, "")[0] if s["staff_id"] == "branch_approver")[
        "branch_id"] == "BR-2"
    claims, size, ids, _ = svc.get_group_book("WM-01-1", "PAYROLL", 0, "")
    [selector] = [json.loads(c["selector_json"]) for c in claims]
    employer = selector["payroll_employer_id"]
    in_sub = [i for i in range(400) if i % 2 and i % 20 in (0, 1)]  # SUB-01 = OUT-001, OUT-002
    counts = Counter(f"EMP-{i % 3}" for i in in_sub)
    assert employer == min(counts, key=lambda e: (-counts[e], e))  # the most common; ties by id
    assert ids == [f"D{i:04}" for i in in_sub if f"EMP-{i % 3}" == employer] and size == len(ids)
