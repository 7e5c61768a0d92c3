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
  name (``tiering.default@v7#3``), and unloading frees the old handle;
- the C core trusts its input: a fact with a 255th property, a value over
  16 MB, ``Infinity``, an object inside a list wider than 255, or a ``sid``
  or ``id`` of the caller's makes it drop the rest of the batch, leak a
  session or segfault. ``fact_problem`` refuses such a fact before it is
  serialised, here, so no caller can bypass it (``FactRefused``, per item);
- it keeps the tests one fact passes on a stack of 64 and an alpha node's
  children in 512 hash buckets, unchecked past that (abort, endless loop):
  a ruleset is registered as shards below both (``CompiledRuleset.shards``)
  and every fact is asserted into each shard.
"""
from __future__ import annotations

import itertools
import json
import math
import re
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterable, Mapping, Sequence

import durable_rules_engine as _core

from services.common.errors import InvalidArgument

from .compiler import SEEN_RULE, SENTINEL_FIELD, CompiledRule, CompiledRuleset, beyond_engine

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


class _Truncated(EngineError):
    """The core stopped reading a batch before its end sentinel."""


# What one fact may hold (durable-rules' C core, src/rules/state.h and
# events.c, 2.0.28): 255 properties per JSON object, and the 255th already
# fails (we send ``sid`` and ``id`` too); 16 MB per value; names and nested
# names copied onto the C stack. Our limits keep a margin below each.
MAX_FACT_FIELDS = 248          # caller's properties per fact, nested ones counted (+ sid, id = 250 < 255)
MAX_FACT_DEPTH = 8             # nesting of mappings and lists
MAX_FACT_NAME_CHARS = 256      # a field's full dotted name
MAX_FACT_CHARS = 1_000_000     # the whole fact as JSON (≤ 4 MB of UTF-8, far below the 16 MB per value)
MAX_FACT_STRING_CHARS = 16_000  # < 64 kB of UTF-8 even at 4 bytes a character: past 65,535 bytes matches silently fail
INT64_MIN, INT64_MAX = -2**63, 2**63 - 1  # the core reads integers with atoll
RESERVED_FIELDS = frozenset({"sid", "id", SENTINEL_FIELD})  # the engine's own: a caller's would
# mix up sessions (a leaked sid each) or answers (a foreign id)


class FactRefused(InvalidArgument):
    """One input does not fit the rule engine: refused before it reaches the
    C core. ``index`` is its position in the batch evaluated."""

    def __init__(self, problem: str, index: int = 0, limit: str = ""):
        super().__init__(f"the input does not fit the rule engine: {problem}",
                         violations=[("input", problem)], reason="INVALID_INPUT",
                         metadata={"limit": limit} if limit else None)
        self.problem = problem
        self.index = index
        self.limit = limit


_SCALARS = (str, bool, int, float, type(None))
_HASH_ID, _HASH_SID = 926444256, 3593476751  # the core's hashes of "id" and "sid" (state.h)


@lru_cache(maxsize=8192)
def _takes_engine_hash(name: str) -> bool:
    """The core finds ``id`` and ``sid`` by a 32-bit FNV-1a hash of the name
    as written in the JSON (bytes as signed char): a name forged to collide
    would pass for them. Field names repeat, so each is hashed once."""
    h = 0x811C9DC5
    for b in json.dumps(name, ensure_ascii=False)[1:-1].encode("utf-8", "surrogatepass"):
        h = ((h ^ (b if b < 128 else (b - 256) & 0xFFFFFFFF)) * 16777619) & 0xFFFFFFFF
    return h in (_HASH_ID, _HASH_SID)


def _value_problem(name: str, value: Any, depth: int) -> tuple[str, str] | None:
    """(problem, limit) for one value, or None; ``name`` is its dotted path."""
    if isinstance(value, str):
        if len(value) > MAX_FACT_STRING_CHARS:
            return (f"{name}: a string longer than {MAX_FACT_STRING_CHARS} characters "
                    "(the rule engine's regular expressions stop matching past 64 kB)"), "max_string_chars"
        return None
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            return f"{name}: integer outside the 64-bit range", "int64"
        return None
    if isinstance(value, float):
        if not math.isfinite(value):
            return f"{name}: {value} is not a finite number", "finite_number"
        text = repr(value)
        if "e" in text and "." not in text:  # the core's number parser stops at 1e+16 or 1e-05
            return f"{name}: {text} is written with an exponent the rule engine cannot read", "number_format"
        return None
    if isinstance(value, (list, tuple)):
        if depth >= MAX_FACT_DEPTH:
            return f"{name}: nested deeper than {MAX_FACT_DEPTH} levels", "max_depth"
        for i, item in enumerate(value):
            # The core parses each mapping in a list as an object of its own
            # (255 properties, no check): lists hold plain values only.
            if not isinstance(item, _SCALARS):
                return f"{name}[{i}]: a list holds strings, numbers, booleans or null only", "list_items"
            problem = _value_problem(f"{name}[{i}]", item, depth + 1)
            if problem:
                return problem
        return None
    if isinstance(value, Mapping):
        return None  # counted and checked by _fields_problem
    return f"{name}: unsupported value of type {type(value).__name__}", "value_type"


def _fields_problem(fact: Mapping[str, Any], prefix: str, depth: int, count: list[int]) -> tuple[str, str] | None:
    count[0] += len(fact)
    if count[0] > MAX_FACT_FIELDS:
        return (f"more than {MAX_FACT_FIELDS} fields (nested fields and attributes counted): "
                f"the rule engine takes at most {MAX_FACT_FIELDS} per input"), "max_fields"
    for key, value in fact.items():
        if type(key) is not str:
            return f"field name {key!r} is not a string", "field_name"
        name = f"{prefix}.{key}" if prefix else key
        if len(name) > MAX_FACT_NAME_CHARS:
            return f"field name {name[:40]!r}... longer than {MAX_FACT_NAME_CHARS} characters", "max_name_chars"
        if (not prefix and (key in RESERVED_FIELDS or key[:1] == "$")) or _takes_engine_hash(name):
            return f"field name {name[:40]!r} is reserved by the rule engine", "reserved_field"
        kind = type(value)
        if (kind is str and len(value) <= MAX_FACT_STRING_CHARS) or kind is bool or value is None \
                or (kind is int and INT64_MIN <= value <= INT64_MAX):
            continue  # the common cases first: this runs for every fact
        if kind is dict or (kind not in (int, float, list, tuple) and isinstance(value, Mapping)):
            if depth + 1 >= MAX_FACT_DEPTH:
                return f"{name}: nested deeper than {MAX_FACT_DEPTH} levels", "max_depth"
            problem = _fields_problem(value, name, depth + 1, count)
        else:
            problem = _value_problem(name, value, depth)
        if problem:
            return problem
    return None


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def fact_problem(fact: Mapping[str, Any]) -> tuple[str, str] | None:
    """Why ``fact`` (as ``to_fact`` built it, without ``sid`` and ``id``)
    would break the C core, as (problem, limit name); None if it fits. Its
    size and encoding are checked on its JSON text (``RuleEngine._payload``)."""
    return _fields_problem(fact, "", 0, [0])


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


def to_fact(values: Mapping[str, Any], sid: str | None = None, fact_id: int | None = None) -> dict[str, Any]:
    """Drops absent (None) values so ``exists`` means "the caller said it";
    nested mappings (``attributes``) become dotted keys. Without ``sid``,
    the fact is built without the engine's ``sid`` and ``id``."""
    fact: dict[str, Any] = {} if sid is None else {"sid": sid, "id": fact_id}
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

    def __init__(self, engine: "RuleEngine", compiled: CompiledRuleset, version: int, engine_name: str,
                 handles: Sequence[int],
                 list_keys: Iterable[str]):
        self.engine = engine
        self.compiled = compiled
        self.version = version
        self.engine_name = engine_name
        self.handles = tuple(handles)  # one per shard (CompiledRuleset.shards)
        self.list_keys = frozenset(list_keys)
        self.unloaded = False
        # Customers fall into few distinct sets of fired rules: merge each set once.
        self._merged: dict[tuple[str, ...], tuple[tuple[FiredRule, ...], dict[str, Any]]] = {}

    def merged(self, fired: list[CompiledRule]) -> tuple[tuple[FiredRule, ...], dict[str, Any]]:
        # A rule fires once per path of an any/in condition that matched: once each here.
        key = tuple(sorted({r.engine_name for r in fired}))
        cached = self._merged.get(key)
        if cached is None:
            fired = sorted({r.engine_name: r for r in fired}.values(), key=lambda r: (-r.priority, r.order))
            cached = (tuple(FiredRule(r.rule_id, r.priority, r.then) for r in fired),
                      merge_outcome(fired, self.list_keys))
            if len(self._merged) < 100_000:  # bounded: a ruleset with huge fan-out just merges every time
                self._merged[key] = cached
        return cached

    @property
    def name(self) -> str:
        return self.compiled.name

    def evaluate(self, values: Mapping[str, Any]) -> Evaluation:
        """Raises FactRefused when ``values`` does not fit the engine."""
        return self.evaluate_many([values])[0]

    def evaluate_many(self, inputs: Sequence[Mapping[str, Any]]) -> list[Evaluation]:
        """All or nothing: raises the first input's FactRefused (its
        ``index`` says which), before anything reaches the engine."""
        results = self.evaluate_each(inputs)
        for result in results:
            if isinstance(result, FactRefused):
                raise result
        return results  # type: ignore[return-value]

    def evaluate_each(self, inputs: Sequence[Mapping[str, Any]]) -> list[Evaluation | FactRefused]:
        """Per item, for batches: an input that does not fit the engine gets
        its FactRefused in place; the others are evaluated."""
        results: list[Evaluation | FactRefused] = []
        for start in range(0, len(inputs), BATCH):
            results.extend(self._isolating(inputs[start:start + BATCH], start))
        return results

    def _isolating(self, inputs: Sequence[Mapping[str, Any]], offset: int) -> list[Evaluation | FactRefused]:
        """When the core stops reading a batch early (an input our checks
        let through but its parser cannot read), the batch is evaluated again
        in halves until that input stands alone, and it alone is refused."""
        try:
            return self.engine._evaluate(self, inputs, offset)
        except _Truncated:
            if len(inputs) == 1:
                return [FactRefused("the rule engine could not read this input", offset, "engine_parse")]
        middle = len(inputs) // 2
        return self._isolating(inputs[:middle], offset) + self._isolating(inputs[middle:], offset + middle)


class RuleEngine:
    """One per process. All access to the C core goes through ``_lock``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._names = itertools.count(1)
        self._sids = itertools.count(1)
        self._loaded: dict[str, LoadedRuleset] = {}

    def load(self, compiled: CompiledRuleset, version: int, list_keys: Iterable[str] = ()) -> LoadedRuleset:
        for rule in compiled.rules:  # validation refuses these; a version stored behind its back must not hang us
            beyond = beyond_engine(rule)
            if beyond:
                raise EngineError(f"durable-rules cannot take rule {rule.rule_id} of {compiled.name} v{version}: "
                                  f"{beyond}")
        engine_name = f"{compiled.name}@v{version}#{next(self._names)}"
        definitions = [json.dumps(shard, ensure_ascii=False) for shard in compiled.shards]
        with self._lock:
            handles: list[int] = []
            try:
                for k, definition in enumerate(definitions):
                    handles.append(_core.create_ruleset(f"{engine_name}/{k}", definition))
            except Exception as exc:  # the C core reports limits and syntax as plain exceptions
                for handle in handles:
                    _core.delete_ruleset(handle)
                raise EngineError(f"durable-rules refused {compiled.name} v{version}: {exc}") from exc
            loaded = LoadedRuleset(self, compiled, version, engine_name, handles, list_keys)
            self._loaded[engine_name] = loaded
        return loaded

    def unload(self, loaded: LoadedRuleset) -> None:
        with self._lock:
            if loaded.unloaded:
                return
            loaded.unloaded = True
            self._loaded.pop(loaded.engine_name, None)
            for handle in loaded.handles:
                _core.delete_ruleset(handle)

    def loaded_names(self) -> list[str]:
        with self._lock:
            return list(self._loaded)

    @staticmethod
    def _payload(inputs: Sequence[Mapping[str, Any]], sid: str, offset: int) -> tuple[str, dict[int, FactRefused]]:
        """The JSON array asserted into the core, and the inputs refused.

        Sentinel facts open and close each session; each matches an internal
        rule. The first makes sure the session exists (when *no* fact of a
        session matched, durable-rules returns a state handle that crashes
        the process); the last proves the core read every fact (after a fact
        it cannot parse it silently drops the rest of the batch)."""
        refused: dict[int, FactRefused] = {}
        facts: list[dict[str, Any]] = [{"sid": sid, "id": -1, SENTINEL_FIELD: 1}]
        for i, values in enumerate(inputs):
            fact = to_fact(values)
            problem = fact_problem(fact)
            if problem:
                refused[i] = FactRefused(problem[0], offset + i, problem[1])
            else:
                facts.append({"sid": sid, "id": i, **fact})
        facts.append({"sid": sid, "id": -2, SENTINEL_FIELD: 1})
        payload = json.dumps(facts, ensure_ascii=False)
        if len(payload) <= MAX_FACT_CHARS and (payload.isascii() or _encodes(payload)):
            return payload, refused  # the common case: no fact can be too large or badly encoded
        kept = []
        for fact in facts:  # find the culprits, one fact at a time
            text = json.dumps(fact, ensure_ascii=False)
            if len(text) > MAX_FACT_CHARS:
                refused[fact["id"]] = FactRefused(f"larger than {MAX_FACT_CHARS} characters as JSON",
                                                  offset + fact["id"], "max_chars")
            elif not (text.isascii() or _encodes(text)):
                refused[fact["id"]] = FactRefused("a string is not valid Unicode (a lone surrogate)",
                                                  offset + fact["id"], "unicode")
            else:
                kept.append(text)
        return "[" + ", ".join(kept) + "]", refused

    @staticmethod
    def _assert(loaded: LoadedRuleset, handle: int, sid: str, payload: str, matches: list[list[CompiledRule]]) -> None:
        """Asserts the batch into one shard and collects what fired; the
        caller holds the lock."""
        rule, names = loaded.compiled.rule, loaded.compiled.rule_names
        ended = False
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
                    if engine_rule in names:
                        matches[fact_id].append(rule(engine_rule))
                else:  # the sentinels, the session's own state fact, or an unexpected shape
                    for engine_rule, matched in json.loads(message).items():
                        fact_id = matched["m"].get("id")
                        if fact_id == -2 and engine_rule == SEEN_RULE:
                            ended = True
                        elif isinstance(fact_id, int) and 0 <= fact_id < len(matches) and engine_rule in names:
                            matches[fact_id].append(rule(engine_rule))
                message = _core.complete_and_start_action(handle, state)
        finally:
            _core.delete_state(handle, sid)
        if not ended:
            raise _Truncated("durable-rules stopped before the end of the batch")

    def _evaluate(self, loaded: LoadedRuleset, inputs: Sequence[Mapping[str, Any]],
                  offset: int = 0) -> list[Evaluation | FactRefused]:
        sid = f"e{next(self._sids)}"
        payload, refused = self._payload(inputs, sid, offset)
        matches: list[list[CompiledRule]] = [[] for _ in inputs]
        with self._lock:
            if loaded.unloaded:
                raise EngineError(f"{loaded.engine_name} was unloaded")
            for handle in loaded.handles:  # the same facts into every shard
                self._assert(loaded, handle, sid, payload, matches)
        evaluations: list[Evaluation | FactRefused] = []
        for i, fired in enumerate(matches):
            if i in refused:
                evaluations.append(refused[i])
                continue
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
