"""Scorecards from the rule store: the active card of a role, or a past version.

Parsed cards are cached by (name, version): a version never changes once
stored, and the runtime's hot reload shows up as a new version number.
"""
from __future__ import annotations

import threading

from services.common.errors import FailedPrecondition, InvalidArgument
from services.rules.document import load_text
from services.rules.runtime import RuleRuntime
from services.scoring.domain import Scorecard, parse_scorecard
from services.scoring.rules_kind import ruleset_name


class RuleStoreScorecards:
    def __init__(self, runtime: RuleRuntime):
        self.runtime = runtime
        self._cache: dict[tuple[str, int], Scorecard] = {}
        self._lock = threading.Lock()

    def _parsed(self, name: str, version: int, parameters) -> Scorecard:
        key = (name, version)
        with self._lock:
            card = self._cache.get(key)
            if card is None:
                card = self._cache[key] = parse_scorecard(parameters, name, version)
            return card

    def active(self, role: str) -> Scorecard:
        name = ruleset_name(role)
        try:
            active = self.runtime.active(name)
        except FailedPrecondition:  # RULESET_NOT_PUBLISHED; RULESET_LOADING (Unavailable) goes to the caller
            raise InvalidArgument(violations=[("role", f"unknown role {role!r}: no published scorecard {name}")]) \
                from None
        return self._parsed(name, active.version, active.document.parameters)

    def version(self, name: str, version: int) -> Scorecard:
        with self._lock:
            if (name, version) in self._cache:
                return self._cache[(name, version)]
        record = self.runtime.store.get(name, version)
        return self._parsed(name, version, load_text(record.document).parameters)
