"""ExplainDecision: any stored decision with the input it saw, the ruleset
versions and the rules that fired (with descriptions), re-evaluated with
those same versions (loaded on demand, however many versions came since) to
show it reproduces.

The stored input (inputs.py) holds the snapshot, the customer's state before
the decision, the groups version and the group keys the decision gave; the
tier scheme's version is a column. Reproducing means the same decision and
the same group keys (what group books select customers by).
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import select

from services.common.db import UnitOfWork
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound

from .domain import (CustomerState, Decision, Snapshot, decide, group_keys, home_branch, project, rule_answer,
                     rule_facts)
from .inputs import decode
from .scheme import tier_scheme
from .store import StoredDecision, _decision_from_row, decisions


@dataclass(frozen=True)
class ExplainedRule:
    rule_id: str
    ruleset: str
    version: int
    description: str


@dataclass(frozen=True)
class Explanation:
    stored: StoredDecision
    snapshot: Snapshot
    before: CustomerState | None
    rulesets: tuple[tuple[str, int], ...]
    fired: tuple[ExplainedRule, ...]
    reproduced: bool
    difference: str
    group_keys: tuple[tuple[str, str], ...] = ()  # as re-evaluated


def describe(document, rule_id: str) -> str:
    """A rule's description as written; for a band, its range in words."""
    for rule in document.rules:
        if rule.id == rule_id:
            return rule.description or f"rule {rule_id}"
    for table in document.bands:
        for band in table.bands:
            if f"{table.id}.{band.value}" == rule_id:
                low = "" if band.lower is None else f"{band.lower:,} <= "
                high = "" if band.upper is None else f" < {band.upper:,}"
                return f"{low}{table.field}{high}: {table.output} {band.value}"
    return f"rule {rule_id}"


def _difference(stored: Decision, again: Decision) -> str:
    return "; ".join(f"{f.name}: stored {getattr(stored, f.name)!r}, again {getattr(again, f.name)!r}"
                     for f in fields(Decision) if getattr(stored, f.name) != getattr(again, f.name))


def explain(session_factory, rules, decision_id: str) -> Explanation:
    if not decision_id.strip():
        raise InvalidArgument(violations=[("decision_id", "required")])
    with UnitOfWork(session_factory) as uow:
        row = uow.session.execute(select(decisions).where(decisions.c.decision_id == decision_id[:32])).first()
    if row is None or row.decision_id != decision_id:
        raise NotFound(f"decision {decision_id[:40]} not found", metadata={"decision_id": decision_id[:40]})
    stored = _decision_from_row(row)
    if not row.input:
        raise FailedPrecondition(f"decision {decision_id} was stored before decision inputs were kept",
                                 reason="INPUT_NOT_STORED", metadata={"decision_id": decision_id})
    stored_input = decode(row.input)
    snapshot, before, (groups_name, groups_version) = stored_input.snapshot, stored_input.before, stored_input.groups
    d = stored.decision
    tiers = rules.version(d.ruleset, d.ruleset_version)
    groups = rules.version(groups_name, groups_version)
    home = home_branch(snapshot.holdings, before.home_branch_id if before else "")
    facts = rule_facts(snapshot, home)
    t_ev = tiers.evaluate(project(facts, tiers.loaded.compiled.fields))
    g_ev = groups.evaluate(project(facts, groups.loaded.compiled.fields))
    answer = rule_answer(t_ev, g_ev, (tiers.name, tiers.version), (groups.name, groups.version))
    again, _ = decide(snapshot, before, answer, tier_scheme(tiers.document), (tiers.name, tiers.version), home, facts)
    documents: dict[tuple[str, Any], Any] = {(tiers.name, tiers.version): tiers.document,
                                             (groups.name, groups.version): groups.document}
    fired = tuple(ExplainedRule(rule_id, ruleset, version,
                                describe(documents[(ruleset, version)], rule_id) if (ruleset, version) in documents
                                else f"rule {rule_id}")
                  for rule_id, ruleset, version in d.fired)
    keys = group_keys(snapshot, tuple(groups.document.parameters.get("group_key_attributes") or ()))
    difference = "; ".join(filter(None, (
        _difference(d, again),
        "" if keys == stored_input.group_keys
        else f"group_keys: stored {dict(stored_input.group_keys)!r}, again {dict(keys)!r}")))
    return Explanation(stored, snapshot, before, ((tiers.name, tiers.version), (groups.name, groups.version)),
                       fired, not difference, difference, keys)
