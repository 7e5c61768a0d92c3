"""Use cases of benefits: plain values in, plain values out.

Source of truth: the published `benefits.catalog` ruleset holds policy — who
is eligible (rules) and what each benefit is (parameters.catalog: quota,
cool-down, channels, validity, points cost, budget group, unit cost).
UpsertBenefit writes a definition to `benefits_definitions`, which replaces or
extends the ruleset's entry of the same id (operations' local campaigns);
eligibility always comes from the ruleset's rules. Stock, budgets and points
are balances with ledgers in the database.

A claim: eligibility is decided before the transaction (rules, no database);
then one transaction takes the customer+benefit lock (quota and cool-down,
whatever the channel), debits points, reserves a unit of stock and spends the
budget with conditional UPDATEs, and writes the claim. Any refusal rolls all
of it back.
"""
from __future__ import annotations

import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterator, Mapping

from sqlalchemy.exc import IntegrityError

from services.common.db import UnitOfWork, retry_on_conflict
from services.common.errors import FailedPrecondition, InvalidArgument, KequnError, NotFound, ResourceExhausted
from services.common.limits import MAX_POINTS_BALANCE, MAX_STOCK
from services.common.paging import decode_token, encode_token, page_size, scope

from . import audit_records as audit
from . import domain
from .domain import BenefitDefinition, Calendar, Entitlement, Grant, Mismatch, Profile
from .metrics import BenefitsMetrics
from .profiles import ProfileSource
from .rules_kind import CATALOG_RULESET
from .store import BenefitsRepository

OVERRIDES_TTL_SECONDS = 2.0  # other replicas' UpsertBenefit is seen within this


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class Policy:
    """The catalog and rules in force for one request."""

    ruleset: str
    version: int
    active: Any                      # services.rules.runtime.ActiveRuleset
    calendar: Calendar
    catalog: Mapping[str, BenefitDefinition]
    descriptions: Mapping[str, str]  # rule id → description
    cache_seconds: int
    max_staleness_seconds: int
    by_rule: Mapping[str, list[str]]  # rule id → benefits naming it as eligibility_rule
    granted_by: Mapping[str, tuple[str, ...]]  # benefit → the rules granting it, in rule order

    def grants(self, evaluation) -> dict[str, Grant]:
        fired = [(f.rule_id, f.then, self.descriptions.get(f.rule_id, "")) for f in evaluation.fired]
        return domain.grants(fired, self.catalog, self.by_rule)


@dataclass(frozen=True)
class ClaimRecord:
    claim_id: str
    request_id: str
    customer_id: str
    benefit_id: str
    channel: str
    status: str
    claimed_at: datetime
    points_spent: int
    budget_group: str
    budget_period: str
    budget_spent_fen: int
    rule_id: str
    ruleset_version: int
    fulfilled_at: datetime | None = None
    cancelled_at: datetime | None = None
    cancel_reason: str = ""

    @classmethod
    def of(cls, row) -> "ClaimRecord":
        return cls(row.claim_id, row.request_id, row.customer_id, row.benefit_id, row.channel, row.status,
                   row.claimed_at, row.points_spent, row.budget_group, row.budget_period, row.budget_spent_fen, row.rule_id,
                   row.ruleset_version, row.fulfilled_at, row.cancelled_at, row.cancel_reason)


@dataclass(frozen=True)
class EntitlementsView:
    customer_id: str
    tier: str
    ruleset: str
    version: int
    entitlements: list[Entitlement]


@dataclass(frozen=True)
class CatalogEntry:
    definition: BenefitDefinition
    eligibility_text: str      # who may claim it, English (the granting rules' descriptions)
    eligibility_text_zh: str
    in_stock: bool


@dataclass(frozen=True)
class InventoryView:
    benefit_id: str
    on_hand: int
    reserved: int
    updated_at: datetime | None

    @property
    def available(self) -> int:
        return self.on_hand - self.reserved


@dataclass(frozen=True)
class BudgetView:
    group: str
    period: str
    amount_fen: int
    spent_fen: int

    @property
    def remaining_fen(self) -> int:
        return self.amount_fen - self.spent_fen


def _required_code(field: str, value: str) -> None:
    if not domain.CODE_RE.match(value or ""):
        raise InvalidArgument(violations=[(field, "required: an UPPER_SNAKE code")])


def _required(field: str, value: str, max_len: int = 128) -> None:
    if not value or not value.strip():
        raise InvalidArgument(violations=[(field, "required")])
    if len(value) > max_len:
        raise InvalidArgument(violations=[(field, f"at most {max_len} characters")])


class BenefitsService:
    def __init__(self, session_factory, rules, profiles: ProfileSource, *,
                 clock: Callable[[], datetime] = utcnow, metrics: BenefitsMetrics | None = None,
                 new_id: Callable[[], str] = lambda: uuid.uuid4().hex) -> None:
        self._sessions = session_factory
        self._rules = rules
        self.profiles = profiles
        self._clock = clock
        self.metrics = metrics or BenefitsMetrics()
        self._new_id = new_id
        self._lock = threading.Lock()
        self._policy: tuple[Any, int, dict, Policy] | None = None  # (active, version, overrides, policy)
        self._overrides: tuple[float, dict[str, BenefitDefinition]] | None = None
        self._reader = None  # the engine, set up for single-statement reads (see _reading)

    # ------------------------------------------------------------- policy
    def _uow(self) -> UnitOfWork:
        return UnitOfWork(self._sessions)

    @contextmanager
    def _reading(self) -> Iterator[BenefitsRepository]:
        """One single-statement read, on a plain connection (no ORM session):
        PostgreSQL in autocommit (no BEGIN / ROLLBACK round trips), SQLite in a
        deferred transaction (it does not queue behind writers for the
        database write lock, as BEGIN IMMEDIATE would)."""
        if self._reader is None:
            with self._sessions() as session:
                engine = session.get_bind()
            self._reader = engine.execution_options(
                **({"isolation_level": "AUTOCOMMIT"} if engine.dialect.name == "postgresql"
                   else {"sqlite_readonly": True}))
        with self._reader.connect() as conn:
            yield BenefitsRepository(conn)

    def _load_overrides(self, force: bool = False) -> dict[str, BenefitDefinition]:
        with self._lock:
            cached = self._overrides
        if cached and not force and time.monotonic() - cached[0] < OVERRIDES_TTL_SECONDS:
            return cached[1]
        with self._reading() as repo:
            raw = repo.definitions()
        parsed = {}
        for benefit_id, entry in raw.items():
            definition, _ = domain.parse_definition(benefit_id, entry)
            if definition:  # validated on write; a bad row is skipped, never served
                parsed[benefit_id] = definition
        with self._lock:
            self._overrides = (time.monotonic(), parsed)
        return parsed

    def policy(self) -> Policy:
        """The policy in force, built once per (published ruleset version,
        snapshot of the UpsertBenefit overrides) and shared by requests."""
        active = self._rules.active(CATALOG_RULESET)
        overrides = self._load_overrides()
        with self._lock:
            cached = self._policy
        if cached is not None and cached[0] is active and cached[1] == active.version and cached[2] is overrides:
            return cached[3]
        params = active.document.parameters
        catalog, _ = domain.parse_catalog(params.get("catalog"))  # validated on publish
        merged = domain.merge_catalog(catalog, overrides)
        policy = Policy(
            ruleset=active.name, version=active.version, active=active,
            calendar=Calendar.named(str(params.get("timezone", "Asia/Shanghai"))), catalog=merged,
            descriptions={r.id: r.description for r in active.document.rules},
            cache_seconds=int(params.get("profile_cache_seconds", 0)),
            max_staleness_seconds=int(params.get("profile_max_staleness_seconds", 0)),
            by_rule=domain.benefits_by_rule(merged),
            granted_by=_granted_by(active.document.rules, merged))
        with self._lock:
            self._policy = (active, active.version, overrides, policy)
        return policy

    def _profile(self, policy: Policy, customer_id: str) -> Profile:
        return self.profiles.get(customer_id, policy.cache_seconds, policy.max_staleness_seconds)

    # ------------------------------------------------------- entitlements
    def list_entitlements(self, customer_id: str, include_locked: bool = False) -> EntitlementsView:
        started = time.perf_counter()
        _required("customer_id", customer_id, 64)
        policy = self.policy()
        profile = self._profile(policy, customer_id)
        inputs = [profile.facts()]
        if include_locked and profile.next_tier:
            inputs.append(profile.facts(profile.next_tier))
        evaluations = policy.active.evaluate_many(inputs)
        granted = policy.grants(evaluations[0])
        at_next = policy.grants(evaluations[1]) if len(evaluations) > 1 else {}
        now = self._clock()
        physical = domain.physical_ids(policy.catalog, [*granted, *at_next])
        with self._reading() as repo:
            summary = repo.usage_summary(customer_id)
            stock = repo.available_stock(physical) if physical else {}  # one query for every gift shown
        usage = self._usage(policy, summary, now)
        shown = domain.build_entitlements(profile, granted, at_next, policy.catalog, usage, now,
                                          policy.calendar, include_locked, stock)
        self.metrics.entitlements_seconds.observe(time.perf_counter() - started)
        return EntitlementsView(customer_id, profile.tier, policy.ruleset, policy.version, shown)

    @staticmethod
    def _usage(policy: Policy, summary, now: datetime) -> dict[str, domain.Usage]:
        """Usage per benefit from (benefit_id, period_key, claims, last_at) rows."""
        per_benefit: dict[str, list] = {}
        for row in summary:
            per_benefit.setdefault(row.benefit_id, []).append((row.period_key, row.claims, row.last_at))
        usage = {}
        for benefit_id, rows in per_benefit.items():
            definition = policy.catalog.get(benefit_id)
            if definition is not None:
                key = policy.calendar.period_key(definition.quota_period, now)
                usage[benefit_id] = domain.usage_from_counts(rows, key)
        return usage

    # ------------------------------------------------------------- catalog
    def list_benefits(self, include_inactive: bool = False, size: int = 0,
                      token: str = "") -> tuple[list[CatalogEntry], str]:
        """The catalog in benefit_id order; without include_inactive, only what
        can be claimed today (active, inside its validity window)."""
        limit = page_size(size)
        token_scope = scope("benefits.ListBenefits", include_inactive)
        after = decode_token(token, token_scope, str)
        policy = self.policy()
        today = policy.calendar.local_date(self._clock())
        ids = sorted(b for b, d in policy.catalog.items()
                     if (after is None or b > after)
                     and (include_inactive or (d.active and domain.in_validity(d, today))))
        page = ids[:limit]
        entries = self._catalog_entries(policy, page)
        return entries, (encode_token(page[-1], token_scope) if len(ids) > limit else "")

    def get_benefit(self, benefit_id: str) -> CatalogEntry:
        _required_code("benefit_id", benefit_id)
        policy = self.policy()
        if benefit_id not in policy.catalog:
            raise NotFound(f"benefit {benefit_id} does not exist", metadata={"benefit_id": benefit_id})
        return self._catalog_entries(policy, [benefit_id])[0]

    def _catalog_entries(self, policy: Policy, ids: list[str]) -> list[CatalogEntry]:
        physical = domain.physical_ids(policy.catalog, ids)
        stock = {}
        if physical:
            with self._reading() as repo:
                stock = repo.available_stock(physical)
        entries = []
        for benefit_id in ids:
            definition = policy.catalog[benefit_id]
            texts = [domain.reason_texts(policy.descriptions.get(r, ""), r) for r in policy.granted_by.get(benefit_id, ())]
            entries.append(CatalogEntry(definition, "; ".join(en for en, _ in texts), "；".join(zh for _, zh in texts),
                                        domain.in_stock(definition, stock)))
        return entries

    # -------------------------------------------------------------- claims
    def claim(self, customer_id: str, benefit_id: str, channel: str, request_id: str,
              actor: str = "") -> ClaimRecord:
        try:
            record, replayed = self._claim(customer_id, benefit_id, channel, request_id, actor)
        except Exception as exc:
            outcome = _outcome(exc)
            # a label per unknown id sent by a caller would grow without bound
            label = "_unknown" if outcome in ("invalid_argument", "not_found") else benefit_id
            self.metrics.claims.labels(label, outcome).inc()
            raise
        self.metrics.claims.labels(benefit_id, "replayed" if replayed else "claimed").inc()
        return record

    def _claim(self, customer_id, benefit_id, channel, request_id, actor) -> tuple[ClaimRecord, bool]:
        _required("customer_id", customer_id, 64)
        _required_code("benefit_id", benefit_id)
        _required_code("channel", channel)
        _required("request_id", request_id)
        try:
            policy, definition, grant = self._offer(customer_id, benefit_id, channel)
        except KequnError:
            # A retry of a claim made while it was allowed answers that claim.
            existing = self._claim_by_request(request_id)
            if existing is None:
                raise
            return self._replay(existing, customer_id, benefit_id), True

        def attempt() -> tuple[ClaimRecord, bool]:
            with self._uow() as uow:
                # Core on the session's connection: the claim path skips the ORM layer
                repo = BenefitsRepository(uow.session.connection())
                repo.lock_customer_benefit(customer_id, benefit_id)
                again, live = repo.claim_state(customer_id, benefit_id, request_id)
                if again is not None:  # a retry (or a concurrent one) got here first
                    return self._replay(again, customer_id, benefit_id), True
                record, stock_left, budget_left = self._claim_locked(
                    repo, policy, definition, grant, live, customer_id, channel, request_id, actor, self._clock())
                uow.commit()
            self._set_gauges(definition.benefit_id, stock_left, record.budget_group, record.budget_period,
                             budget_left)
            return record, False

        try:
            return retry_on_conflict(attempt)
        except IntegrityError:
            # Two first tries of one request_id for different benefits: one won.
            existing = self._claim_by_request(request_id)
            if existing is None:
                raise
            return self._replay(existing, customer_id, benefit_id), True

    def _offer(self, customer_id: str, benefit_id: str, channel: str) -> tuple[Policy, BenefitDefinition, Grant]:
        """Everything decided without the database: the benefit, its window and
        channel, and the rule granting it to this customer's profile."""
        policy = self.policy()
        definition = policy.catalog.get(benefit_id)
        if definition is None:
            raise NotFound(f"benefit {benefit_id} does not exist", metadata={"benefit_id": benefit_id})
        profile = self._profile(policy, customer_id)
        domain.check_offer(definition, channel, policy.calendar.local_date(self._clock()))
        grant = policy.grants(policy.active.evaluate(profile.facts())).get(benefit_id)
        if grant is None:
            raise FailedPrecondition(f"customer {customer_id} ({profile.tier}) is not eligible for {benefit_id}",
                                     reason="NOT_ELIGIBLE", metadata={"benefit_id": benefit_id, "tier": profile.tier})
        return policy, definition, grant

    def _claim_by_request(self, request_id: str):
        with self._reading() as repo:
            return repo.claim_by_request(request_id)

    def _replay(self, row, customer_id: str, benefit_id: str) -> ClaimRecord:
        if row.customer_id != customer_id or row.benefit_id != benefit_id:
            raise InvalidArgument(violations=[("request_id", "already used for another claim")])
        return ClaimRecord.of(row)

    def _claim_locked(self, repo: BenefitsRepository, policy: Policy, definition: BenefitDefinition, grant: Grant,
                      live: list, customer_id: str, channel: str, request_id: str, actor: str,
                      now: datetime) -> tuple[ClaimRecord, int | None, int | None]:
        """(the claim, stock left, budget left) — the lefts None when not touched.

        Rows only this claim writes (the claim, its ledger rows) go first; the
        balances other claims wait for (points, stock, budget) last, so their
        row locks are held for as few statements as possible."""
        benefit_id, cost = definition.benefit_id, definition.points_cost
        period_key = policy.calendar.period_key(definition.quota_period, now)
        domain.check_usage(definition, domain.usage_from_claims([(r.period_key, r.claimed_at) for r in live],
                                                                period_key), now)
        budget_period, charged = "", 0
        if definition.budget_group and definition.unit_cost_fen:
            budget_period = repo.first_budget_period(definition.budget_group, policy.calendar.budget_periods(now))
            if budget_period is None:
                raise ResourceExhausted(f"no budget set for group {definition.budget_group} this period",
                                        reason="BUDGET_EXHAUSTED",
                                        metadata={"benefit_id": benefit_id, "budget_group": definition.budget_group,
                                                  "budget_period": ""})
            charged = definition.unit_cost_fen
        claim = dict(
            claim_id=self._new_id(), request_id=request_id, customer_id=customer_id, benefit_id=benefit_id,
            channel=channel, status=domain.CLAIMED, period_key=period_key, points_spent=cost,
            physical=definition.physical, budget_group=definition.budget_group if charged else "",
            budget_period=budget_period, budget_spent_fen=charged, rule_id=grant.rule_id,
            ruleset_version=policy.version)
        claim_id = claim["claim_id"]
        repo.insert_claim(**claim, claimed_by=actor, claimed_at=now, cancel_reason="")
        if cost:
            repo.points_movement(customer_id, "CLAIM", -cost, now, claim_id, actor=actor)
        if definition.physical:
            repo.inventory_movement(benefit_id, "OUT_CLAIM", 0, 1, now, claim_id, actor=actor)
        if charged:
            repo.budget_movement(definition.budget_group, budget_period, "SPEND", 0, charged, now, claim_id, actor)
        entries = [audit.claim_entry("claim.create", claim)]
        stock_left = budget_left = None
        if cost:
            balance = repo.debit_points(customer_id, cost)
            if balance is None:
                held = repo.points_balance(customer_id)
                raise FailedPrecondition(f"not enough points: {benefit_id} costs {cost}, balance {held}",
                                         reason="INSUFFICIENT_POINTS",
                                         metadata={"benefit_id": benefit_id, "points_cost": cost, "balance": held})
            entries.append(audit.points_entry("points.claim", customer_id, balance, -cost))
        if definition.physical:
            stock = repo.reserve_unit(benefit_id, now)
            if stock is None:
                raise ResourceExhausted(f"{benefit_id} is out of stock", reason="OUT_OF_STOCK",
                                        metadata={"benefit_id": benefit_id})
            entries.append(audit.stock_entry("inventory.reserve", benefit_id, stock, 0, 1))
            stock_left = stock.on_hand - stock.reserved
        if charged:
            budget = repo.spend_budget(definition.budget_group, budget_period, charged)
            if budget is None:
                raise ResourceExhausted(f"budget of {definition.budget_group} for {budget_period} is spent",
                                        reason="BUDGET_EXHAUSTED",
                                        metadata={"benefit_id": benefit_id, "budget_group": definition.budget_group,
                                                  "budget_period": budget_period})
            entries.append(audit.budget_entry("budget.spend", definition.budget_group, budget_period, budget,
                                              0, charged))
            budget_left = budget.amount_fen - budget.spent_fen
        repo.audit(entries, actor)
        record = ClaimRecord(
            claim_id, request_id, customer_id, benefit_id, channel, domain.CLAIMED, now.astimezone(timezone.utc), cost,
            claim["budget_group"],
            budget_period, charged, grant.rule_id, policy.version)
        return record, stock_left, budget_left

    def cancel(self, claim_id: str, reason: str, request_id: str = "", actor: str = "") -> ClaimRecord:
        """Gives back points, stock, budget (and so quota) exactly once: the
        CLAIMED → CANCELLED update is the guard; a repeat returns the claim."""
        _required("claim_id", claim_id, 40)

        def attempt() -> ClaimRecord:
            with self._uow() as uow:
                repo = BenefitsRepository(uow.session)
                row = repo.claim(claim_id, for_update=True)
                if row is None:
                    raise NotFound(f"claim {claim_id} does not exist", metadata={"claim_id": claim_id})
                if row.status == domain.CANCELLED:
                    return ClaimRecord.of(row)
                now = self._clock()
                if not repo.transition_claim(claim_id, domain.CANCELLED, cancelled_at=now, cancel_reason=reason):
                    raise FailedPrecondition(f"claim {claim_id} is {row.status}; only a CLAIMED claim can be "
                                             "cancelled", reason="WRONG_STATE",
                                             metadata={"claim_id": claim_id, "status": row.status})
                entries = [audit.claim_entry("claim.cancel", {**row._mapping, "status": domain.CANCELLED},
                                             {"status": row.status}, reason)]
                stock_left = budget_left = None
                if row.points_spent:
                    balance = repo.credit_points(row.customer_id, row.points_spent)
                    repo.points_movement(row.customer_id, "REFUND", row.points_spent, now, claim_id, reason, actor)
                    entries.append(audit.points_entry("points.refund", row.customer_id, balance, row.points_spent,
                                                      reason))
                if row.physical:
                    stock = repo.release_unit(row.benefit_id, now, hand_out=False)
                    repo.inventory_movement(row.benefit_id, "BACK_CANCEL", 0, -1, now, claim_id, reason, actor)
                    entries.append(audit.stock_entry("inventory.release", row.benefit_id, stock, 0, -1, reason))
                    stock_left = stock.on_hand - stock.reserved
                if row.budget_spent_fen:
                    budget = repo.refund_budget(row.budget_group, row.budget_period, row.budget_spent_fen)
                    repo.budget_movement(row.budget_group, row.budget_period, "REFUND", 0, -row.budget_spent_fen,
                                         now, claim_id, actor)
                    entries.append(audit.budget_entry("budget.refund", row.budget_group, row.budget_period, budget,
                                                      0, -row.budget_spent_fen, reason=reason))
                    budget_left = budget.amount_fen - budget.spent_fen
                record = ClaimRecord.of(repo.claim(claim_id))
                repo.audit(entries, actor)
                uow.commit()
            self.metrics.claims.labels(record.benefit_id, "cancelled").inc()
            self._set_gauges(record.benefit_id, stock_left, record.budget_group, record.budget_period, budget_left)
            return record

        return retry_on_conflict(attempt)

    def fulfill(self, claim_id: str, actor: str = "") -> ClaimRecord:
        """The gift is handed out / the coupon issued: the unit leaves the store."""
        _required("claim_id", claim_id, 40)

        def attempt() -> ClaimRecord:
            with self._uow() as uow:
                repo = BenefitsRepository(uow.session)
                row = repo.claim(claim_id, for_update=True)
                if row is None:
                    raise NotFound(f"claim {claim_id} does not exist", metadata={"claim_id": claim_id})
                if row.status == domain.FULFILLED:
                    return ClaimRecord.of(row)
                now = self._clock()
                if not repo.transition_claim(claim_id, domain.FULFILLED, fulfilled_at=now):
                    raise FailedPrecondition(f"claim {claim_id} is {row.status}; only a CLAIMED claim can be "
                                             "fulfilled", reason="WRONG_STATE",
                                             metadata={"claim_id": claim_id, "status": row.status})
                entries = [audit.claim_entry("claim.fulfill", {**row._mapping, "status": domain.FULFILLED},
                                             {"status": row.status})]
                stock_left = None
                if row.physical:
                    stock = repo.release_unit(row.benefit_id, now, hand_out=True)
                    repo.inventory_movement(row.benefit_id, "OUT_FULFILL", -1, -1, now, claim_id, actor=actor)
                    entries.append(audit.stock_entry("inventory.hand_out", row.benefit_id, stock, -1, -1))
                    stock_left = stock.on_hand - stock.reserved
                record = ClaimRecord.of(repo.claim(claim_id))
                repo.audit(entries, actor)
                uow.commit()
            self._set_gauges(record.benefit_id, stock_left, "", "", None)
            return record

        return retry_on_conflict(attempt)

    def list_claims(self, customer_id: str, size: int = 0, token: str = "") -> tuple[list[ClaimRecord], str]:
        _required("customer_id", customer_id, 64)
        limit = page_size(size)
        token_scope = scope("benefits.ListClaims", customer_id)
        after = decode_token(token, token_scope, expect=list)
        with self._reading() as repo:
            rows = repo.claims_page(customer_id, after, limit + 1)
        records = [ClaimRecord.of(r) for r in rows[:limit]]
        nxt = encode_token([records[-1].claimed_at.isoformat(), records[-1].claim_id], token_scope) if len(rows) > limit else ""
        return records, nxt

    # ----------------------------------------------------- administration
    def _idempotent(self, method: str, request_id: str, actor: str,
                    work: Callable[[BenefitsRepository, datetime, list], dict]) -> dict:
        """Runs `work` once per (method, request_id); a repeat answers the first
        result. `work` adds the audit records of what it changed to its list."""
        def attempt() -> dict:
            with self._uow() as uow:
                repo = BenefitsRepository(uow.session)
                if request_id:
                    stored = repo.stored_result(method, request_id)
                    if stored is not None:
                        return stored
                now = self._clock()
                entries: list[dict] = []
                result = work(repo, now, entries)
                if request_id:
                    repo.store_result(method, request_id, result, now)
                repo.audit(entries, actor)
                uow.commit()
                return result

        try:
            return retry_on_conflict(attempt)
        except IntegrityError:
            with self._uow() as uow:  # the same request_id raced: answer the winner
                stored = BenefitsRepository(uow.session).stored_result(method, request_id)
            if stored is None:
                raise
            return stored

    def upsert_benefit(self, benefit_id: str, entry: Mapping[str, Any], request_id: str = "",
                       actor: str = "") -> tuple[BenefitDefinition, bool]:
        definition, violations = domain.parse_definition(benefit_id, entry, "benefit")
        if violations:
            raise InvalidArgument(violations=violations)
        policy = self.policy()
        if definition.eligibility_rule and definition.eligibility_rule not in policy.descriptions:
            raise InvalidArgument(violations=[("benefit.eligibility_rule",
                                               f"no rule {definition.eligibility_rule} in {policy.ruleset} "
                                               f"v{policy.version}")])

        def work(repo: BenefitsRepository, now: datetime, entries: list) -> dict:
            before = repo.definition(benefit_id)
            if before is None and benefit_id in policy.catalog:  # the ruleset's entry it replaces
                before = policy.catalog[benefit_id].to_mapping()
            repo.upsert_definition(benefit_id, definition.to_mapping(), actor, now)
            if definition.physical:
                repo.ensure_inventory(benefit_id, now)
            entries.append(audit.entry("benefit.create" if before is None else "benefit.update",
                                       f"benefit/{benefit_id}", before, definition.to_mapping()))
            return {"created": before is None}

        result = self._idempotent("UpsertBenefit", request_id, actor, work)
        self._load_overrides(force=True)
        return definition, bool(result["created"])

    def _physical(self, benefit_id: str) -> BenefitDefinition:
        _required_code("benefit_id", benefit_id)
        definition = self.policy().catalog.get(benefit_id)
        if definition is None:
            raise NotFound(f"benefit {benefit_id} does not exist", metadata={"benefit_id": benefit_id})
        if not definition.physical:
            raise FailedPrecondition(f"benefit {benefit_id} has no inventory (not a physical benefit)",
                                     reason="NOT_PHYSICAL", metadata={"benefit_id": benefit_id})
        return definition

    def adjust_inventory(self, benefit_id: str, delta: int, reason: str, request_id: str = "",
                         actor: str = "") -> InventoryView:
        self._physical(benefit_id)
        if delta == 0:
            raise InvalidArgument(violations=[("delta", "must not be 0")])
        _required("reason", reason, 500)

        def work(repo: BenefitsRepository, now: datetime, entries: list) -> dict:
            repo.ensure_inventory(benefit_id, now)
            stock = repo.adjust_on_hand(benefit_id, delta, now)
            if stock is None:
                row = repo.inventory(benefit_id)
                if delta > 0:
                    raise FailedPrecondition(f"stock of {benefit_id} would pass its cap of {MAX_STOCK} units",
                                             reason="LIMIT_EXCEEDED", metadata={"benefit_id": benefit_id,
                                                                                "limit": MAX_STOCK})
                raise FailedPrecondition(f"cannot take {-delta} out of {benefit_id}: {row.on_hand} on hand, "
                                         f"{row.reserved} held by claims", reason="STOCK_HELD",
                                         metadata={"benefit_id": benefit_id, "on_hand": row.on_hand,
                                                   "reserved": row.reserved})
            movement = "IN" if delta > 0 else "ADJUST"
            repo.inventory_movement(benefit_id, movement, delta, 0, now, reason=reason, actor=actor)
            entries.append(audit.stock_entry(f"inventory.{movement.lower()}", benefit_id, stock, delta, 0, reason))
            return {"benefit_id": benefit_id}

        self._idempotent("AdjustInventory", request_id, actor, work)
        view = self.get_inventory(benefit_id)
        self.metrics.stock_left.labels(benefit_id).set(view.available)
        return view

    def get_inventory(self, benefit_id: str) -> InventoryView:
        self._physical(benefit_id)
        with self._reading() as repo:
            row = repo.inventory(benefit_id)
        if row is None:
            return InventoryView(benefit_id, 0, 0, None)
        return InventoryView(benefit_id, row.on_hand, row.reserved, row.updated_at)

    def set_budget(self, group: str, period: str, amount_fen: int, request_id: str = "",
                   actor: str = "") -> BudgetView:
        _required_code("group", group)
        calendar = self.policy().calendar
        try:
            end = calendar.budget_period_end(period)
        except ValueError as exc:
            raise InvalidArgument(violations=[("period", str(exc))]) from None
        if end <= self._clock():
            raise InvalidArgument(violations=[("period", f"{period} is in the past")])
        if amount_fen < 0:
            raise InvalidArgument(violations=[("amount_fen", "must not be negative")])

        def work(repo: BenefitsRepository, now: datetime, entries: list) -> dict:
            current = repo.budget(group, period)
            if current is not None and amount_fen < current.spent_fen:
                raise FailedPrecondition(f"{current.spent_fen} fen of {group}/{period} is already spent; "
                                         f"the budget cannot be set to {amount_fen}", reason="BUDGET_BELOW_SPENT",
                                         metadata={"budget_group": group, "budget_period": period,
                                                   "spent_fen": current.spent_fen})
            previous, spent, existed = repo.set_budget_amount(group, period, amount_fen)
            repo.budget_movement(group, period, "SET", amount_fen - previous, 0, now, actor=actor)
            entries.append(audit.budget_entry("budget.set", group, period, (amount_fen, spent), amount_fen - previous,
                                              0, existed))
            return {"group": group}

        self._idempotent("SetBudget", request_id, actor, work)
        view = self.get_budget(group, period)
        self.metrics.budget_left.labels(group, period).set(view.remaining_fen)
        return view

    def get_budget(self, group: str, period: str) -> BudgetView:
        _required_code("group", group)
        _required("period", period, 16)
        with self._reading() as repo:
            row = repo.budget(group, period)
        if row is None:
            raise NotFound(f"no budget for {group} in {period}", metadata={"budget_group": group,
                                                                            "budget_period": period})
        return BudgetView(row.group_code, row.period, row.amount_fen, row.spent_fen)

    # ------------------------------------------------------------- points
    def credit_points(self, customer_id: str, amount: int, reason: str, request_id: str, actor: str = "") -> int:
        return self._points("CreditPoints", customer_id, amount, reason, request_id, actor)

    def debit_points(self, customer_id: str, amount: int, reason: str, request_id: str, actor: str = "") -> int:
        return self._points("DebitPoints", customer_id, amount, reason, request_id, actor)

    def _points(self, method: str, customer_id: str, amount: int, reason: str, request_id: str, actor: str) -> int:
        _required("customer_id", customer_id, 64)
        _required("request_id", request_id)
        if amount <= 0:
            raise InvalidArgument(violations=[("points", "must be greater than 0")])

        def work(repo: BenefitsRepository, now: datetime, entries: list) -> dict:
            if method == "CreditPoints":
                delta, balance = amount, repo.credit_points(customer_id, amount)
                if balance is None:
                    raise FailedPrecondition(f"the points balance would pass its cap of {MAX_POINTS_BALANCE}",
                                             reason="LIMIT_EXCEEDED", metadata={"customer_id": customer_id,
                                                                                "limit": MAX_POINTS_BALANCE})
            else:
                delta, balance = -amount, repo.debit_points(customer_id, amount)
                if balance is None:
                    held = repo.points_balance(customer_id)
                    raise FailedPrecondition(f"not enough points: balance {held}, debit {amount}",
                                             reason="INSUFFICIENT_POINTS",
                                             metadata={"customer_id": customer_id, "balance": held,
                                                       "points": amount})
            movement = "CREDIT" if delta > 0 else "DEBIT"
            repo.points_movement(customer_id, movement, delta, now, reason=reason, actor=actor)
            entries.append(audit.points_entry(f"points.{movement.lower()}", customer_id, balance, delta, reason))
            return {"customer_id": customer_id, "balance": balance}

        result = self._idempotent(method, request_id, actor, work)
        if result.get("customer_id") != customer_id:
            raise InvalidArgument(violations=[("request_id", "already used for another customer")])
        return int(result["balance"])

    def points_balance(self, customer_id: str) -> int:
        _required("customer_id", customer_id, 64)
        with self._reading() as repo:
            return repo.points_balance(customer_id)

    # ----------------------------------------------------- reconciliation
    def reconcile(self) -> list[Mismatch]:
        """Every balance against its ledger, and against the claims holding it."""
        with self._uow() as uow:
            repo = BenefitsRepository(uow.session)
            found: list[Mismatch] = []
            for r in repo.inventory_check():
                subject = f"benefit/{r.benefit_id}"
                found += domain.compare("INVENTORY", subject, "on hand", r.ledger_on_hand, r.on_hand)
                found += domain.compare("INVENTORY", subject, "reserved", r.ledger_reserved, r.reserved)
                found += domain.compare("INVENTORY", subject, "held by CLAIMED claims", r.claims_held, r.reserved)
                self.metrics.stock_left.labels(r.benefit_id).set(r.on_hand - r.reserved)
            for r in repo.budget_check():
                subject = f"budget/{r.group_code}/{r.period}"
                found += domain.compare("BUDGET", subject, "amount", r.ledger_amount, r.amount_fen)
                found += domain.compare("BUDGET", subject, "spent", r.ledger_spent, r.spent_fen)
                found += domain.compare("BUDGET", subject, "charged to live claims", r.claims_charged, r.spent_fen)
                self.metrics.budget_left.labels(r.group_code, r.period).set(r.amount_fen - r.spent_fen)
            for r in repo.points_check():
                found += domain.compare("POINTS", f"customer/{r.customer_id}", "balance", r.ledger_total, r.balance)
            ledger, spent = repo.claim_points_check()
            found += domain.compare("POINTS", "claims", "points spent by live claims", ledger, spent)
        self.metrics.reconciliation_ok.set(0 if found else 1)
        return found

    # ------------------------------------------------------------- gauges
    def _set_gauges(self, benefit_id: str, stock_left: int | None, group: str, period: str,
                    budget_left: int | None) -> None:
        """From the balances the transaction just wrote (RETURNING): no extra read."""
        if stock_left is not None:
            self.metrics.stock_left.labels(benefit_id).set(stock_left)
        if budget_left is not None:
            self.metrics.budget_left.labels(group, period).set(budget_left)


def _granted_by(rules, catalog: Mapping[str, BenefitDefinition]) -> dict[str, tuple[str, ...]]:
    """Benefit → ids of the rules granting it (listing it, or named as its eligibility_rule)."""
    found: dict[str, list[str]] = {}
    for rule in rules:
        listed = (rule.then or {}).get("benefits") or []
        for benefit_id in listed if isinstance(listed, list) else [listed]:
            found.setdefault(str(benefit_id), []).append(rule.id)
    for definition in catalog.values():
        if definition.eligibility_rule and definition.eligibility_rule not in found.get(definition.benefit_id, []):
            found.setdefault(definition.benefit_id, []).append(definition.eligibility_rule)
    return {b: tuple(r) for b, r in found.items()}


def _outcome(exc: BaseException) -> str:
    """A bounded label for claims_total: the error kind, e.g. failed_precondition."""
    name = type(exc).__name__
    known = {"FailedPrecondition": "failed_precondition", "ResourceExhausted": "resource_exhausted",
             "NotFound": "not_found", "InvalidArgument": "invalid_argument", "Unavailable": "unavailable",
             "Aborted": "aborted"}
    return known.get(name, "error")
