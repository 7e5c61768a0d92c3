"""Tiering use cases: plain values and a unit of work in, plain values out.

One code path serves the unary call and the nightly batch: a chunk of
requests is validated, its customers' states are read (locked) in one query,
both rulesets evaluate the whole chunk at once, and every decision, state and
feed entry of the chunk is written in one transaction.
"""
from __future__ import annotations

import datetime as dt
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import psycopg

from services.common import paging
from services.common.audit import audit_context
from services.common.db import UnitOfWork, is_conflict, is_postgres, read_connection
from services.common.errors import Aborted, FailedPrecondition, InvalidArgument, KequnError, NotFound
from services.common.tracing import current_traceparent

from services.rules.engine import FactRefused

from .domain import (CustomerState, RuleAnswer, Snapshot, TierScheme, decide, feed_worthy, group_keys,
                     home_branch, project, rule_answer, rule_facts, validate)
from .metrics import TieringMetrics
from .scheme import tier_scheme
from .store import Change, PendingWrite, StoredDecision, TieringRepository, latest_decision_pg

TIERS_RULESET = "tiering.tiers"
GROUPS_RULESET = "tiering.groups"
ATTEMPTS = 5


@dataclass(frozen=True)
class EvaluateRequest:
    snapshot: Snapshot
    dry_run: bool = False
    request_id: str = ""
    origin: tuple[str, str] | None = None   # (actor, x-request-id); None = the current call's
    traceparent: str | None = None          # W3C trace context; None = the current call's


@dataclass(frozen=True)
class Outcome:
    """One answer of a chunk: a decision, or the error of that item."""

    customer_id: str
    dry_run: bool
    stored: StoredDecision | None = None
    error: KequnError | None = None


class _Call:
    """One waiting unary call: woken once, when its outcome is in or when it
    is handed the lead of the next chunk."""

    __slots__ = ("request", "wake", "done", "outcome", "error")

    def __init__(self, request):
        self.request = request
        self.wake = threading.Event()
        self.done = False
        self.outcome = None
        self.error: BaseException | None = None


class Coalescer:
    """Unary calls that arrive while a chunk is being evaluated are evaluated
    together as the next chunk: one transaction and one commit for all of
    them instead of one each. One chunk runs at a time, on the thread of a
    waiting caller (the leader): a call arriving alone runs at once on its own
    thread, with no hand-off to another thread and back. When a chunk ends,
    the leader wakes each of its callers and hands the lead to the oldest
    waiting call, if any (one wake-up each, no stampede). Each caller gets
    its own answer or error; a failure of the whole chunk (database down)
    fails each call of it."""

    def __init__(self, run_chunk: Callable[[list], list], max_chunk: int = 200):
        self.run_chunk = run_chunk
        self.max_chunk = max_chunk
        self._pending: list[_Call] = []
        self._running = False
        self._lock = threading.Lock()

    def submit(self, request):
        call = _Call(request)
        with self._lock:
            self._pending.append(call)
            leading = not self._running
            self._running = True
        while not call.done:
            if not leading:
                call.wake.wait()
                call.wake.clear()
                if call.done:
                    break
            with self._lock:  # this caller leads the next chunk (its own call included)
                batch = self._pending[:self.max_chunk]
                del self._pending[:self.max_chunk]
            try:
                self._run(batch)
            finally:
                with self._lock:
                    if self._pending:
                        self._pending[0].wake.set()   # the lead passes on
                    else:
                        self._running = False
            leading = False
        if call.error is not None:
            raise call.error
        return call.outcome

    def _run(self, batch: list[_Call]) -> None:
        try:
            outcomes = self.run_chunk([call.request for call in batch])
        except BaseException as exc:  # noqa: BLE001 - handed to every caller of the chunk
            outcomes, error = [None] * len(batch), exc
        else:
            error = None
        for call, outcome in zip(batch, outcomes):
            call.outcome, call.error, call.done = outcome, error, True
            call.wake.set()


def _causes(exc: BaseException):
    """The exception, the driver's error SQLAlchemy wraps, and their causes."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = getattr(exc, "orig", None) or exc.__cause__


def _is_duplicate(exc: BaseException) -> bool:
    """A unique key taken by a concurrent transaction (SQLAlchemy wraps
    executemany errors; COPY raises the driver's own)."""
    for e in _causes(exc):
        if getattr(e, "sqlstate", None):
            return e.sqlstate == "23505"
        if isinstance(e, sqlite3.IntegrityError):
            return "UNIQUE" in str(e)
    return False


# Data exceptions (class 22: NUL byte, value too long, out of range) and the
# integrity violations one row causes by itself (not null, foreign key, check).
_ROW_SQLSTATES = ("23502", "23503", "23514")


def _refused_by_database(exc: BaseException) -> str | None:
    """Why the database refused a row's values (its first line, bounded),
    or None when the failure is not about the data (down, conflict, bug)."""
    for e in _causes(exc):
        state = getattr(e, "sqlstate", None) or ""
        if (isinstance(e, (psycopg.DataError, sqlite3.DataError)) or state.startswith("22")
                or state in _ROW_SQLSTATES
                or (isinstance(e, sqlite3.IntegrityError) and "UNIQUE" not in str(e))):
            return (str(e).strip().splitlines() or ["invalid value"])[0][:120]
    return None


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class TieringService:
    def __init__(self, session_factory, rules, metrics: TieringMetrics | None = None,
                 clock: Callable[[], dt.datetime] = _utcnow):
        self.session_factory = session_factory
        self.rules = rules
        self.metrics = metrics or TieringMetrics()
        self.clock = clock
        self.feed_changed = threading.Condition()
        self._schemes: dict[tuple[str, int], TierScheme] = {}
        self._unary = Coalescer(self.evaluate_chunk)
        engine = getattr(session_factory, "kw", {}).get("bind")
        self._pg_reads = engine if engine is not None and is_postgres(engine) else None

    # ------------------------------------------------------------ evaluate
    def evaluate(self, request: EvaluateRequest) -> StoredDecision:
        started = time.perf_counter()
        if request.origin is None:  # the coalesced chunk runs on another thread: capture who asks here
            request = replace(request, origin=audit_context(), traceparent=current_traceparent())
        outcome = self._unary.submit(request)
        self.metrics.evaluation.labels("unary").observe(time.perf_counter() - started)
        if outcome.error is not None:
            raise outcome.error
        return outcome.stored

    def evaluate_batch_chunk(self, requests: Sequence[EvaluateRequest]) -> list[Outcome]:
        started = time.perf_counter()
        outcomes = self.evaluate_chunk(requests)
        self.metrics.evaluation.labels("batch_chunk").observe(time.perf_counter() - started)
        self.metrics.batch_customers.inc(len(outcomes))
        return outcomes

    def evaluate_chunk(self, requests: Sequence[EvaluateRequest]) -> list[Outcome]:
        now = self.clock()
        # The versions in force at the decision's instant (a release may switch at any moment).
        tiers = self.rules.active(TIERS_RULESET, at=now)
        groups = self.rules.active(GROUPS_RULESET, at=now)
        scheme = self._scheme(tiers)
        card_levels = list(groups.document.parameters.get("card_levels") or ())
        today = now.date().isoformat()
        origin = audit_context() if any(r.origin is None and not r.dry_run for r in requests) else None
        traceparent = current_traceparent()
        outcomes: list[Outcome | None] = [None] * len(requests)
        valid: list[tuple[int, EvaluateRequest]] = []
        for i, request in enumerate(requests):
            snapshot = request.snapshot
            if not snapshot.as_of:
                snapshot = replace(snapshot, as_of=today)
                request = replace(request, snapshot=snapshot)
            try:
                validate(snapshot, card_levels)
            except InvalidArgument as exc:
                outcomes[i] = Outcome(snapshot.customer_id, request.dry_run, error=exc)
                continue
            valid.append((i, request))
        if valid:
            done = self._evaluate_isolating(valid, tiers, groups, scheme, now, origin, traceparent)
            for (i, _request), outcome in zip(valid, done):
                outcomes[i] = outcome
        return outcomes  # type: ignore[return-value]

    def _evaluate_isolating(self, valid, tiers, groups, scheme: TierScheme, now: dt.datetime,
                            origin: tuple[str, str] | None, traceparent: str = "") -> list[Outcome]:
        """Evaluates and stores ``valid`` in one transaction. When the
        database refuses a row of it (a value validation let through: a NUL
        byte, a string too long for its column, a constraint), the chunk is
        written again in halves, in order, until the refused rows stand
        alone: each of those answers its error, every other row is stored."""
        try:
            return self._evaluate_retrying(valid, tiers, groups, scheme, now, origin, traceparent)
        except Exception as exc:
            refused = _refused_by_database(exc)
            if refused is None:
                raise
        if len(valid) == 1:
            request = valid[0][1]
            return [Outcome(request.snapshot.customer_id, request.dry_run, error=InvalidArgument(
                f"the database refused this item's values: {refused}",
                violations=[("customer", f"refused by the database: {refused}")],
                metadata={"stage": "store"}))]
        middle = len(valid) // 2
        return (self._evaluate_isolating(valid[:middle], tiers, groups, scheme, now, origin, traceparent)
                + self._evaluate_isolating(valid[middle:], tiers, groups, scheme, now, origin, traceparent))

    def _evaluate_retrying(self, valid, tiers, groups, scheme: TierScheme, now: dt.datetime,
                           origin: tuple[str, str] | None, traceparent: str = "") -> list[Outcome]:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return self._evaluate_valid(valid, tiers, groups, scheme, now, origin, traceparent)
            except Exception as exc:
                if _is_duplicate(exc):
                    # A concurrent call inserted the same new customer or
                    # request_id first: run again, now seeing its result.
                    if attempt == ATTEMPTS:
                        raise Aborted("concurrent evaluations of the same customers, retry") from None
                elif not is_conflict(exc) or attempt == ATTEMPTS:
                    raise
            time.sleep(0.01 * attempt)
        raise AssertionError("unreachable")

    def _scheme(self, tiers) -> TierScheme:
        key = (tiers.name, tiers.version)
        if key not in self._schemes:
            self._schemes[key] = tier_scheme(tiers.document)
        return self._schemes[key]

    def _evaluate_valid(self, valid, tiers, groups, scheme: TierScheme, now: dt.datetime,
                        origin: tuple[str, str] | None, traceparent: str = "") -> list[Outcome]:
        storing = any(not r.dry_run for _, r in valid)
        with UnitOfWork(self.session_factory) as uow:
            repo = TieringRepository(uow.session)
            replay = repo.decisions_by_request([r.request_id for _, r in valid if r.request_id and not r.dry_run])
            fresh = [(i, r) for i, r in valid if not (r.request_id in replay and not r.dry_run)]
            states: dict[str, CustomerState | None] = dict(
                repo.states([r.snapshot.customer_id for _, r in fresh], for_update=storing))
            # Home branches first (they depend on the state left by earlier
            # items of the same customer), so the rules see them as facts.
            homes, facts = [], []
            home_of = {cid: st.home_branch_id for cid, st in states.items() if st}
            for _, r in fresh:
                s = r.snapshot
                home = home_branch(s.holdings, home_of.get(s.customer_id, ""))
                if not r.dry_run:
                    home_of[s.customer_id] = home
                homes.append(home)
                facts.append(rule_facts(s, home))
            tier_fields, group_fields = tiers.loaded.compiled.fields, groups.loaded.compiled.fields
            key_attributes = tuple(groups.document.parameters.get("group_key_attributes") or ())
            # Per item: an input the engine refuses answers its own error.
            tier_answers = tiers.evaluate_each([project(f, tier_fields) for f in facts])
            group_answers = groups.evaluate_each([project(f, group_fields) for f in facts])
            writes: list[PendingWrite] = []
            results: dict[int, Outcome | PendingWrite] = {}
            by_request: dict[str, PendingWrite] = {}
            answers: dict[tuple[int, int], RuleAnswer] = {}
            for (i, r), home, fact, t_ev, g_ev in zip(fresh, homes, facts, tier_answers, group_answers):
                s = r.snapshot
                if r.request_id and not r.dry_run and r.request_id in by_request:
                    results[i] = by_request[r.request_id]  # the same request twice in one chunk
                    continue
                refused = next((e for e in (t_ev, g_ev) if isinstance(e, FactRefused)), None)
                if refused is not None:
                    results[i] = Outcome(s.customer_id, r.dry_run, error=refused)
                    continue
                tier = t_ev.outcome.get("tier")
                if not tier:
                    results[i] = Outcome(s.customer_id, r.dry_run, error=FailedPrecondition(
                        f"ruleset {tiers.name} v{tiers.version} gives customer {s.customer_id} no tier",
                        reason="NO_TIER", metadata={"ruleset": tiers.name, "version": tiers.version}))
                    continue
                # Customers share few sets of fired rules, and the engine hands
                # out one tuple per set: build each answer once per chunk.
                key = (id(t_ev.fired), id(g_ev.fired))
                answer = answers.get(key)
                if answer is None:
                    answer = answers[key] = rule_answer(t_ev, g_ev, (tiers.name, tiers.version),
                                                        (groups.name, groups.version))
                before = states.get(s.customer_id)
                decision, after = decide(s, before, answer, scheme, (tiers.name, tiers.version), home, fact)
                keys = group_keys(s, key_attributes)
                after = replace(after, group_keys=keys)
                item = PendingWrite(s, decision, uuid.uuid4().hex, r.request_id or None, before, after,
                                    feed_worthy(decision, before, keys), r.origin or origin,
                                    traceparent=traceparent if r.traceparent is None else r.traceparent,
                                    groups=(groups.name, groups.version))
                if r.dry_run:
                    results[i] = Outcome(s.customer_id, True,
                                         StoredDecision(decision, item.decision_id, now, 0, keys))
                    continue
                states[s.customer_id] = after
                writes.append(item)
                if r.request_id:
                    by_request[r.request_id] = item
                results[i] = item
            repo.write(writes, now)
            uow.commit()
        if writes:
            self.metrics.stored(w.decision for w in writes)
            cursors = [w.cursor for w in writes if w.cursor]
            if cursors:
                self.metrics.feed_cursor.set(max(cursors))
                with self.feed_changed:
                    self.feed_changed.notify_all()
        outcomes = []
        for i, r in valid:
            if r.request_id in replay and not r.dry_run:
                outcomes.append(Outcome(r.snapshot.customer_id, False, replay[r.request_id]))
                continue
            result = results[i]
            if isinstance(result, PendingWrite):  # stored now: its cursor is known after the write
                result = Outcome(r.snapshot.customer_id, False,
                                 StoredDecision(result.decision, result.decision_id, now, result.cursor,
                                                result.after.group_keys))
            outcomes.append(result)
        return outcomes

    # ------------------------------------------------------------ reads
    def get_customer_tier(self, customer_id: str) -> StoredDecision:
        if not customer_id.strip():
            raise InvalidArgument(violations=[("customer_id", "required")])
        if self._pg_reads is not None:
            with read_connection(self._pg_reads) as conn:
                found = latest_decision_pg(conn, customer_id)
        else:
            with UnitOfWork(self.session_factory) as uow:
                found = TieringRepository(uow.session).latest_decision(customer_id)
        if found is None:
            raise NotFound(f"customer {customer_id} has never been evaluated", metadata={"customer_id": customer_id})
        return found

    def list_changes(self, customer_id: str = "", after_cursor: int = 0, page_size: int = 0,
                     page_token: str = "") -> tuple[list[Change], str]:
        """Oldest first; the page token is the last cursor of the page."""
        if after_cursor < 0:
            raise InvalidArgument(violations=[("after_cursor", "must not be negative")])
        size = paging.page_size(page_size)
        token_scope = paging.scope("tiering.ListTierChanges", customer_id)
        position = paging.decode_token(page_token, token_scope, expect=int)
        if position is not None:
            after_cursor = max(after_cursor, position)
        with UnitOfWork(self.session_factory) as uow:
            found = TieringRepository(uow.session).changes(after_cursor, size + 1, customer_id)
        page = found[:size]
        return page, (paging.encode_token(page[-1].cursor, token_scope) if len(found) > size else "")

    def feed_cursor(self) -> int:
        """The last cursor in the feed (0 = empty)."""
        with UnitOfWork(self.session_factory) as uow:
            return TieringRepository(uow.session).max_cursor()

    def changes_after(self, after_cursor: int, limit: int = 1000) -> list[Change]:
        with UnitOfWork(self.session_factory) as uow:
            return TieringRepository(uow.session).changes(after_cursor, limit)

    def wait_for_changes(self, timeout: float) -> None:
        """Wakes early when this process appends to the feed (other writers
        are caught by the caller's polling)."""
        with self.feed_changed:
            self.feed_changed.wait(timeout)
