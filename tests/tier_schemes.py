"""Candidate tier schemes for governance tests: the shipped scheme with its
WEALTH floor moved, so a test can release, simulate or explain a real change."""
from __future__ import annotations

from services.common.testing import REPO_ROOT

SHIPPED_TIERS = REPO_ROOT / "services" / "tiering" / "rulesets" / "tiers.yaml"
SHIPPED_FLOOR = 20_000_000  # fen: ¥200,000


def with_wealth_floor(floor_fen: int, text: str | None = None) -> str:
    """`text` (default: the shipped scheme) with WEALTH starting at `floor_fen`
    and the AFFLUENT band and the examples at the border moved with it."""
    text = SHIPPED_TIERS.read_text(encoding="utf-8") if text is None else text
    changed = text.replace(f"below: {SHIPPED_FLOOR}}}", f"below: {floor_fen}}}")
    changed = changed.replace(f"from: {SHIPPED_FLOOR},", f"from: {floor_fen},")
    changed = changed.replace(f"input: {{annual_avg_aum_fen: {SHIPPED_FLOOR - 1}}}, expect: {{tier: AFFLUENT}}",
                              f"input: {{annual_avg_aum_fen: {floor_fen - 1}}}, expect: {{tier: AFFLUENT}}")
    changed = changed.replace(f"input: {{annual_avg_aum_fen: {SHIPPED_FLOOR}}}, expect: {{tier: WEALTH}}",
                              f"input: {{annual_avg_aum_fen: {floor_fen}}}, expect: {{tier: WEALTH}}")
    assert changed != text, "the scheme no longer has the shipped WEALTH floor"
    return changed
