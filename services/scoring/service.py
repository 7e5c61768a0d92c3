"""Scoring use cases: plain values and a unit of work in, plain values out.

Locking (PostgreSQL; SQLite serialises every writer anyway): submissions take
the period row FOR SHARE, so many run at once; calculate, finalize and revise
take it FOR UPDATE, so a finalize can never slip between a submission's check
and its write, and a calculation reads a stable set of values.
"""
from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Callable, NamedTuple, Protocol, Sequence

from sqlalchemy.exc import IntegrityError

from services.common import paging
from services.common.db import UnitOfWork, retry_on_conflict
from services.common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, Unavailable
from services.scoring import domain
from services.scoring.domain import (BookSize, IndicatorScore, Person, PeerStats, PersonScore, Scorecard,
                                     needs_book_size, peer_group, rank_among, score_person, score_role, show)
from services.scoring.store import PeriodRow, ResultRow, ScoringStore

ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
ROLE_RE = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
MAX_VALUES_PER_REQUEST = 100_000
DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 100, 1000
MAX_VIOLATIONS = 20


# --------------------------------------------------------------------------- ports


class Scorecards(Protocol):
    def active(self, role: str) -> Scorecard:
        """The published card of `role`; InvalidArgument if the role has none."""

    def version(self, name: str, version: int) -> Scorecard:
        """A card as it was at `version` (for revisions of finalized results)."""


class Observer:
    """Hooks for metrics; this default does nothing (tests, CLI)."""

    def run(self, role: str, outcome: str, seconds: float) -> None: ...
    def scored(self, role: str, people: int) -> None: ...
    def finalized(self) -> None: ...
    def rejected(self, reason: str) -> None: ...


# --------------------------------------------------------------------------- values in and out


@dataclass(frozen=True)
class ValueInput:
    staff_id: str
    role: str
    branch_id: str
    indicator_id: str
    value: str
    comment: str = ""


@dataclass(frozen=True)
class Period:
    period_id: str
    starts_on: str
    ends_on: str
    due_on: str
    status: str
    created_at: datetime
    finalized_at: datetime | None


class IndicatorView(NamedTuple):  # a tuple: HR pulls 20 of these per person, 50,000 people
    indicator_id: str
    method: str
    raw_value: str
    score: str
    full_marks: str
    peer_mean: str = ""
    peer_stddev: str = ""
    peer_count: int = 0
    note: str = ""
    warning: str = ""  # "MISSING_VALUE": a required value was not submitted (scored 0)


MISSING_VALUE = "MISSING_VALUE"


@dataclass(frozen=True)
class ScoreView:
    staff_id: str
    role: str
    branch_id: str
    period_id: str
    total: str
    status: str                   # CALCULATED | FINALIZED
    revision: int
    rank: int
    peer_group_size: int
    scorecard_name: str
    scorecard_version: int
    indicators: list[IndicatorView]
    revision_reason: str
    revised_by: str
    calculated_at: datetime
    warnings: tuple[str, ...] = ()  # what HR should look at, e.g. "MISSING_VALUE: npl_ratio ..."


@dataclass(frozen=True)
class Page:
    scores: list[ScoreView]
    next_page_token: str


@dataclass
class _Batch:
    people: dict[str, tuple[str, str]] = field(default_factory=dict)   # staff -> (role, branch)
    items: dict[tuple[str, str], tuple[str, bool, str]] = field(default_factory=dict)
    cards: dict[str, Scorecard] = field(default_factory=dict)                # role -> card checked against


def _period(row: PeriodRow) -> Period:
    return Period(row.period_id, row.starts_on, row.ends_on, row.due_on, row.status, row.created_at,
                  row.finalized_at)


def _plain(value: Decimal | None) -> str:
    return "" if value is None else format(value, "f")


def encode_breakdown(indicators: Sequence[IndicatorScore]) -> str:
    """Compact JSON, one flat list: id, method, raw, score (shown), full marks, note for
    each indicator in turn (flat: one container per person to decode, not one per
    indicator). Peer statistics are stored once per peer group (scoring_peer_stats)."""
    flat: list = []
    for i in indicators:
        flat += (i.indicator_id, i.method, _plain(i.raw_value), show(i.score), _plain(i.full_marks), i.note)
    return json.dumps(flat, ensure_ascii=False, separators=(",", ":"))


BREAKDOWN_WIDTH = 6


Stats = dict  # (role, peer group, indicator) -> (mean, stddev, count), as stored


def shown_stats(stored: Stats) -> Stats:
    """Peer statistics as shown: μ and σ rounded half-up to 4 places (stored
    exact, so revisions recompute with what the calculation used)."""
    return {key: (domain.show(Decimal(mean), domain.STAT_PLACES), domain.show(Decimal(sd), domain.STAT_PLACES), n)
            for key, (mean, sd, n) in stored.items()}


def _view(row: ResultRow, period_status: str, stats: Stats) -> ScoreView:
    none = ("", "", 0)
    role, group = row.role, row.peer_group
    flat = row.breakdown
    missing = row.missing
    indicators = []
    for at in range(0, len(flat), BREAKDOWN_WIDTH):
        i, m, raw, score, full, note = flat[at:at + BREAKDOWN_WIDTH]
        mean, sd, n = stats.get((role, group, i), none) if m == "STDDEV" else none
        indicators.append(IndicatorView(i, m, raw, score, full, mean, sd, n, note,
                                        MISSING_VALUE if missing and i in missing else ""))
    warnings = tuple(f"{MISSING_VALUE}: {i} has no value (required): scored 0" for i in missing)
    return ScoreView(
        staff_id=row.staff_id, role=row.role, branch_id=row.branch_id, period_id=row.period_id, total=row.total,
        status="FINALIZED" if period_status == "FINALIZED" else "CALCULATED", revision=row.revision,
        rank=row.rank, peer_group_size=row.peer_group_size, scorecard_name=row.scorecard_name,
        scorecard_version=row.scorecard_version, indicators=indicators,
        revision_reason=row.reason, revised_by=row.revised_by, calculated_at=row.calculated_at, warnings=warnings)


def _check_id(value: str, path: str, violations: list, pattern=ID_RE, what="an id") -> None:
    if not isinstance(value, str) or not pattern.match(value):
        violations.append((path, f"required: {what}" if not value else f"not {what}: {value!r}"))


def _raise(violations: list, metadata: dict | None = None) -> None:
    if violations:
        extra = len(violations) - MAX_VIOLATIONS
        shown = violations[:MAX_VIOLATIONS] + ([("values", f"... and {extra} more problems")] if extra > 0 else [])
        raise InvalidArgument(violations=shown, metadata=metadata)


def _date(value: str, path: str, violations: list) -> None:
    try:
        if not DATE_RE.match(value or ""):
            raise ValueError
        date.fromisoformat(value)
    except ValueError:
        violations.append((path, f"required: a date YYYY-MM-DD, got {value!r}"))


# --------------------------------------------------------------------------- the service


class ScoringService:
    def __init__(self, session_factory, scorecards: Scorecards, book_size: BookSize | None = None,
                 observer: Observer | None = None, clock: Callable[[], date] = date.today):
        self._sessions = session_factory
        self.scorecards = scorecards
        self.book_size = book_size
        self.observer = observer or Observer()
        self.clock = clock

    # ----------------------------------------------------------- plumbing

    def _write(self, work: Callable[[ScoringStore], dict], method: str = "", request_id: str = "") -> dict:
        """One transaction, re-run on a lost race; with a request_id, the first
        answer is stored in the same transaction and answered again on a repeat."""
        def attempt() -> dict:
            with UnitOfWork(self._sessions) as uow:
                store = ScoringStore(uow.session.connection())
                if request_id:
                    stored = store.replay(method, request_id)
                    if stored is not None:
                        return stored
                answer = work(store)
                if request_id:
                    store.remember(method, request_id, answer)
                store.write_audit()  # last: the chain's append lock is held until commit
                uow.commit()
                return answer

        def once() -> dict:
            try:
                return attempt()
            except IntegrityError:
                # The same request_id ran at the same time and committed first: our
                # transaction is rolled back and the first answer is the answer.
                stored = request_id and self._read(lambda store: store.replay(method, request_id))
                if stored:
                    return stored
                raise
        return retry_on_conflict(once)

    def _read(self, work: Callable[[ScoringStore], object]):
        with UnitOfWork(self._sessions) as uow:
            return work(ScoringStore(uow.session.connection()))

    @staticmethod
    def _existing(store: ScoringStore, period_id: str, lock: str | None = None) -> PeriodRow:
        if not period_id:
            raise InvalidArgument(violations=[("period_id", "required")])
        row = store.period(period_id, lock)
        if row is None:
            raise NotFound(f"period {period_id!r} not found", metadata={"period_id": period_id})
        return row

    def _card(self, role: str, path: str = "role") -> Scorecard:
        if not isinstance(role, str) or not ROLE_RE.match(role):
            raise InvalidArgument(violations=[(path, f"required: an UPPER_SNAKE role code, got {role!r}")])
        return self.scorecards.active(role)

    # ----------------------------------------------------------- periods

    def create_period(self, period_id: str, starts_on: str, ends_on: str, due_on: str, actor: str,
                      request_id: str = "") -> Period:
        violations: list = []
        _check_id(period_id, "period_id", violations)
        for name, value in (("starts_on", starts_on), ("ends_on", ends_on), ("due_on", due_on)):
            _date(value, name, violations)
        if not violations and starts_on > ends_on:
            violations.append(("ends_on", f"{ends_on} is before starts_on {starts_on}"))
        if not violations and due_on < starts_on:
            violations.append(("due_on", f"{due_on} is before starts_on {starts_on}"))
        _raise(violations)

        def work(store: ScoringStore) -> dict:
            if store.period(period_id) is not None:
                raise AlreadyExists(f"period {period_id!r} already exists", metadata={"period_id": period_id})
            store.add_period(period_id, starts_on, ends_on, due_on, actor)
            store.audit("period.create", f"period/{period_id}", None,
                        {"period_id": period_id, "starts_on": starts_on, "ends_on": ends_on, "due_on": due_on,
                         "status": "OPEN"})
            return {"period_id": period_id}
        self._write(work, "CreatePeriod", request_id)
        return self.get_period(period_id)

    def get_period(self, period_id: str) -> Period:
        return self._read(lambda store: _period(self._existing(store, period_id)))

    def overdue_periods(self) -> int:
        return self._read(lambda store: store.overdue_periods(self.clock().isoformat()))

    # ----------------------------------------------------------- inputs

    def submit(self, period_id: str, items: Sequence[ValueInput], *, ratings: bool, actor: str,
               request_id: str = "") -> int:
        """Stores metric values (or ratings), replacing earlier ones, all or nothing."""
        method = "SubmitRatings" if ratings else "SubmitMetrics"
        try:
            batch = self._validate(period_id, items, ratings)

            def work(store: ScoringStore) -> dict:
                period = self._existing(store, period_id, lock="share")
                if period.status == "FINALIZED":
                    raise FailedPrecondition(f"period {period_id} is finalized: its values are frozen; "
                                             "correct a result with ReviseScore", reason="PERIOD_FINALIZED",
                                             metadata={"period_id": period_id})
                known = store.staff_roles(period_id, sorted(batch.people))
                moved = sorted(s for s, (role, _) in known.items() if role != batch.people[s][0])
                store.forget_staff_values(period_id, moved)
                store.upsert_staff(period_id, dict(sorted(batch.people.items())))
                items = sorted(batch.items.items())
                store.upsert_values(period_id, [(s, k, v, r, c) for (s, k), (v, r, c) in items], actor)
                stale = {r for r, _ in batch.people.values()} | {known[s][0] for s in moved}
                store.mark_stale(period_id, stale)
                store.audit(f"values.{'submit_ratings' if ratings else 'submit_metrics'}", f"period/{period_id}",
                            {"status": period.status},
                            {"status": period.status, **_submission_summary(batch, items, known, moved, stale)})
                return {"accepted": len(batch.items)}
            return self._write(work, method, request_id)["accepted"]
        except InvalidArgument:
            self.observer.rejected("invalid_argument")
            raise
        except NotFound:
            self.observer.rejected("unknown_period")
            raise
        except FailedPrecondition:
            self.observer.rejected("period_finalized")
            raise

    def _validate(self, period_id: str, items: Sequence[ValueInput], ratings: bool) -> _Batch:
        violations: list = []
        _check_id(period_id, "period_id", violations)
        if not items:
            violations.append(("values", "required: at least one value"))
        if len(items) > MAX_VALUES_PER_REQUEST:
            violations.append(("values", f"at most {MAX_VALUES_PER_REQUEST} values per request"))
        _raise(violations)
        batch, cards = _Batch(), {}
        out_of_range: dict | None = None  # ErrorInfo metadata: the first value outside its declared range
        for i, item in enumerate(items):
            path = f"values[{i}]"
            before = len(violations)
            _check_id(item.staff_id, f"{path}.staff_id", violations)
            _check_id(item.branch_id, f"{path}.branch_id", violations)
            if not isinstance(item.role, str) or not ROLE_RE.match(item.role):
                violations.append((f"{path}.role", f"required: an UPPER_SNAKE role code, got {item.role!r}"))
                continue
            if item.role not in cards:
                try:
                    cards[item.role] = self._card(item.role, f"{path}.role")
                except InvalidArgument:
                    cards[item.role] = None
            card = cards[item.role]
            if card is None:
                violations.append((f"{path}.role", f"unknown role {item.role!r}: no published scorecard"))
                continue
            batch.cards[item.role] = card
            try:
                value = domain.parse_decimal(item.value)
            except ValueError as exc:
                violations.append((f"{path}.value", str(exc)))
                continue
            why = card.check_input(item.indicator_id, value, rating=ratings)
            if why:
                violations.append((f"{path}.indicator_id" if "indicator" in why or "Submit" in why
                                   else f"{path}.value", why))
                bounds = card.out_of_range(item.indicator_id, value)
                if bounds is not None and out_of_range is None:
                    out_of_range = {"indicator_id": item.indicator_id, "min": bounds[0], "max": bounds[1],
                                    "value": format(value, "f")[:40], "field": f"{path}.value"}
            seen = batch.people.get(item.staff_id)
            if seen is not None and seen != (item.role, item.branch_id):
                violations.append((f"{path}.role", f"{item.staff_id} appears with two roles/branches in one request"))
            if len(violations) > before:
                continue
            batch.people[item.staff_id] = (item.role, item.branch_id)
            # The same staff and indicator twice in one request: the later value wins.
            batch.items[(item.staff_id, item.indicator_id)] = (format(value, "f"), ratings, item.comment or "")
        _raise(violations, out_of_range)
        return batch

    # ----------------------------------------------------------- calculation

    def calculate(self, period_id: str, role: str = "", branch_id: str = "", request_id: str = "") -> tuple[int, str]:
        """Scores a role (or every role) of the period, ranked in peer groups; recomputable
        until the period is finalized. A branch restricts the run to the peer groups of
        that branch (everyone in them is rescored, so ranks stay consistent)."""
        if branch_id:
            _raise(self._id_violation(branch_id, "branch_id"))
        cards = [self._card(role)] if role else None
        started = time.perf_counter()
        try:
            answer = self._write(lambda store: self._calculate(store, period_id, cards, branch_id),
                                 "CalculatePeriod", request_id)
        except Exception:
            self.observer.run(role or "*", "error", time.perf_counter() - started)
            raise
        for r, n in answer["by_role"].items():
            self.observer.scored(r, n)
        self.observer.run(role or "*", "ok", time.perf_counter() - started)
        return answer["scored"], answer["status"]

    @staticmethod
    def _id_violation(value: str, path: str) -> list:
        violations: list = []
        _check_id(value, path, violations)
        return violations

    def _calculate(self, store: ScoringStore, period_id: str, cards: list[Scorecard] | None, branch_id: str) -> dict:
        period = self._existing(store, period_id, lock="update")
        if period.status == "FINALIZED":
            raise FailedPrecondition(f"period {period_id} is finalized: results are frozen; use ReviseScore",
                                     reason="PERIOD_FINALIZED", metadata={"period_id": period_id})
        scope = {"role": cards[0].role if cards else "", "branch_id": branch_id}
        if cards is None:
            cards = [self.scorecards.active(r) for r in store.roles(period_id)]
        by_role: dict[str, int] = {}
        runs: dict[str, dict] = {}
        digest = hashlib.sha256()
        for card in cards:
            people = self._people(store.people_of_role(period_id, card.role), card)
            groups = None
            if branch_id:
                groups = sorted({peer_group(card, p.branch_id) for p in people if p.branch_id == branch_id})
                people = [p for p in people if peer_group(card, p.branch_id) in groups]
            scores, stats = score_role(card, people)
            books = {p.staff_id: p.book_size for p in people}
            at = _utcnow()
            rows = [self._row(card, s, books.get(s.staff_id), calculated_at=at) for s in scores]
            store.replace_results(period_id, card.role, groups, rows,
                                  [(g, i, _plain(st.mean), _plain(st.stddev), st.count)
                                   for (g, i), st in sorted(stats.items())])
            if not branch_id:
                store.mark_calculated(period_id, card.role)
            by_role[card.role] = len(scores)
            runs[card.role] = {"scored": len(scores), "scorecard": card.name, "scorecard_version": card.version,
                               "peer_groups": len({s.peer_group for s in scores})}
            digest.update("".join(f"{card.role}\t{r['staff_id']}\t{r['total']}\t{r['rank']}\n"
                                  for r in rows).encode())
        if period.status == "OPEN":
            store.set_period_status(period_id, "CALCULATED")
        store.audit("period.calculate", f"period/{period_id}", {"status": period.status},
                    {"status": "CALCULATED", **scope, "scored": sum(by_role.values()), "by_role": runs,
                     "results_sha256": digest.hexdigest()})
        return {"scored": sum(by_role.values()), "status": "CALCULATED", "by_role": by_role}

    def _people(self, raw: dict[str, tuple[str, dict[str, str]]], card: Scorecard) -> list[Person]:
        needs_book = needs_book_size(card)
        if needs_book and self.book_size is None:
            raise Unavailable(f"the {card.role} card needs book sizes but no assignment service is configured",
                              metadata={"dependency": "assignment", "role": card.role})
        return [Person(staff_id, branch, {k: Decimal(v) for k, v in vals.items()},
                       self.book_size(staff_id) if needs_book else None)
                for staff_id, (branch, vals) in sorted(raw.items())]

    @staticmethod
    def _row(card: Scorecard, s: PersonScore, book_size: int | None, revision: int = 1, **extra) -> dict:
        return {"staff_id": s.staff_id, "revision": revision, "is_latest": True, "branch_id": s.branch_id,
                "peer_group": s.peer_group, "total": show(s.total), "rank": s.rank,
                "peer_group_size": s.peer_group_size, "scorecard_name": card.name,
                "scorecard_version": card.version, "breakdown": encode_breakdown(s.indicators),
                "book_size": book_size, "corrections": extra.get("corrections", "{}"),
                "reason": extra.get("reason", ""), "revised_by": extra.get("revised_by", ""),
                "calculated_at": extra.get("calculated_at") or _utcnow(), "missing": ",".join(s.missing)}

    def finalize(self, period_id: str, actor: str, request_id: str = "") -> tuple[int, str]:
        def work(store: ScoringStore) -> dict:
            period = self._existing(store, period_id, lock="update")
            if period.status == "FINALIZED":
                raise FailedPrecondition(f"period {period_id} is already finalized", reason="PERIOD_FINALIZED",
                                         metadata={"period_id": period_id})
            if period.status == "OPEN":
                raise FailedPrecondition(f"period {period_id} has not been calculated yet",
                                         reason="PERIOD_NOT_CALCULATED", metadata={"period_id": period_id})
            stale = store.stale_roles(period_id)
            if stale:
                raise FailedPrecondition(f"values changed since the last full calculation of {', '.join(stale)}: "
                                         "calculate again before finalizing", reason="RESULTS_STALE",
                                         metadata={"period_id": period_id, "roles": ",".join(stale)})
            self._check_missing(store, period_id)
            store.set_period_status(period_id, "FINALIZED", actor)
            count = store.count_latest(period_id)
            store.audit("period.finalize", f"period/{period_id}", {"status": period.status},
                        {"status": "FINALIZED", "results": count})
            return {"finalized": count, "status": "FINALIZED"}
        first = not request_id or self._read(lambda store: store.replay("FinalizePeriod", request_id)) is None
        answer = self._write(work, "FinalizePeriod", request_id)
        if first:
            self.observer.finalized()
        return answer["finalized"], answer["status"]

    def _check_missing(self, store: ScoringStore, period_id: str) -> None:
        """A card whose policy is missing_values: block (default: warn) refuses to
        finalize while a result of it lacks a required value."""
        blocking = [(name, version, count, staff) for name, version, count, staff in store.missing_by_card(period_id)
                    if self.scorecards.version(name, version).missing_values == "block"]
        if blocking:
            count = sum(b[2] for b in blocking)
            cards = ", ".join(f"{name} v{version}" for name, version, _, _ in blocking)
            raise FailedPrecondition(
                f"{count} result(s) lack a required value ({cards}; e.g. staff {blocking[0][3]}): submit the values "
                "and calculate again, or publish the card with missing_values: warn", reason="MISSING_VALUES",
                metadata={"period_id": period_id, "results": count, "scorecards": cards, "staff_id": blocking[0][3]})

    # ----------------------------------------------------------- reading

    def get_score(self, staff_id: str, period_id: str, revision: int = 0) -> ScoreView:
        violations = self._id_violation(staff_id, "staff_id") + self._id_violation(period_id, "period_id")
        if revision < 0:
            violations.append(("revision", "0 (the latest) or a revision number"))
        _raise(violations)

        def work(store: ScoringStore) -> ScoreView:
            period = self._existing(store, period_id)
            row = store.result(period_id, staff_id, revision)
            if row is None:
                what = f"revision {revision} of " if revision else ""
                raise NotFound(f"no {what}score for staff {staff_id!r} in period {period_id!r}",
                               metadata={"staff_id": staff_id, "period_id": period_id})
            return _view(row, period.status, shown_stats(store.peer_stats(period_id, [(row.role, row.peer_group)])))
        return self._read(work)

    def list_scores(self, period_id: str, role: str = "", branch_id: str = "", finalized_only: bool = False,
                    page_size: int = 0, page_token: str = "") -> Page:
        violations = self._id_violation(period_id, "period_id")
        if role and not ROLE_RE.match(role):
            violations.append(("role", f"not a role code: {role!r}"))
        if branch_id:
            violations += self._id_violation(branch_id, "branch_id")
        if page_size < 0 or page_size > MAX_PAGE_SIZE:
            violations.append(("page_size", f"0 (default {DEFAULT_PAGE_SIZE}) to {MAX_PAGE_SIZE}"))
        _raise(violations)
        query = [period_id, role, branch_id, bool(finalized_only)]
        after = _decode_token(page_token, query) if page_token else None
        size = page_size or DEFAULT_PAGE_SIZE

        def work(store: ScoringStore) -> Page:
            period = self._existing(store, period_id)
            if finalized_only and period.status != "FINALIZED":
                return Page([], "")
            rows = store.page(period_id, role, branch_id, after, size + 1)
            more = len(rows) > size
            rows = rows[:size]
            token = _encode_token(query, (rows[-1].role, rows[-1].branch_id, rows[-1].staff_id)) if more else ""
            stats = shown_stats(store.peer_stats(period_id, {(r.role, r.peer_group) for r in rows}))
            return Page([_view(r, period.status, stats) for r in rows], token)
        return self._read(work)

    # ----------------------------------------------------------- revisions

    def revise(self, staff_id: str, period_id: str, reason: str, corrections: Sequence[ValueInput], actor: str,
               request_id: str = "") -> ScoreView:
        """A new revision of a finalized result: the person's values with the corrections,
        on the scorecard version and the peer statistics the period was finalized with."""
        violations = self._id_violation(staff_id, "staff_id") + self._id_violation(period_id, "period_id")
        if not (reason or "").strip():
            violations.append(("reason", "required: why the score changes"))
        if not corrections:
            violations.append(("corrections", "required: at least one corrected value"))
        _raise(violations)

        def work(store: ScoringStore) -> dict:
            period = self._existing(store, period_id, lock="update")
            if period.status != "FINALIZED":
                raise FailedPrecondition(f"period {period_id} is not finalized: submit the corrected values and "
                                         "calculate again", reason="PERIOD_NOT_FINALIZED",
                                         metadata={"period_id": period_id})
            latest = store.result(period_id, staff_id)
            if latest is None:
                raise NotFound(f"no score for staff {staff_id!r} in period {period_id!r}",
                               metadata={"staff_id": staff_id, "period_id": period_id})
            card = self.scorecards.version(latest.scorecard_name, latest.scorecard_version)
            fixed = dict(latest.corrections)
            fixed.update(self._corrections(card, latest, corrections))
            vals = {k: Decimal(v) for k, v in {**store.values_of(period_id, staff_id), **fixed}.items()}
            stored = store.peer_stats(period_id, [(latest.role, latest.peer_group)])
            stats = {(group, i): PeerStats(Decimal(mean), Decimal(sd), n)
                     for (_, group, i), (mean, sd, n) in stored.items()}
            scored = score_person(card, Person(staff_id, latest.branch_id, vals, latest.book_size), stats)
            peers = [Decimal(t) for t in store.peer_totals(period_id, latest.role, latest.peer_group, staff_id)]
            scored = PersonScore(scored.staff_id, scored.branch_id, scored.peer_group, scored.total,
                                 scored.indicators, rank_among(scored.total, peers), len(peers) + 1)
            row = self._row(card, scored, latest.book_size, latest.revision + 1,
                            corrections=json.dumps(fixed, sort_keys=True), reason=reason.strip(), revised_by=actor)
            store.add_revision({**row, "period_id": period_id, "role": latest.role})
            store.audit("score.revise", f"score/{period_id}/{staff_id}", _revision_state(latest._asdict()),
                        _revision_state({**row, "corrections": fixed}), reason=reason.strip())
            return {"revision": latest.revision + 1}
        answer = self._write(work, "ReviseScore", request_id)
        return self.get_score(staff_id, period_id, answer["revision"])

    @staticmethod
    def _corrections(card: Scorecard, latest: ResultRow, items: Sequence[ValueInput]) -> dict[str, str]:
        violations: list = []
        fixed: dict[str, str] = {}
        for i, item in enumerate(items):
            path = f"corrections[{i}]"
            if item.staff_id and item.staff_id != latest.staff_id:
                violations.append((f"{path}.staff_id", f"corrections are for {latest.staff_id} only"))
            if item.role and item.role != latest.role:
                violations.append((f"{path}.role", f"{latest.staff_id} is scored as {latest.role}"))
            try:
                value = domain.parse_decimal(item.value)
            except ValueError as exc:
                violations.append((f"{path}.value", str(exc)))
                continue
            indicator = card.input_index().get(item.indicator_id)
            why = card.check_input(item.indicator_id, value,
                                   rating=bool(indicator and indicator.method == "RATING"))
            if why:
                violations.append((f"{path}.indicator_id", why))
                continue
            fixed[item.indicator_id] = format(value, "f")
        _raise(violations)
        return fixed


# --------------------------------------------------------------------------- audit summaries


def _digest(lines: Sequence[str]) -> str:
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def _submission_summary(batch: _Batch, items: list, known: dict[str, tuple[str, str]], moved: Sequence[str],
                        stale: set[str]) -> dict:
    """One record for a whole submission (up to 100,000 values): counts per role with
    the card they were checked against, the branches, and a digest of every
    (staff, input, value) so the stored values can be checked against the record."""
    by_role: dict[str, dict] = {}
    for role, _ in batch.people.values():
        entry = by_role.setdefault(role, {"people": 0, "values": 0, "scorecard": batch.cards[role].name,
                                          "scorecard_version": batch.cards[role].version})
        entry["people"] += 1
    for (staff_id, _), _ in items:
        by_role[batch.people[staff_id][0]]["values"] += 1
    return {"values": len(batch.items), "people": len(batch.people),
            "new_people": sum(1 for s in batch.people if s not in known), "moved_people": len(moved),
            "by_role": by_role, "branches": sorted({b for _, b in batch.people.values()}),
            "stale_roles": sorted(stale),
            "values_sha256": _digest([f"{s}\t{k}\t{v}\n" for (s, k), (v, _, _) in items])}


def _revision_state(result: dict) -> dict:
    """A result as a revision record shows it: before and after of ReviseScore."""
    return {k: result[k] for k in ("revision", "total", "rank", "peer_group_size", "scorecard_name",
                                   "scorecard_version", "corrections")}


def _utcnow() -> datetime:
    from services.scoring.store import now
    return now()


def _encode_token(query: list, key: tuple[str, str, str]) -> str:
    # Signed and bound to the query (period, role, branch, finalized_only): services/common/paging.py
    return paging.encode_token(list(key), paging.scope("scoring.ListScores", *query))


def _decode_token(token: str, query: list) -> tuple[str, str, str]:
    key = paging.decode_token(token, paging.scope("scoring.ListScores", *query), expect=list)
    if not (len(key) == 3 and all(isinstance(k, str) for k in key)):
        raise InvalidArgument(violations=[("page_token", "not a page token this list returned")])
    return tuple(key)  # type: ignore[return-value]
