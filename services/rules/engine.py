"""The durable-rules matcher, driven directly through its C core.

Facts about durable-rules this module is built around (ARCHITECTURE.md):
- facts, not events: every rule matching a fact fires (a tier *and* groups);
- every message gets a unique ``id`` inside its session, so equal snapshots
  never collide;
- one session id per ``evaluate`` call, deleted in ``finally``: at most one
  live sid per ruleset at any time, far from the 1024 limit;
- the C core has no locks and the binding never releases the GIL: one lock
  serialises every call. We do not use ``durable.engine.Host``, whose two
  background timer threads would call into the same handles unlocked; our
  rules have no timers, so nothing is lost;
- a registered ruleset cannot be replaced: each load gets a fresh engine
  name (``tiering.default@v7#3``), and unloading frees the old handle.
"""
from __future__ import annotations

import itertools
import json
import re
import threading
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import durable_rules_engine as _core

from .compiler import SENTINEL_FIELD, CompiledRule, CompiledRuleset

BATCH = 500  # facts asserted per call: the engine's sweet spot measured here
_OK, _NOT_HANDLED = 0, 1
# An action message echoes the fact as we sent it: {"r3":{"m":{"sid": "e9", "id": 12, ...}}}.
# Reading the rule name and fact id off the front avoids parsing the whole fact.
_FRAME = re.compile(r'\{"([^"]+)":\{"m":\{"sid": "[^"]*", "id": (\d+)[,}]')


@dataclass(frozen=True)
class FiredRule:
    rule_id: str
    priority: int
    then: Mapping[str, Any]


@dataclass(frozen=True)
class Evaluation:
    """What one ruleset version said about one input."""

    ruleset: str
    version: int
    fired: tuple[FiredRule, ...]
    outcome: Mapping[str, Any]

    @property
    def rule_ids(self) -> list[str]:
        return [f.rule_id for f in self.fired]


class EngineError(RuntimeError):
    pass


def merge_outcome(fired: Sequence[CompiledRule], list_keys: Iterable[str]) -> dict[str, Any]:
    """Scalars: the highest-priority rule wins (document order breaks ties).
    List keys: the union over all fired rules, in that same order."""
    list_keys = set(list_keys)
    outcome: dict[str, Any] = {k: [] for k in list_keys}
    for rule in fired:
        for key, value in rule.then.items():
            if key in list_keys or isinstance(value, list):
                bucket = outcome.setdefault(key, [])
                for item in value if isinstance(value, list) else [value]:
                    if item not in bucket:
                        bucket.append(item)
            elif key not in outcome:
                outcome[key] = value
    return outcome


def _flatten(prefix: str, value: Mapping[str, Any], into: dict[str, Any]) -> None:
    for key, item in value.items():
        if item is not None:
            into[f"{prefix}.{key}"] = item


def to_fact(values: Mapping[str, Any], sid: str, fact_id: int) -> dict[str, Any]:
    """Drops absent (None) values so ``exists`` means "the caller said it";
    nested mappings (``attributes``) become dotted keys."""
    fact: dict[str, Any] = {"sid": sid, "id": fact_id}
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, dict) or (not isinstance(value, (str, int, list)) and isinstance(value, Mapping)):
            _flatten(key, value, fact)
        else:
            fact[key] = value
    return fact


class LoadedRuleset:
    """A compiled ruleset version registered in the engine."""

    def __init__(self, engine: "RuleEngine", compiled: CompiledRuleset, version: int, engine_name: str, handle: int,
                 list_keys: Iterable[str]):
        self.engine = engine
        self.compiled = compiled
        self.version = version
        self.engine_name = engine_name
        self.handle = handle
        self.list_keys = frozenset(list_keys)
        self.unloaded = False
        # Customers fall into few distinct sets of fired rules: merge each set once.
        self._merged: dict[tuple[str, ...], tuple[tuple[FiredRule, ...], dict[str, Any]]] = {}

    def merged(self, fired: list[CompiledRule]) -> tuple[tuple[FiredRule, ...], dict[str, Any]]:
        key = tuple(sorted(r.engine_name for r in fired))
        cached = self._merged.get(key)
        if cached is None:
            fired = sorted(fired, key=lambda r: (-r.priority, r.order))
            cached = (tuple(FiredRule(r.rule_id, r.priority, r.then) for r in fired),
                      merge_outcome(fired, self.list_keys))
            if len(self._merged) < 100_000:  # bounded: a ruleset with huge fan-out just merges every time
                self._merged[key] = cached
        return cached

    @property
    def name(self) -> str:
        return self.compiled.name

    def evaluate(self, values: Mapping[str, Any]) -> Evaluation:
        return self.evaluate_many([values])[0]

    def evaluate_many(self, inputs: Sequence[Mapping[str, Any]]) -> list[Evaluation]:
        results: list[Evaluation] = []
        for start in range(0, len(inputs), BATCH):
            results.extend(self.engine._evaluate(self, inputs[start:start + BATCH]))
        return results


class RuleEngine:
    """One per process. All access to the C core goes through ``_lock``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._names = itertools.count(1)
        self._sids = itertools.count(1)
        self._loaded: dict[str, LoadedRuleset] = {}

    def load(self, compiled: CompiledRuleset, version: int, list_keys: Iterable[str] = ()) -> LoadedRuleset:
        engine_name = f"{compiled.name}@v{version}#{next(self._names)}"
        definition = json.dumps(compiled.definition, ensure_ascii=False)
        with self._lock:
            try:
                handle = _core.create_ruleset(engine_name, definition)
            except Exception as exc:  # the C core reports limits and syntax as plain exceptions
                raise EngineError(f"durable-rules refused {compiled.name} v{version}: {exc}") from exc
            loaded = LoadedRuleset(self, compiled, version, engine_name, handle, list_keys)
            self._loaded[engine_name] = loaded
        return loaded

    def unload(self, loaded: LoadedRuleset) -> None:
        with self._lock:
            if loaded.unloaded:
                return
            loaded.unloaded = True
            self._loaded.pop(loaded.engine_name, None)
            _core.delete_ruleset(loaded.handle)

    def loaded_names(self) -> list[str]:
        with self._lock:
            return list(self._loaded)

    def _evaluate(self, loaded: LoadedRuleset, inputs: Sequence[Mapping[str, Any]]) -> list[Evaluation]:
        sid = f"e{next(self._sids)}"
        facts = [to_fact(values, sid, i) for i, values in enumerate(inputs)]
        # One sentinel fact per session matches an internal rule, so a session
        # always has an action to drain: when *no* fact of a session matched,
        # durable-rules returns a state handle that crashes the process.
        facts.append({"sid": sid, "id": -1, SENTINEL_FIELD: 1})
        payload = json.dumps(facts, ensure_ascii=False)
        matches: list[list[CompiledRule]] = [[] for _ in inputs]
        rule = loaded.compiled.rule
        with self._lock:
            if loaded.unloaded:
                raise EngineError(f"{loaded.engine_name} was unloaded")
            handle = loaded.handle
            try:
                code, state = _core.assert_facts(handle, payload)
                # NOT_HANDLED only says some fact matched nothing; the others'
                # actions are queued and must be drained before delete_state.
                if code not in (_OK, _NOT_HANDLED):
                    raise EngineError(f"durable-rules returned code {code}")
                result = _core.start_action_for_state(handle, state)
                message = result[1] if result else None
                while message:
                    frame = _FRAME.match(message)
                    if frame:
                        engine_rule, fact_id = frame.group(1), int(frame.group(2))
                        if engine_rule in loaded.compiled.rule_names:
                            matches[fact_id].append(rule(engine_rule))
                    else:  # the sentinel, the session's own state fact, or an unexpected shape
                        for engine_rule, matched in json.loads(message).items():
                            fact_id = matched["m"].get("id")
                            if (isinstance(fact_id, int) and 0 <= fact_id < len(matches)
                                    and engine_rule in loaded.compiled.rule_names):
                                matches[fact_id].append(rule(engine_rule))
                    message = _core.complete_and_start_action(handle, state)
            finally:
                _core.delete_state(handle, sid)
        evaluations = []
        for fired in matches:
            rules, outcome = loaded.merged(fired)
            # Each caller gets its own outcome (lists included) to change at will.
            evaluations.append(Evaluation(
                ruleset=loaded.compiled.name, version=loaded.version, fired=rules,
                outcome={k: list(v) if isinstance(v, list) else v for k, v in outcome.items()},
            ))
        return evaluations


_default_engine: RuleEngine | None = None
_default_lock = threading.Lock()


def default_engine() -> RuleEngine:
    """The process-wide engine (durable-rules state is process-global anyway)."""
    global _default_engine
    with _default_lock:
        if _default_engine is None:
            _default_engine = RuleEngine()
        return _default_engine
