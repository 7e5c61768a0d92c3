"""Use cases of book assignment: plain values in, plain values out.

Each use case is one transaction (re-run by `retry_on_conflict` when it loses a
race on PostgreSQL). Approvals lock the staff rows they touch and then the
customer row, and re-check everything under those locks; an assignment run
locks every staff row first, so runs and approvals serialize on the books.

The use cases live in one small module each; AssignmentService is all of them.
"""
from __future__ import annotations

from .base import INCREMENTAL_BATCH, BookView, CustomerChange, ManagerView, RunResult, ServiceBase
from .change_requests import ChangeRequestUseCases
from .group_claims import GroupClaimUseCases
from .lock_periods import LockPeriodUseCases
from .org import OrgUseCases
from .placement import PlacementUseCases
from .reads import ReadUseCases

__all__ = ["INCREMENTAL_BATCH", "AssignmentService", "BookView", "CustomerChange", "ManagerView", "RunResult"]


class AssignmentService(OrgUseCases, PlacementUseCases, GroupClaimUseCases, LockPeriodUseCases,
                        ChangeRequestUseCases, ReadUseCases, ServiceBase):
    """Every use case of assignment over one engine, ruleset runtime and clock."""
