"""The ruleset kind benefits owns: eligibility rules plus the catalog."""
from __future__ import annotations

from typing import Iterable, Mapping

from services.rules.kinds import INT, STRING, STRING_LIST, KindSpec, Problem

from . import reason_text
from .domain import Calendar, parse_catalog

CATALOG_RULESET = "benefits.catalog"
PROFILE_PARAMETERS = ("profile_cache_seconds", "profile_max_staleness_seconds")


def check_catalog(raw: Mapping) -> Iterable[Problem]:
    """Every benefit a rule grants is in the catalog, every entry is well formed."""
    params = raw.get("parameters") or {}
    catalog, violations = parse_catalog(params.get("catalog"))
    problems = [Problem(path, message) for path, message in violations]
    try:
        Calendar.named(str(params.get("timezone", "Asia/Shanghai")))
    except ValueError as exc:
        problems.append(Problem("parameters.timezone", str(exc)))
    for key in PROFILE_PARAMETERS:
        value = params.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            problems.append(Problem(f"parameters.{key}", "a whole number of seconds ≥ 0"))
    for i, rule in enumerate(raw.get("rules") or ()):
        # The description is shown to the customer: a placeholder that could
        # stay unfilled would show raw braces.
        for message in reason_text.problems(str(rule.get("description") or "")):
            problems.append(Problem(f"rules[{i}].description", message))
        listed = (rule.get("then") or {}).get("benefits")
        if not isinstance(listed, list):
            problems.append(Problem(f"rules[{i}].then.benefits", "a list of benefit ids"))
            continue
        for benefit_id in listed:
            if benefit_id not in catalog and not any(p.path.startswith(f"parameters.catalog.{benefit_id}")
                                                     for p in problems):
                problems.append(Problem(f"rules[{i}].then.benefits", f"{benefit_id} is not in parameters.catalog"))
    return problems


CATALOG_KIND = KindSpec(
    name="benefits.catalog",
    service="benefits",
    fields={"tier": STRING, "segments": STRING_LIST, "flags": STRING_LIST, "age": INT},
    outputs={"benefits": "list"},
    allow_attributes=True,
    check=check_catalog,
    description="Who may claim which benefit (rules) and what each benefit is (parameters.catalog)",
    four_eyes=True,  # DOMAIN.md §7: prepared by one person, released by another
)

KINDS = [CATALOG_KIND]
