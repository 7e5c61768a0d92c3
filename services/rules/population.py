"""Population simulation: a candidate ruleset version against the whole
stored population of a service (tiering: every customer's latest snapshot),
compared with the active version. Writes nothing.

The service supplies a ``PopulationSource`` (a small picklable object that
knows its database and how to turn a stored item into the facts a ruleset
sees); this module never imports a service. The population is split into
``workers`` partitions, each evaluated by its own process with its own
durable-rules engine and its own database connection, so every core works
(the engine's C core holds the GIL). Partitions send progress, then their
tallies, which are merged here:

- per scalar outcome (e.g. ``tier``): a migration matrix from (active) ->
  to (candidate), with a few example ids per cell;
- per list outcome (e.g. ``segments``, ``flags``): per code, how many items
  gain it and how many lose it, with example ids;
- the same per branch (the group id the source gives each item).
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import queue as queue_module
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, Protocol, Sequence

from services.common.errors import FailedPrecondition, NotFound, Unavailable

from .compiler import compile_document
from .document import from_mapping, parse_yaml
from .engine import RuleEngine

log = logging.getLogger(__name__)
EXAMPLES = 3
ALL = None  # the scope of the overall figures (a branch id may be "")
PROGRESS_EVERY_SECONDS = 0.5


class PopulationSource(Protocol):
    """What a service stores, as items a ruleset can be evaluated on.
    Must pickle (it travels to the worker processes)."""

    def count(self, branch_id: str = "") -> int:
        """How many items (for progress; may be approximate)."""

    def items(self, branch_id: str, part: int, parts: int,
              fields: frozenset[str]) -> Iterator[Sequence[tuple[str, str, Mapping[str, Any] | None]]]:
        """Partition ``part`` of ``parts``, in chunks of (item id, branch id,
        facts naming at least ``fields``; None = cannot be evaluated)."""


@dataclass
class Tally:
    """What one partition (or the merge of all) found."""

    total: int = 0
    changed: int = 0
    skipped: int = 0
    # (branch, key, from, to) -> count; branch ALL = every branch
    cells: Counter = field(default_factory=Counter)
    # (branch, key, code, "gained"|"lost") -> count
    codes: Counter = field(default_factory=Counter)
    # branch -> [total, changed]
    branches: dict = field(default_factory=dict)
    # any cell or code key -> a few ids
    examples: dict = field(default_factory=dict)
    # with include_changes: (id, branch, candidate outcome) of every changed item
    changes: list = field(default_factory=list)

    def example(self, key: tuple, item_id: str) -> None:
        found = self.examples.setdefault(key, [])
        if len(found) < EXAMPLES:
            found.append(item_id)

    def merge(self, other: "Tally") -> None:
        self.total += other.total
        self.changed += other.changed
        self.skipped += other.skipped
        self.cells.update(other.cells)
        self.codes.update(other.codes)
        for branch, (total, changed) in other.branches.items():
            mine = self.branches.setdefault(branch, [0, 0])
            mine[0] += total
            mine[1] += changed
        for key, ids in other.examples.items():
            for item_id in ids:
                self.example(key, item_id)
        self.changes.extend(other.changes)


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def compare(tally: Tally, item_id: str, branch: str, before: Mapping[str, Any], after: Mapping[str, Any],
            list_keys: frozenset[str]) -> bool:
    """Adds one item's outcomes (active ``before``, candidate ``after``) to
    the tally, overall and for its branch; True if anything differs."""
    differs = False
    counts = tally.branches.setdefault(branch, [0, 0])
    tally.total += 1
    counts[0] += 1
    for key in sorted(set(before) | set(after)):
        b, a = before.get(key), after.get(key)
        if key in list_keys or isinstance(b, list) or isinstance(a, list):
            old, new = set(map(str, b or ())), set(map(str, a or ()))
            for code, how in [(c, "gained") for c in new - old] + [(c, "lost") for c in old - new]:
                differs = True
                for scope in (ALL, branch):
                    tally.codes[(scope, key, code, how)] += 1
                    tally.example((scope, key, code, how), item_id)
            continue
        b, a = _text(b), _text(a)
        differs |= b != a
        for scope in (ALL, branch):
            tally.cells[(scope, key, b, a)] += 1
            tally.example((scope, key, b, a), item_id)
    if differs:
        tally.changed += 1
        counts[1] += 1
    return differs


@dataclass(frozen=True)
class Job:
    source: Any
    candidate: tuple[str, int]          # (document, version)
    active: tuple[str, int] | None
    list_keys: frozenset[str]
    branch_id: str
    parts: int
    include_changes: bool = False


def _load(engine: RuleEngine, document: str, version: int, list_keys):
    return engine.load(compile_document(from_mapping(parse_yaml(document))), version, list_keys)


def run_partition(job: Job, part: int, report: Callable[[int], None] | None = None) -> Tally:
    """Evaluates one partition with its own engine; ``report(n)`` after each chunk."""
    engine = RuleEngine()
    new = _load(engine, *job.candidate, job.list_keys)
    old = _load(engine, *job.active, job.list_keys) if job.active else None
    fields = frozenset(new.compiled.fields) | (frozenset(old.compiled.fields) if old else frozenset())
    tally = Tally()
    try:
        for chunk in job.source.items(job.branch_id, part, job.parts, fields):
            usable = [(i, b, f) for i, b, f in chunk if f is not None]
            tally.skipped += len(chunk) - len(usable)
            facts = [f for _, _, f in usable]
            after = new.evaluate_many(facts)
            before = old.evaluate_many(facts) if old else [None] * len(facts)
            for (item_id, branch, _), b, a in zip(usable, before, after):
                if compare(tally, item_id, branch, b.outcome if b else {}, a.outcome, job.list_keys) \
                        and job.include_changes:
                    tally.changes.append((item_id, branch, dict(a.outcome)))
            if report:
                report(len(chunk))
    finally:
        engine.unload(new)
        if old:
            engine.unload(old)
    return tally


def _worker(job: Job, part: int, out) -> None:
    try:
        tally = run_partition(job, part, lambda n: out.put(("progress", part, n)))
        out.put(("done", part, tally))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which fails the call
        out.put(("error", part, f"{type(exc).__name__}: {exc}"))


@dataclass
class PopulationResult:
    name: str
    candidate_version: int
    active_version: int
    tally: Tally
    elapsed_seconds: float


def workers_default() -> int:
    return max(1, int(os.environ.get("KEQUN_SIMULATION_WORKERS") or os.cpu_count() or 1))


class PopulationSimulator:
    """Runs a candidate against a service's population (see module doc)."""

    def __init__(self, admin, source: PopulationSource, workers: int | None = None):
        self.admin = admin
        self.source = source
        self.workers = workers or workers_default()

    def job(self, name: str, version: int, branch_id: str = "",
            include_changes: bool = False) -> tuple[Job, int, int]:
        candidate = self.admin.store.get(name, version)
        kind = self.admin.kinds.get(candidate.kind)
        if kind is None:
            raise FailedPrecondition(f"kind {candidate.kind} is not known to this service", reason="KIND_UNKNOWN",
                                     metadata={"ruleset": name, "kind": candidate.kind})
        try:
            active = self.admin.store.get(name, 0)
        except NotFound:
            active = None
        from .validation import list_keys
        job = Job(self.source, (candidate.document, candidate.version),
                  (active.document, active.version) if active else None, frozenset(list_keys(kind)),
                  branch_id, self.workers, include_changes)
        return job, candidate.version, active.version if active else 0

    def run(self, name: str, version: int, branch_id: str = "",
            progress: Callable[[int, int], None] | None = None,
            cancelled: Callable[[], bool] = lambda: False, include_changes: bool = False) -> PopulationResult:
        started = time.perf_counter()
        job, candidate_version, active_version = self.job(name, version, branch_id, include_changes)
        total = self.source.count(branch_id)
        if progress:
            progress(0, total)
        context = multiprocessing.get_context("spawn")  # no fork of a threaded gRPC server
        out = context.Queue()
        processes = [context.Process(target=_worker, args=(job, part, out), daemon=True,
                                     name=f"kequn-simulate-{part}") for part in range(job.parts)]
        for p in processes:
            p.start()
        merged, done, evaluated, last = Tally(), set(), 0, 0.0
        try:
            while len(done) < len(processes):
                if cancelled():
                    raise Unavailable("simulation cancelled by the caller", reason="CANCELLED")
                try:
                    kind, part, payload = out.get(timeout=0.5)
                except queue_module.Empty:
                    dead = [p for i, p in enumerate(processes) if i not in done and not p.is_alive()]
                    if dead and out.empty():
                        raise Unavailable(f"simulation worker {dead[0].name} died (exit {dead[0].exitcode})")
                    continue
                if kind == "progress":
                    evaluated += payload
                    now = time.monotonic()
                    if progress and now - last >= PROGRESS_EVERY_SECONDS:
                        progress(evaluated, max(total, evaluated))
                        last = now
                elif kind == "done":
                    merged.merge(payload)
                    done.add(part)
                else:
                    raise Unavailable(f"simulation worker {part} failed: {payload}")
        finally:
            for p in processes:
                if p.is_alive() and len(done) < len(processes):
                    p.terminate()
            for p in processes:
                p.join(timeout=10)
        return PopulationResult(name, candidate_version, active_version, merged, time.perf_counter() - started)

    def stream(self, request, context) -> Iterable:
        """The SimulatePopulation RPC: progress messages, then the result."""
        import threading

        from .population_proto import changes_messages, progress_message, result_message
        messages: "queue_module.Queue" = queue_module.Queue()
        outcome: dict = {}

        def run() -> None:
            try:
                outcome["result"] = self.run(request.name, request.version, request.branch_id,
                                             lambda n, total: messages.put(progress_message(n, total)),
                                             lambda: not context.is_active(), request.include_changes)
            except BaseException as exc:  # noqa: BLE001 - re-raised on the RPC's thread
                outcome["error"] = exc
            finally:
                messages.put(None)

        worker = threading.Thread(target=run, name="simulate-population", daemon=True)
        worker.start()
        while True:
            message = messages.get()
            if message is None:
                break
            yield message
        worker.join()
        if "error" in outcome:
            raise outcome["error"]
        yield from changes_messages(outcome["result"])
        yield result_message(outcome["result"])
