"""Use cases of the rule store: validate, create, test, publish, roll back,
simulate, install the shipped defaults. Shared by the gRPC servicer, the CLI
and service start-up, so every path applies the same checks."""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from services.common.errors import FailedPrecondition, InvalidArgument, NotFound

from .compiler import compile_document
from .document import RulesetDocument, from_mapping, parse_yaml
from .conditions import ConditionError
from .engine import EngineError, FactRefused, LoadedRuleset, RuleEngine
from .examples import ExampleResult, run_examples
from .kinds import KindRegistry, Problem
from .releases import Release, ReleaseStore
from .store import RuleStore, VersionRecord
from .validation import ValidationResult, list_keys, validate_text

log = logging.getLogger(__name__)
SYSTEM = "system"


@dataclass(frozen=True)
class Transition:
    key: str
    before: str
    after: str
    count: int


@dataclass(frozen=True)
class Simulation:
    total: int
    changed: int
    transitions: tuple[Transition, ...]
    problems: tuple[Problem, ...] = ()   # items left out of the counts, with why ("sample[i]")


def problems_error(problems: Sequence[Problem], what: str = "document") -> InvalidArgument:
    return InvalidArgument(f"the {what} has {len(problems)} problem(s)",
                           [(f"document.{p.path}" if p.path else "document", p.message) for p in problems])


class RuleAdmin:
    def __init__(self, store: RuleStore, kinds: KindRegistry, engine: RuleEngine, lead_seconds: float = 60.0):
        self.store = store
        self.kinds = kinds
        self.engine = engine
        self.releases = ReleaseStore(store, lead_seconds)

    def validate(self, text: str, expected_name: str | None = None) -> ValidationResult:
        return validate_text(text, self.kinds, self.engine, expected_name=expected_name)

    def _kind_of(self, text: str) -> str:
        return str(parse_yaml(text).get("kind"))

    def create(self, text: str, actor: str, comment: str = "", request_id: str | None = None,
               allowed_kinds: set[str] | None = None) -> VersionRecord:
        result = self.validate(text)
        if not result.ok:
            raise problems_error(result.problems)
        doc = result.document
        if allowed_kinds is not None and doc.kind not in allowed_kinds:
            raise InvalidArgument(violations=[("document.kind", f"kind {doc.kind} is not served here "
                                               f"(this service serves {', '.join(sorted(allowed_kinds))})")])
        return self.store.create_version(doc.name, doc.kind, text, actor, comment, request_id)

    def document(self, name: str, version: int = 0) -> tuple[VersionRecord, RulesetDocument]:
        record = self.store.get(name, version)
        return record, from_mapping(parse_yaml(record.document))

    def _load(self, doc: RulesetDocument, version: int, keys: Sequence[str]) -> LoadedRuleset:
        """A stored version into the engine (no validation: it passed it when
        stored); one the engine cannot take is the caller's precondition."""
        try:
            return self.engine.load(compile_document(doc), version, keys)
        except (EngineError, ConditionError) as exc:
            raise FailedPrecondition(f"{doc.name} v{version} cannot be loaded: {exc}"[:300]) from None

    def test(self, name: str, version: int = 0) -> list[ExampleResult]:
        record, doc = self.document(name, version)
        kind = self.kinds.get(doc.kind)
        if kind is None:
            raise FailedPrecondition(f"kind {doc.kind} is not known to this service", reason="KIND_UNKNOWN",
                                     metadata={"ruleset": name, "kind": doc.kind})
        loaded = self._load(doc, record.version, list_keys(kind))
        try:
            return run_examples(loaded, doc)
        finally:
            self.engine.unload(loaded)

    def four_eyes(self, name: str, kind: str | None = None) -> bool:
        """The ruleset's release policy: its own override, else its kind's default."""
        override = self.releases.policy_override(name)
        if override is not None:
            return bool(override)
        if kind is None:
            kind = self.store.list_versions(name)[0].kind
        spec = self.kinds.get(kind)
        return bool(spec and spec.four_eyes)

    def publish(self, name: str, version: int, actor: str, reason: str = "",
                request_id: str | None = None) -> VersionRecord:
        """One person activates a version: only where the ruleset's policy
        does not demand four eyes (else FOUR_EYES_REQUIRED: use a release)."""
        record = self.store.get(name, version)
        # A version that is not a DRAFT is refused as such (WRONG_STATE) by the store.
        if record.status == "DRAFT" and self.four_eyes(name, record.kind):
            raise FailedPrecondition(f"{name} is released with four eyes: request a release and have another "
                                     f"rule owner approve it", reason="FOUR_EYES_REQUIRED", metadata={"ruleset": name})
        return self._publish(record, actor, reason, request_id)

    def _publish(self, record: VersionRecord, actor: str, reason: str, request_id: str | None) -> VersionRecord:
        if record.status == "DRAFT":
            self._check_publishable(record)
        self.releases.activate_due()
        return self.store.publish(record.name, record.version, actor, reason, request_id)

    def _check_publishable(self, record: VersionRecord) -> None:
        # Compile-before-activate: the whole document again, examples included.
        result = self.validate(record.document, expected_name=record.name)
        if not result.ok:
            raise FailedPrecondition("refusing to publish: " + "; ".join(map(str, result.problems)),
                                     reason="RULESET_INVALID",
                                     metadata={"ruleset": record.name, "version": record.version,
                                               "problems": len(result.problems)})

    # -- releases (DOMAIN.md §7) ---------------------------------------------
    def request_release(self, name: str, version: int, effective_from, actor: str, comment: str = "",
                        request_id: str | None = None) -> Release:
        record = self.store.get(name, version)
        if record.status == "DRAFT":
            self._check_publishable(record)  # refuse early what approval would refuse
        return self.releases.request(name, version, effective_from, actor, comment, request_id)

    def approve_release(self, release_id: str, actor: str, comment: str = "") -> Release:
        release = self.releases.get(release_id)
        record = self.store.get(release.name, release.version)
        if record.status == "DRAFT":
            self._check_publishable(record)  # the kind may have moved on since the request
        self.releases.activate_due()
        return self.releases.approve(release_id, actor, comment)

    def reject_release(self, release_id: str, actor: str, comment: str = "") -> Release:
        return self.releases.reject(release_id, actor, comment)

    def rollback(self, name: str, to_version: int, actor: str, reason: str = "",
                 request_id: str | None = None) -> VersionRecord:
        record = self.store.get(name, to_version)
        result = self.validate(record.document, expected_name=name)
        if not result.ok:  # e.g. the kind's schema moved on since
            raise FailedPrecondition("refusing to roll back: " + "; ".join(map(str, result.problems)),
                                     reason="RULESET_INVALID",
                                     metadata={"ruleset": name, "version": to_version,
                                               "problems": len(result.problems)})
        self.releases.activate_due()
        return self.store.rollback(name, to_version, actor, reason, request_id)

    def simulate(self, name: str, version: int, sample: Sequence[Mapping[str, Any] | Problem],
                 ) -> Simulation:
        """What would change for ``sample`` against the active version: a
        migration matrix per scalar outcome (e.g. tier from → to). An item
        the engine refuses (or a Problem the caller already found) is
        reported in ``problems`` and left out of the counts."""
        candidate_record, candidate = self.document(name, version)
        kind = self.kinds.get(candidate.kind)
        if kind is None:
            raise FailedPrecondition(f"kind {candidate.kind} is not known to this service", reason="KIND_UNKNOWN",
                                     metadata={"ruleset": name, "kind": candidate.kind})
        try:
            active_record, current = self.document(name, 0)
        except NotFound:
            active_record, current = None, None
        keys = list_keys(kind)
        new = self._load(candidate, candidate_record.version, keys)
        try:
            old = self._load(current, active_record.version, keys) if current else None
        except BaseException:
            self.engine.unload(new)
            raise
        problems = [item for item in sample if isinstance(item, Problem)]
        positions = [i for i, item in enumerate(sample) if not isinstance(item, Problem)]
        items = [sample[i] for i in positions]
        try:
            after_each = new.evaluate_each(items)
            for refused in after_each:
                if isinstance(refused, FactRefused):
                    problems.append(Problem(f"sample[{positions[refused.index]}]", refused.problem))
            # The old version sees the same items (and so refuses the same ones).
            items = [item for item, a in zip(items, after_each) if not isinstance(a, FactRefused)]
            after = [a for a in after_each if not isinstance(a, FactRefused)]
            before = old.evaluate_many(items) if old else [None] * len(items)
        finally:
            self.engine.unload(new)
            if old:
                self.engine.unload(old)
        matrix: Counter = Counter()
        changed = 0
        for b, a in zip(before, after):
            b_out = b.outcome if b else {}
            keys_seen = sorted(set(b_out) | set(a.outcome))
            differs = False
            for key in keys_seen:
                bv, av = b_out.get(key), a.outcome.get(key)
                if isinstance(bv, list) or isinstance(av, list):
                    bv, av = ",".join(sorted(map(str, bv or []))), ",".join(sorted(map(str, av or [])))
                bv, av = "" if bv is None else str(bv), "" if av is None else str(av)
                matrix[(key, bv, av)] += 1
                differs |= bv != av
            changed += differs
        transitions = tuple(Transition(k, b, a, n) for (k, b, a), n in sorted(matrix.items()))
        problems.sort(key=lambda p: int("".join(c for c in p.path if c.isdigit()) or 0))  # sample order
        return Simulation(len(items), changed, transitions, tuple(problems))

    def install_defaults(self, directory: Path | Iterable[Path], allowed_kinds: set[str] | None = None) -> list[str]:
        """Publishes each shipped YAML whose ruleset has no version yet."""
        files = sorted(Path(directory).glob("*.yaml")) if isinstance(directory, Path) else sorted(directory)
        installed = []
        known = set(self.store.names())
        for path in files:
            text = path.read_text(encoding="utf-8")
            name = str(parse_yaml(text).get("name"))
            if name in known:
                continue
            record = self.create(text, SYSTEM, f"default from {path.name}", allowed_kinds=allowed_kinds)
            # Shipped with the code (reviewed with it), not written by a rule
            # owner: no release needed, even where four eyes apply.
            self._publish(record, SYSTEM, "shipped default", None)
            installed.append(name)
            log.info("published default ruleset %s v%d", record.name, record.version)
        return installed
