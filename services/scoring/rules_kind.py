"""The kind of ruleset scoring owns: a scorecard, data only (in `parameters`).

Publishing a card runs `check`, so a card that breaks its constraints (weights
not adding up, quantitative share below its floor, inconsistent caps) is
refused at validate/publish with the reason and the path.
"""
from __future__ import annotations

from typing import Iterable, Mapping

from services.rules.kinds import KindSpec, Problem
from services.scoring.domain import ScorecardError, parse_scorecard

SCORECARD_KIND = "scoring.scorecard"
RULESET_PREFIX = "scoring."


def ruleset_name(role: str) -> str:
    """BRANCH_HEAD -> scoring.branch_head: one published card per role."""
    return RULESET_PREFIX + role.lower()


def check_scorecard(raw: Mapping) -> Iterable[Problem]:
    try:
        card = parse_scorecard(raw.get("parameters") or {}, str(raw.get("name")))
    except ScorecardError as exc:
        return [Problem(path, message) for path, message in exc.problems]
    expected = ruleset_name(card.role)
    if raw.get("name") != expected:
        return [Problem("name", f"the scorecard of role {card.role} must be named {expected!r}")]
    return []


KINDS = [
    KindSpec(
        name=SCORECARD_KIND,
        service="scoring",
        fields={},
        check=check_scorecard,
        description="A role's scorecard: parts, indicators, methods, weights, bounds and caps (parameters only).",
        four_eyes=True,  # DOMAIN.md §7: prepared by one person, released by another
    )
]
