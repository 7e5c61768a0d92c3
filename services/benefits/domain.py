"""Benefits (客群权益): the pure rules of the business.

Stdlib only. What a benefit is (a catalog entry), which benefits a profile is
granted (from the rules that fired), the calendar that quotas and budgets
count in, and the checks a claim must pass before stock, budget and points are
touched. Numbers (quotas, cool-downs, costs) are data from the ruleset or the
benefits table, never constants here.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from typing import Any, Iterable, Mapping, Sequence
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from services.common.errors import FailedPrecondition

from . import reason_text

BENEFIT_KINDS = ("EVENT", "SERVICE", "GIFT", "COUPON", "FEE_WAIVER", "POINTS_EXCHANGE")
QUOTA_PERIODS = ("DAY", "WEEK", "MONTH", "QUARTER", "YEAR")
CODE_RE = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")
UNLIMITED = -1  # `remaining` when a benefit has no quota
MAX_INT32 = 2**31 - 1
MAX_FEN = 2**62

# Claim states: CLAIMED -> FULFILLED | CANCELLED, nothing else.
CLAIMED, FULFILLED, CANCELLED = "CLAIMED", "FULFILLED", "CANCELLED"

Violations = list[tuple[str, str]]


# --------------------------------------------------------------------- catalog

@dataclass(frozen=True)
class BenefitDefinition:
    benefit_id: str
    name: str
    kind: str
    quota_per_period: int = 0            # 0 = unlimited
    quota_period: str = "MONTH"
    cooldown_seconds: int = 0
    channels: tuple[str, ...] = ()       # empty = every channel
    points_cost: int = 0
    physical: bool = False               # has inventory
    budget_group: str = ""               # empty = no budget charged
    unit_cost_fen: int = 0
    valid_from: date | None = None
    valid_until: date | None = None      # inclusive, local calendar date
    active: bool = True
    description: str = ""
    eligibility_rule: str = ""           # extra rule id granting it, beyond rules naming it

    def allows_channel(self, channel: str) -> bool:
        return not self.channels or channel in self.channels

    def to_mapping(self) -> dict[str, Any]:
        """The storable form (the same keys as a catalog entry in the ruleset)."""
        return {
            "name": self.name, "kind": self.kind, "quota_per_period": self.quota_per_period,
            "quota_period": self.quota_period, "cooldown_seconds": self.cooldown_seconds,
            "channels": list(self.channels), "points_cost": self.points_cost, "physical": self.physical,
            "budget_group": self.budget_group, "unit_cost_fen": self.unit_cost_fen,
            "valid_from": self.valid_from.isoformat() if self.valid_from else "",
            "valid_until": self.valid_until.isoformat() if self.valid_until else "",
            "active": self.active, "description": self.description,
            "eligibility_rule": self.eligibility_rule,
        }


def parse_date(raw: Any, path: str, violations: Violations) -> date | None:
    if raw in (None, ""):
        return None
    if isinstance(raw, date):
        return raw
    try:
        return date.fromisoformat(str(raw))
    except ValueError:
        violations.append((path, f"{raw!r} is not a YYYY-MM-DD date"))
        return None


def _int(raw: Mapping, key: str, path: str, violations: Violations, hi: int = MAX_FEN) -> int:
    value = raw.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int):
        violations.append((f"{path}.{key}", "must be a whole number"))
        return 0
    if value < 0 or value > hi:
        violations.append((f"{path}.{key}", f"must be between 0 and {hi}"))
    return value


def parse_definition(benefit_id: str, raw: Any, path: str = "benefit") -> tuple[BenefitDefinition | None, Violations]:
    """A catalog entry (ruleset parameters or an UpsertBenefit) → a definition,
    or every problem with its path."""
    violations: Violations = []
    if not isinstance(raw, Mapping):
        return None, [(path, "must be a mapping")]
    if not CODE_RE.match(str(benefit_id)):
        violations.append((f"{path}.benefit_id", "must be an UPPER_SNAKE code"))
    name = str(raw.get("name") or "").strip()
    if not name:
        violations.append((f"{path}.name", "required"))
    kind = str(raw.get("kind") or "")
    if kind not in BENEFIT_KINDS:
        violations.append((f"{path}.kind", f"one of {', '.join(BENEFIT_KINDS)}"))
    period = str(raw.get("quota_period") or "MONTH")
    if period not in QUOTA_PERIODS:
        violations.append((f"{path}.quota_period", f"one of {', '.join(QUOTA_PERIODS)}"))
    channels = raw.get("channels") or []
    if not isinstance(channels, (list, tuple)) or not all(isinstance(c, str) and CODE_RE.match(c) for c in channels):
        violations.append((f"{path}.channels", "a list of UPPER_SNAKE channel codes"))
        channels = []
    budget_group = str(raw.get("budget_group") or "")
    if budget_group and not CODE_RE.match(budget_group):
        violations.append((f"{path}.budget_group", "must be an UPPER_SNAKE group code"))
    unit_cost = _int(raw, "unit_cost_fen", path, violations)
    if unit_cost and not budget_group:
        violations.append((f"{path}.unit_cost_fen", "a unit cost needs a budget_group to charge"))
    valid_from = parse_date(raw.get("valid_from"), f"{path}.valid_from", violations)
    valid_until = parse_date(raw.get("valid_until"), f"{path}.valid_until", violations)
    if valid_from and valid_until and valid_until < valid_from:
        violations.append((f"{path}.valid_until", "is before valid_from"))
    for key in ("physical", "active"):
        if key in raw and not isinstance(raw[key], bool):
            violations.append((f"{path}.{key}", "must be true or false"))
    definition = BenefitDefinition(
        benefit_id=str(benefit_id), name=name, kind=kind,
        quota_per_period=_int(raw, "quota_per_period", path, violations, MAX_INT32),
        quota_period=period,
        cooldown_seconds=_int(raw, "cooldown_seconds", path, violations, 10 * 366 * 86400),
        channels=tuple(channels),
        points_cost=_int(raw, "points_cost", path, violations),
        physical=bool(raw.get("physical", False)),
        budget_group=budget_group, unit_cost_fen=unit_cost,
        valid_from=valid_from, valid_until=valid_until,
        active=bool(raw.get("active", True)),
        description=str(raw.get("description") or ""),
        eligibility_rule=str(raw.get("eligibility_rule") or ""),
    )
    return (None if violations else definition), violations


def parse_catalog(raw: Any, path: str = "parameters.catalog") -> tuple[dict[str, BenefitDefinition], Violations]:
    if not isinstance(raw, Mapping) or not raw:
        return {}, [(path, "a non-empty mapping of benefit id → definition")]
    catalog: dict[str, BenefitDefinition] = {}
    violations: Violations = []
    for benefit_id, entry in raw.items():
        definition, problems = parse_definition(str(benefit_id), entry, f"{path}.{benefit_id}")
        violations += problems
        if definition:
            catalog[definition.benefit_id] = definition
    return catalog, violations


def merge_catalog(ruleset_catalog: Mapping[str, BenefitDefinition],
                  overrides: Mapping[str, BenefitDefinition]) -> dict[str, BenefitDefinition]:
    """The effective catalog: the published ruleset's entries, replaced or
    extended by the definitions written with UpsertBenefit."""
    return {**ruleset_catalog, **overrides}


# ------------------------------------------------------------------- profiles

@dataclass(frozen=True)
class Profile:
    """What tiering says about a customer (never read from tiering's tables)."""

    customer_id: str
    tier: str
    segments: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()
    next_tier: str = ""
    next_tier_gap_fen: int = 0
    fetched_at: datetime | None = None
    # What the customer's groups are claimed by (TierDecision.group_keys),
    # sorted pairs, e.g. (("payroll_employer_id", "E1"),): reason texts name them.
    group_keys: tuple[tuple[str, str], ...] = ()

    def facts(self, tier: str | None = None) -> dict[str, Any]:
        """The input of the eligibility rules (optionally as if in `tier`)."""
        return {"tier": tier or self.tier, "segments": list(self.segments), "flags": list(self.flags)}

    def text_values(self, tier: str | None = None) -> dict[str, str]:
        """What a rule description's placeholders may name (reason_text):
        the group keys, the tier the rules saw and the customer's groups,
        cleaned for showing."""
        return reason_text.clean_values({**dict(self.group_keys), "tier": tier or self.tier,
                                         "groups": ", ".join(self.segments)})


@dataclass(frozen=True)
class Grant:
    benefit_id: str
    rule_id: str
    description: str = ""


TEXT_SEPARATOR = " / "  # a rule's description: "中文 / English"


def reason_texts(description: str, fallback: str = "",
                 values: Mapping[str, str] | None = None) -> tuple[str, str]:
    """(English, Chinese) words of a rule's description "中文 / English"; a
    description without the separator is used for both. Optional parts
    naming keys (reason_text.render) are filled from ``values``
    (Profile.text_values) or dropped."""
    text = (description or "").strip() or fallback
    zh, sep, en = text.partition(TEXT_SEPARATOR)
    values = values or {}
    if not sep:
        words = reason_text.render(text, values)
        return words, words
    en, zh = reason_text.render(en, values), reason_text.render(zh, values)
    return en or zh, zh or en


def benefits_by_rule(catalog: Mapping[str, BenefitDefinition]) -> dict[str, list[str]]:
    """Rule id → the catalog entries naming it as their `eligibility_rule`."""
    by_rule: dict[str, list[str]] = {}
    for definition in catalog.values():
        if definition.eligibility_rule:
            by_rule.setdefault(definition.eligibility_rule, []).append(definition.benefit_id)
    return by_rule


def grants(fired: Iterable[tuple[str, Mapping[str, Any], str]],
           catalog: Mapping[str, BenefitDefinition],
           by_rule: Mapping[str, list[str]] | None = None) -> dict[str, Grant]:
    """Benefit → the first rule that grants it. `fired` is (rule id, then,
    description) in the engine's order. A rule grants the benefits it lists
    under `benefits`, and any catalog entry naming it as `eligibility_rule`
    (`by_rule`: benefits_by_rule(catalog), when the caller has it already)."""
    if by_rule is None:
        by_rule = benefits_by_rule(catalog)
    granted: dict[str, Grant] = {}
    for rule_id, then, description in fired:
        listed = then.get("benefits") or []
        for benefit_id in [*(listed if isinstance(listed, list) else [listed]), *by_rule.get(rule_id, ())]:
            if benefit_id in catalog and benefit_id not in granted:
                granted[benefit_id] = Grant(benefit_id, rule_id, description)
    return granted


# ------------------------------------------------------------------- calendar

BUDGET_PERIOD_RE = re.compile(r"^(\d{4})(?:-(\d{2})|Q([1-4]))?$")


@dataclass(frozen=True)
class Calendar:
    """Calendar periods in the bank's zone (default Asia/Shanghai)."""

    zone: ZoneInfo = field(default_factory=lambda: ZoneInfo("Asia/Shanghai"))

    @classmethod
    def named(cls, name: str) -> "Calendar":
        try:
            return cls(ZoneInfo(name))
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {name!r}") from None

    def local_date(self, instant: datetime) -> date:
        return instant.astimezone(self.zone).date()

    def period_start_date(self, period: str, day: date) -> date:
        if period == "DAY":
            return day
        if period == "WEEK":  # ISO weeks start on Monday
            return day - timedelta(days=day.weekday())
        if period == "MONTH":
            return day.replace(day=1)
        if period == "QUARTER":
            return date(day.year, 3 * ((day.month - 1) // 3) + 1, 1)
        if period == "YEAR":
            return date(day.year, 1, 1)
        raise ValueError(f"unknown period {period!r}")

    def period_key(self, period: str, instant: datetime) -> str:
        """A stable label of the period containing `instant`: 2025-03-07,
        2025-W10, 2025-03, 2025Q1, 2025."""
        day = self.local_date(instant)
        if period == "DAY":
            return day.isoformat()
        if period == "WEEK":
            year, week, _ = day.isocalendar()
            return f"{year}-W{week:02d}"
        if period == "MONTH":
            return f"{day.year}-{day.month:02d}"
        if period == "QUARTER":
            return f"{day.year}Q{(day.month - 1) // 3 + 1}"
        if period == "YEAR":
            return str(day.year)
        raise ValueError(f"unknown period {period!r}")

    def period_end(self, period: str, instant: datetime) -> datetime:
        """First instant of the next period (UTC)."""
        start = self.period_start_date(period, self.local_date(instant))
        if period == "DAY":
            nxt = start + timedelta(days=1)
        elif period == "WEEK":
            nxt = start + timedelta(days=7)
        else:
            months = {"MONTH": 1, "QUARTER": 3, "YEAR": 12}[period]
            total = start.month - 1 + months
            nxt = date(start.year + total // 12, total % 12 + 1, 1)
        return self.start_of(nxt)

    def start_of(self, day: date) -> datetime:
        return datetime.combine(day, time(0), self.zone).astimezone(timezone.utc)

    def budget_periods(self, instant: datetime) -> list[str]:
        """The budget periods containing `instant`, most specific first: a
        claim is charged to the first of these that has a budget."""
        return [self.period_key(p, instant) for p in ("MONTH", "QUARTER", "YEAR")]

    def budget_period_end(self, key: str) -> datetime:
        """End of a budget period label ("2025", "2025Q1", "2025-03")."""
        m = BUDGET_PERIOD_RE.match(key or "")
        if not m:
            raise ValueError("a budget period is YYYY, YYYYQn or YYYY-MM")
        year, month, quarter = int(m.group(1)), m.group(2), m.group(3)
        if month is not None:
            if not 1 <= int(month) <= 12:
                raise ValueError("month must be 01-12")
            return self.period_end("MONTH", self.start_of(date(year, int(month), 1)))
        if quarter is not None:
            return self.period_end("QUARTER", self.start_of(date(year, 3 * int(quarter) - 2, 1)))
        return self.period_end("YEAR", self.start_of(date(year, 1, 1)))


# --------------------------------------------------------------------- claims

@dataclass(frozen=True)
class Usage:
    """A customer's live (not cancelled) claims of one benefit."""

    used_in_period: int = 0
    last_claim_at: datetime | None = None


def remaining(definition: BenefitDefinition, usage: Usage) -> int:
    if definition.quota_per_period == 0:
        return UNLIMITED
    return max(0, definition.quota_per_period - usage.used_in_period)


def next_claim_at(definition: BenefitDefinition, usage: Usage, now: datetime) -> datetime | None:
    """End of the cool-down, if it has not ended yet."""
    if not definition.cooldown_seconds or usage.last_claim_at is None:
        return None
    end = usage.last_claim_at + timedelta(seconds=definition.cooldown_seconds)
    return end if end > now else None


def in_validity(definition: BenefitDefinition, today: date) -> bool:
    return ((definition.valid_from is None or definition.valid_from <= today)
            and (definition.valid_until is None or today <= definition.valid_until))


def check_offer(definition: BenefitDefinition, channel: str, today: date) -> None:
    """What does not depend on the customer's history: active, in its window,
    through an allowed channel."""
    bid = definition.benefit_id
    if not definition.active:
        raise FailedPrecondition(f"benefit {bid} is not active", reason="BENEFIT_INACTIVE",
                                 metadata={"benefit_id": bid})
    if not in_validity(definition, today):
        raise FailedPrecondition(f"benefit {bid} is not valid on {today.isoformat()}", reason="OUTSIDE_VALIDITY",
                                 metadata={"benefit_id": bid, "today": today.isoformat(),
                                           "valid_from": definition.valid_from or "",
                                           "valid_until": definition.valid_until or ""})
    if not definition.allows_channel(channel):
        raise FailedPrecondition(
            f"benefit {bid} cannot be claimed through {channel} (allowed: {', '.join(definition.channels)})",
            reason="CHANNEL_NOT_ALLOWED",
            metadata={"benefit_id": bid, "channel": channel, "allowed_channels": ",".join(definition.channels)})


def check_usage(definition: BenefitDefinition, usage: Usage, now: datetime) -> None:
    """Quota per period, then cool-down; run under the customer+benefit lock."""
    if definition.quota_per_period and usage.used_in_period >= definition.quota_per_period:
        raise FailedPrecondition(
            f"quota used: {usage.used_in_period} of {definition.quota_per_period} per "
            f"{definition.quota_period.lower()} for {definition.benefit_id}", reason="QUOTA_USED",
            metadata={"benefit_id": definition.benefit_id, "limit": definition.quota_per_period,
                      "used": usage.used_in_period, "quota_period": definition.quota_period})
    until = next_claim_at(definition, usage, now)
    if until is not None:
        raise FailedPrecondition(
            f"cool-down: {definition.benefit_id} can be claimed again from {until.isoformat()}", reason="COOL_DOWN",
            metadata={"benefit_id": definition.benefit_id, "next_claim_at": until.isoformat(),
                      "cooldown_seconds": definition.cooldown_seconds})


def usage_from_claims(claims: Iterable[tuple[str, datetime]], current_period_key: str) -> Usage:
    """(period key, claimed at) of live claims → usage in the current period."""
    used, last = 0, None
    for key, at in claims:
        if key == current_period_key:
            used += 1
        if last is None or at > last:
            last = at
    return Usage(used, last)


def usage_from_counts(rows: Iterable[tuple[str, int, datetime]], current_period_key: str) -> Usage:
    """(period key, live claims in it, latest claimed at) per period → usage
    in the current period: what one GROUP BY query per customer gives."""
    used, last = 0, None
    for key, count, at in rows:
        if key == current_period_key:
            used += count
        if last is None or at > last:
            last = at
    return Usage(used, last)


# --------------------------------------------------------------- entitlements

@dataclass(frozen=True)
class Entitlement:
    benefit_id: str
    name: str
    kind: str
    rule_id: str
    reason: str
    remaining: int
    valid_until: date | None
    points_cost: int
    next_claim_at: datetime | None = None
    locked: bool = False
    unlock_tier: str = ""
    unlock_gap_fen: int = 0
    reason_text: str = ""           # English words
    reason_text_zh: str = ""        # Chinese words
    quota_period: str = ""          # the period `remaining` counts in; "" = no quota
    channels: tuple[str, ...] = ()  # empty = every channel
    in_stock: bool = True           # False: a physical gift with no unit left now


def in_stock(definition: BenefitDefinition, stock: Mapping[str, int]) -> bool:
    """`stock`: units available (on hand - reserved) per physical benefit; a
    physical benefit without an inventory row has none."""
    return not definition.physical or stock.get(definition.benefit_id, 0) > 0


def build_entitlements(
    profile: Profile,
    granted: Mapping[str, Grant],
    granted_at_next_tier: Mapping[str, Grant],
    catalog: Mapping[str, BenefitDefinition],
    usage: Mapping[str, Usage],
    now: datetime,
    calendar: Calendar,
    include_locked: bool = False,
    stock: Mapping[str, int] | None = None,
) -> list[Entitlement]:
    """What mobile banking shows, in catalog order. Benefits out of their
    window or inactive are not shown at all; with include_locked, those the
    next tier would add are shown locked with the AUM gap (贵宾提级)."""
    today = calendar.local_date(now)
    stock = stock or {}
    shown: list[Entitlement] = []
    values = values_next = None  # built once, when a text needs them
    for benefit_id, definition in catalog.items():
        if not definition.active or not in_validity(definition, today):
            continue
        policy = dict(quota_period=definition.quota_period if definition.quota_per_period else "",
                      channels=definition.channels, in_stock=in_stock(definition, stock))
        grant = granted.get(benefit_id)
        if grant is not None:
            u = usage.get(benefit_id, Usage())
            if values is None:
                values = profile.text_values()
            en, zh = reason_texts(grant.description, grant.rule_id, values)
            shown.append(Entitlement(
                benefit_id, definition.name, definition.kind, grant.rule_id,
                en, remaining(definition, u), definition.valid_until,
                definition.points_cost, next_claim_at(definition, u, now),
                reason_text=en, reason_text_zh=zh, **policy))
        elif include_locked and profile.next_tier and benefit_id in granted_at_next_tier:
            grant = granted_at_next_tier[benefit_id]
            tier = profile.next_tier
            if values_next is None:
                values_next = profile.text_values(tier)  # the rules saw the customer at that tier
            en, zh = reason_texts(grant.description, grant.rule_id, values_next)
            shown.append(Entitlement(
                benefit_id, definition.name, definition.kind, grant.rule_id,
                f"unlocked at {tier}", 0, definition.valid_until, definition.points_cost,
                locked=True, unlock_tier=tier, unlock_gap_fen=profile.next_tier_gap_fen,
                reason_text=f"unlocked at tier {tier}: {en}", reason_text_zh=f"升至 {tier} 级可享：{zh}", **policy))
    return shown


def physical_ids(catalog: Mapping[str, BenefitDefinition], ids: Iterable[str]) -> list[str]:
    """The physical benefits among `ids`: those whose stock an answer shows."""
    return sorted({i for i in ids if i in catalog and catalog[i].physical})


# ----------------------------------------------------------------- ledgers

@dataclass(frozen=True)
class Mismatch:
    kind: str        # INVENTORY, BUDGET, POINTS
    subject: str
    expected: int
    actual: int
    message: str


def compare(kind: str, subject: str, what: str, expected: int, actual: int) -> list[Mismatch]:
    if expected == actual:
        return []
    return [Mismatch(kind, subject, expected, actual, f"{what}: ledger says {expected}, balance is {actual}")]


def code_violations(values: Sequence[tuple[str, str]]) -> Violations:
    """(field, value) pairs that must be UPPER_SNAKE codes."""
    return [(f, "required: an UPPER_SNAKE code") for f, v in values if not CODE_RE.match(v or "")]
