"""Serving the active rulesets of one service, hot-reloaded from the store.

A poll thread asks the store for the active (name, version) pairs, and the
approved releases waiting for their ``effective_from``, every few seconds. A
new version is validated, compiled and registered in the engine *before* it
replaces the old one (a scheduled one before its instant); if that fails,
the old version keeps serving and ``kequn_ruleset_load_ok`` drops to 0.
Evaluation never touches storage.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Mapping, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge

from services.common.errors import FailedPrecondition, Unavailable

from .compiler import compile_document
from .document import RulesetDocument
from .engine import Evaluation, FactRefused, LoadedRuleset, RuleEngine
from .kinds import KindRegistry
from .releases import ReleaseStore
from .store import RuleStore
from .validation import list_keys, validate_text

log = logging.getLogger(__name__)
RETIRE_AFTER_SECONDS = 60.0  # in-flight batches may still hold the old version
LOADING_RETRY_SECONDS = 1.0  # RetryInfo of RULESET_LOADING: about one poll away
ON_DEMAND_KEPT = 8  # old versions loaded to explain decisions


@dataclass(frozen=True)
class ActiveRuleset:
    name: str
    version: int
    kind: str
    document: RulesetDocument
    loaded: LoadedRuleset

    def evaluate(self, values: Mapping[str, Any]) -> Evaluation:
        return self.loaded.evaluate(values)

    def evaluate_many(self, inputs: Sequence[Mapping[str, Any]]) -> list[Evaluation]:
        return self.loaded.evaluate_many(inputs)

    def evaluate_each(self, inputs: Sequence[Mapping[str, Any]]) -> list[Evaluation | FactRefused]:
        return self.loaded.evaluate_each(inputs)


class _Metrics:
    def __init__(self, registry: CollectorRegistry | None):
        registry = registry or CollectorRegistry()
        self.version = Gauge("kequn_ruleset_active_version", "Active version of each ruleset served",
                             ["ruleset"], registry=registry)
        self.load_ok = Gauge("kequn_ruleset_load_ok", "1 if the latest published version is the one serving",
                             ["ruleset"], registry=registry)
        self.reloads = Counter("kequn_ruleset_reloads_total", "Ruleset versions loaded by this process",
                               ["ruleset"], registry=registry)
        self.failures = Counter("kequn_ruleset_load_failures_total", "Published versions that failed to load",
                                ["ruleset"], registry=registry)
        self.scheduled = Gauge("kequn_ruleset_scheduled_releases", "Approved releases loaded here, waiting for "
                               "their effective_from", ["ruleset"], registry=registry)


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class RuleRuntime:
    """Which version answers is decided per evaluation: the store's active
    version, unless an approved release of the ruleset has reached its
    ``effective_from`` by this process's clock (``active(name, at)``). The
    poll loads scheduled versions ahead of time, so the switch happens at the
    instant on every replica, not at the next poll."""

    def __init__(self, store: RuleStore, kinds: KindRegistry, engine: RuleEngine, *,
                 poll_seconds: float = 2.0, registry: CollectorRegistry | None = None,
                 clock: Callable[[], datetime] = _utcnow):
        self.store = store
        self.kinds = kinds
        self.engine = engine
        self.poll_seconds = poll_seconds
        self.clock = clock
        self.releases = ReleaseStore(store)
        self._served_kinds = set(kinds.names())
        self._active: dict[str, ActiveRuleset] = {}
        # name -> ((effective_from, loaded or None if it failed, release_id), ...) by effective_from
        self._scheduled: dict[str, tuple[tuple[datetime, ActiveRuleset | None, str], ...]] = {}
        self._loaded: dict[tuple[str, int], ActiveRuleset] = {}
        self._on_demand: OrderedDict[tuple[str, int], ActiveRuleset] = OrderedDict()
        self._failed: dict[str, int] = {}  # name -> version that failed, not retried
        self._retiring: list[tuple[float, LoadedRuleset]] = []
        self._lock = threading.Lock()
        self._refreshing = threading.Lock()  # the poll thread and PublishRuleset both refresh
        self._wake = threading.Event()       # a request saw a version not loaded yet: poll now
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.metrics = _Metrics(registry)

    def active(self, name: str, at: datetime | None = None) -> ActiveRuleset:
        """The version in force at ``at`` (default: now by this runtime's clock)."""
        scheduled = self._scheduled.get(name)
        if scheduled:
            at = at or self.clock()
            due = [entry for entry in scheduled if entry[0] <= at]
            if due:
                effective_from, loaded, release_id = due[-1]
                if loaded is None:  # approved, due, but it did not load here: never answer with the old one
                    raise Unavailable(f"ruleset {name}: release {release_id} is in force since "
                                      f"{effective_from.isoformat()} but is not loaded here",
                                      reason="RULESET_LOADING", metadata={"ruleset": name})
                return loaded
        current = self._active.get(name)
        if current is None:
            raise self._missing(name)
        return current

    def _missing(self, name: str) -> Exception:
        """Why `name` is not served: published but not loaded here yet (this
        replica's poll has not picked it up: retry shortly), or never
        published (or the store cannot tell: the database is down)."""
        try:
            published = next((ref for ref in self.store.list_active(self._served_kinds) if ref.name == name), None)
        except Exception:  # database down: a retry may find it
            return Unavailable(f"no published version of ruleset {name} is loaded", reason="RULESET_LOADING",
                               metadata={"ruleset": name}, retry_after=LOADING_RETRY_SECONDS)
        if published is None:
            return FailedPrecondition(f"ruleset {name} has no published version", reason="RULESET_NOT_PUBLISHED",
                                      metadata={"ruleset": name})
        self._wake.set()
        return Unavailable(f"ruleset {name} v{published.version} is published and still loading, retry shortly",
                           reason="RULESET_LOADING", metadata={"ruleset": name, "version": published.version},
                           retry_after=LOADING_RETRY_SECONDS)

    def active_names(self) -> list[str]:
        return sorted(self._active)

    def scheduled(self, name: str) -> list[tuple[datetime, int]]:
        """(effective_from, version) of the approved releases this replica holds ready."""
        return [(eff, loaded.version if loaded else 0) for eff, loaded, _ in self._scheduled.get(name, ())]

    def version(self, name: str, version: int) -> ActiveRuleset:
        """Any stored version, loaded on demand (explaining an old decision);
        a few stay loaded."""
        key = (name, version)
        with self._lock:
            found = self._loaded.get(key) or self._on_demand.get(key)
            if found is not None:
                if key in self._on_demand:
                    self._on_demand.move_to_end(key)
                return found
        loaded = self._load(name, version)
        with self._lock:
            if key in self._on_demand:  # another thread was quicker
                self._retiring.append((0.0, loaded.loaded))
                return self._on_demand[key]
            self._on_demand[key] = loaded
            while len(self._on_demand) > ON_DEMAND_KEPT:
                _, old = self._on_demand.popitem(last=False)
                self._retiring.append((time.monotonic(), old.loaded))
        return loaded

    def refresh(self) -> list[str]:
        """One poll; returns the names whose version changed. Also called by
        PublishRuleset, so the publishing process serves the new version
        before it answers."""
        with self._refreshing:
            return self._refresh()

    def _refresh(self) -> list[str]:
        try:
            self.releases.activate_due(self.clock())
        except Exception as exc:  # another replica may hold the row; the next poll retries
            log.warning("could not activate due releases: %s", exc)
        served = set(self.store.names(self._served_kinds))
        # Scheduled first, then active: a release activated between the two
        # reads is then seen as active (or still scheduled), never as neither.
        scheduled = self.releases.scheduled(served)
        refs = self.store.list_active(self._served_kinds)
        changed = []
        for ref in refs:
            current = self._active.get(ref.name)
            if (current and current.version == ref.version) or self._failed.get(ref.name) == ref.version:
                continue
            try:
                replacement = self._get_or_load(ref.name, ref.version)
            except Exception as exc:  # a bad version must never take the service down
                log.error("ruleset %s v%d failed to load, keeping v%s: %s", ref.name, ref.version,
                          current.version if current else "none", exc)
                self._failed[ref.name] = ref.version
                self.metrics.failures.labels(ref.name).inc()
                self.metrics.load_ok.labels(ref.name).set(0)
                continue
            with self._lock:
                self._active[ref.name] = replacement
            self._failed.pop(ref.name, None)
            self.metrics.version.labels(ref.name).set(ref.version)
            self.metrics.load_ok.labels(ref.name).set(1)
            self.metrics.reloads.labels(ref.name).inc()
            log.info("serving ruleset %s v%d", ref.name, ref.version)
            changed.append(ref.name)
        plan: dict[str, list[tuple[datetime, ActiveRuleset | None, str]]] = {}
        for item in scheduled:
            try:
                loaded = self._get_or_load(item.name, item.version)
            except Exception as exc:
                log.error("scheduled ruleset %s v%d (release %s) failed to load: %s", item.name, item.version,
                          item.release_id, exc)
                self.metrics.failures.labels(item.name).inc()
                loaded = None
            plan.setdefault(item.name, []).append((item.effective_from, loaded, item.release_id))
        for name in set(self._scheduled) | set(plan):
            self.metrics.scheduled.labels(name).set(len(plan.get(name, ())))
        with self._lock:
            self._scheduled = {name: tuple(entries) for name, entries in plan.items()}
            wanted = {(r.name, r.version) for r in self._active.values()}
            wanted |= {(e[1].name, e[1].version) for entries in plan.values() for e in entries if e[1]}
            for key in [k for k in self._loaded if k not in wanted]:
                self._retiring.append((time.monotonic(), self._loaded.pop(key).loaded))
        self._unload_retired()
        return changed

    def _get_or_load(self, name: str, version: int) -> ActiveRuleset:
        with self._lock:
            found = self._loaded.get((name, version))
        if found is None:
            found = self._load(name, version)
            with self._lock:
                self._loaded[(name, version)] = found
        return found

    def _load(self, name: str, version: int) -> ActiveRuleset:
        record = self.store.get(name, version)
        result = validate_text(record.document, self.kinds, self.engine, expected_name=name)
        if not result.ok:
            raise ValueError("; ".join(map(str, result.problems)))
        kind = self.kinds.get(result.document.kind)
        loaded = self.engine.load(compile_document(result.document), version, list_keys(kind))
        return ActiveRuleset(name, version, kind.name, result.document, loaded)

    def _unload_retired(self, force: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            keep = []
            for since, loaded in self._retiring:
                if force or now - since >= RETIRE_AFTER_SECONDS:
                    self.engine.unload(loaded)
                else:
                    keep.append((since, loaded))
            self._retiring = keep

    def start(self) -> None:
        self.refresh()
        self._thread = threading.Thread(target=self._poll, name="rules-poll", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.poll_seconds)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.refresh()
            except Exception as exc:  # database down: keep serving what we have
                log.warning("rule store poll failed: %s", exc)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=5)
        with self._lock:
            for current in [*self._loaded.values(), *self._on_demand.values()]:
                self._retiring.append((0.0, current.loaded))
            self._active.clear()
            self._scheduled = {}
            self._loaded.clear()
            self._on_demand.clear()
        self._unload_retired(force=True)
