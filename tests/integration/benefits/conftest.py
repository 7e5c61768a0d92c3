"""A BenefitsService over a real database (SQLite and PostgreSQL), the real
default ruleset, a settable clock and a fixed set of tiering profiles."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from services.benefits.domain import Profile
from services.benefits.profiles import StaticProfiles
from services.benefits.rules_kind import KINDS
from services.benefits.service import BenefitsService
from services.common.db import make_engine, make_session_factory, run_migrations
from services.rules.testing import runtime_for

BENEFITS = Path(__file__).resolve().parents[3] / "services" / "benefits"

PROFILES = [
    Profile("C-PB", "PRIVATE_BANKING", ("EDUCATION",), ()),
    Profile("C-WEALTH", "WEALTH", ("CAR_OWNER",), ("PB_PROSPECT",), "PRIVATE_BANKING", 400_000_000),
    Profile("C-AFF-PAY", "AFFLUENT", ("MOBILE_BANKING", "PAYROLL"), (), "WEALTH", 5_000_000),
    Profile("C-AFF-OLD", "AFFLUENT", ("SILVER_HAIR",), (), "WEALTH", 12_000_000),
    Profile("C-MASS", "MASS", (), (), "LONG_TAIL", 300_000),
    Profile("C-MASS-OLD", "MASS", ("SILVER_HAIR",), (), "LONG_TAIL", 900_000),
    Profile("C-TAIL", "LONG_TAIL", (), (), "AFFLUENT", 2_000_000),
]


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw) -> None:
        self.now += timedelta(**kw)


def shanghai(*args) -> datetime:
    """A Beijing wall-clock time as a UTC instant."""
    return (datetime(*args) - timedelta(hours=8)).replace(tzinfo=timezone.utc)


def build_service(url: str, clock: Clock) -> tuple[BenefitsService, StaticProfiles]:
    run_migrations(url, str(BENEFITS / "migrations"), "alembic_version_benefits")
    runtime = runtime_for(KINDS, BENEFITS / "rulesets", db_url=url)
    engine = make_engine(url)
    profiles = StaticProfiles({p.customer_id: p for p in PROFILES})
    return BenefitsService(make_session_factory(engine), runtime, profiles, clock=clock), profiles


@pytest.fixture
def clock() -> Clock:
    return Clock(shanghai(2025, 3, 10, 10, 0))


@pytest.fixture
def svc_and_profiles(db_url, clock):
    return build_service(db_url, clock)


@pytest.fixture
def svc(svc_and_profiles) -> BenefitsService:
    return svc_and_profiles[0]
