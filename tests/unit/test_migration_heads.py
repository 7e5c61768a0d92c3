"""Every service's Alembic history is one straight line: exactly one head,
and walking down from it reaches the base through every revision on disk
(a revision off the chain would be a second head or never run)."""
from __future__ import annotations

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory

from services.common.testing import REPO_ROOT

MIGRATION_DIRS = sorted(p.parent for p in (REPO_ROOT / "services").glob("*/migrations/env.py"))


def _script(directory) -> ScriptDirectory:
    cfg = Config()
    cfg.set_main_option("script_location", str(directory))
    return ScriptDirectory.from_config(cfg)


def test_every_service_with_migrations_is_checked():
    assert {d.parent.name for d in MIGRATION_DIRS} >= {"tiering", "assignment", "scoring", "benefits", "rules"}


@pytest.mark.parametrize("directory", MIGRATION_DIRS, ids=lambda d: d.parent.name)
def test_one_head_and_the_chain_walks_from_base(directory):
    script = _script(directory)
    heads = script.get_heads()
    assert len(heads) == 1, f"{directory.parent.name}: {len(heads)} heads {heads}; chain the newest after the other"
    walked = [rev.revision for rev in script.walk_revisions("base", heads[0])]
    on_disk = {rev.revision for rev in script.walk_revisions()}
    assert set(walked) == on_disk
    assert script.get_revision(walked[-1]).down_revision is None  # walk_revisions goes head -> base
    assert len(script.get_bases()) == 1
