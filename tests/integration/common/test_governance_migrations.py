"""Upgrading a database at main's heads before issue 15 (rules_0001,
tiering_0004) to the governance heads on PostgreSQL: the releases and policy
tables appear, tiering decisions gain their stored input, and what was
stored before stays."""
from __future__ import annotations

from sqlalchemy import inspect, text

from services.common.db import make_engine, run_migrations
from services.common.testing import REPO_ROOT
from services.rules.store import RuleStore
from services.rules.testing import MIGRATIONS as RULES_MIGRATIONS, VERSION_TABLE as RULES_TABLE

TIERING_MIGRATIONS = str(REPO_ROOT / "services" / "tiering" / "migrations")
TIERING_TABLE = "alembic_version_tiering"


def test_upgrade_from_the_pre_governance_heads_keeps_data(pg_url):
    run_migrations(pg_url, str(RULES_MIGRATIONS), RULES_TABLE, "rules_0001")
    run_migrations(pg_url, TIERING_MIGRATIONS, TIERING_TABLE, "tiering_0004")
    engine = make_engine(pg_url)
    try:
        store = RuleStore(engine)
        store.create_version("demo.tiers", "customer_tiers", "name: demo.tiers\n", "alice", "before governance")
        before = inspect(engine)
        assert "rules_releases" not in before.get_table_names()
        assert "input" not in {c["name"] for c in before.get_columns("tiering_decisions")}

        run_migrations(pg_url, str(RULES_MIGRATIONS), RULES_TABLE)
        run_migrations(pg_url, TIERING_MIGRATIONS, TIERING_TABLE)

        after = inspect(engine)
        assert {"rules_releases", "rules_policies"} <= set(after.get_table_names())
        assert "input" in {c["name"] for c in after.get_columns("tiering_decisions")}
        assert "group_keys" in {c["name"] for c in after.get_columns("tiering_customers")}
        with engine.connect() as conn:
            assert conn.execute(text(f"SELECT version_num FROM {RULES_TABLE}")).scalar() == "rules_0002"
            assert conn.execute(text(f"SELECT version_num FROM {TIERING_TABLE}")).scalar() == "tiering_0005"
        assert store.get("demo.tiers", 1).created_by == "alice"
    finally:
        engine.dispose()
