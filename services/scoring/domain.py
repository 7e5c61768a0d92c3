"""Scorecards and the arithmetic of scoring (SCORING.md) — pure Python.

Every number here is a `decimal.Decimal` computed in a local context of 34
significant digits; rounding (half-up, 2 places) happens only when a score is
shown: each indicator's shown score is its own exact score rounded, and the
total is the exact sum rounded once. So a breakdown may differ from its total
by a cent per indicator; the total is never a sum of rounded parts.

A scorecard is the `parameters` mapping of a `scoring.scorecard` ruleset:

    role: WEALTH_MANAGER
    total: 100                 # card points
    peer_scope: branch         # branch | all: who a person is compared with
    quantitative_floor: 80     # percent of the total, at least
    qualitative_ceiling: 20    # percent of the total, at most
    max_factor: 1.5            # no indicator above this multiple of its marks
    max_deduction: 100         # no single deduction/bonus cap above this (points)
    defaults: {k: 0.25, lo: 0, hi: 1.5}     # standard-deviation defaults
    parts:                     # weights in percent of the total, adding up to 100
      - {id: efficiency, kind: quantitative, weight: 40}
      - {id: risk, kind: quantitative, weight: 10, floor_at_zero: true}
    indicators:
      - {id: pb_contribution, part: efficiency, method: STDDEV, weight: 20}
      ...

Methods: STDDEV, RATIO, POINTS, CONVERSION (components `<id>.<name>` are
submitted separately and combined by the `rates` table), RATING (entered by
a manager, in [0, full marks]), FULL_MARKS (full marks unless the part's
deductions take them), DEDUCTION and BONUS (outside every bound, capped).
"""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Context, Decimal, localcontext
from fractions import Fraction
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Sequence

CONTEXT = Context(prec=34, rounding=ROUND_HALF_UP)  # decimal128: far more than 2 places need
CENT = Decimal("0.01")
STAT_PLACES = Decimal("0.0001")  # peer statistics (μ, σ) are shown to 4 places; stored exact
MISSING_POLICIES = ("warn", "block")  # a required value missing at finalize: only warn (default), or refuse
ZERO, ONE, HUNDRED = Decimal(0), Decimal(1), Decimal(100)

WEIGHTED_METHODS = ("STDDEV", "RATIO", "POINTS", "CONVERSION", "RATING", "FULL_MARKS")
ADJUSTMENTS = ("DEDUCTION", "BONUS")
METHODS = WEIGHTED_METHODS + ADJUSTMENTS
COMPONENT_METHODS = ("POINTS", "CONVERSION")
ADJUSTMENT_MODES = ("events", "shortfall", "excess")
PART_KINDS = ("quantitative", "qualitative")
SCOPES = ("branch", "all")
NORMALISERS = ("book_size",)
DECIMAL_TEXT = re.compile(r"^-?\d{1,24}(\.\d{1,12})?$")
ID_TEXT = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


def round2(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def show(value: Decimal | None, places: Decimal = CENT) -> str:
    """Plain decimal notation, never exponent form ("26.71", "0.00")."""
    if value is None:
        return ""
    return format(value.quantize(places, rounding=ROUND_HALF_UP), "f")


def _plain(value: Decimal | None) -> str:
    return "" if value is None else format(value, "f")


def parse_decimal(text: Any) -> Decimal:
    """A caller's decimal string: plain notation only (no exponent, NaN, inf)."""
    if isinstance(text, bool) or not isinstance(text, (str, int, Decimal)):
        raise ValueError(f"not a decimal: {text!r}")
    raw = str(text).strip()
    if not DECIMAL_TEXT.match(raw):
        raise ValueError(f"not a plain decimal number: {raw!r}")
    return Decimal(raw)


def parse_fraction(text: Any) -> Fraction:
    """A card constant: a decimal ("1.5") or an exact fraction ("1/3")."""
    if isinstance(text, bool):
        raise ValueError(f"not a number: {text!r}")
    raw = str(text).strip()
    if "/" in raw:
        num, _, den = raw.partition("/")
        value = Fraction(parse_decimal(num)) / Fraction(parse_decimal(den))
        return value
    return Fraction(parse_decimal(raw))


# --------------------------------------------------------------------------- the card


@dataclass(frozen=True)
class Part:
    id: str
    kind: str
    weight: Decimal
    floor_at_zero: bool = False


@dataclass(frozen=True)
class Indicator:
    id: str
    method: str
    part: str | None                 # None: a deduction/bonus on the total
    weight: Decimal = ZERO           # percent of the card total (weighted methods)
    direction: str = "higher"        # higher | lower (lower is better)
    k: Decimal = Decimal("0.25")
    lo: Decimal = ZERO
    hi: Decimal = ONE
    target: Decimal | None = None
    rates: Mapping[str, Fraction] = field(default_factory=dict)
    mode: str = "events"             # deductions/bonuses: events | shortfall | excess
    of: str | None = None            # deductions/bonuses: measured on another indicator
    per_unit: Decimal = ONE
    cap: Decimal = ZERO
    normalise_by: str | None = None  # "book_size": the value is divided by the locked book size
    allow_negative: bool = False
    description: str = ""
    minimum: Decimal | None = None   # declared range of a submitted value (min/max), inclusive
    maximum: Decimal | None = None
    required: bool = True            # a missing value is flagged (adjustments: never required)

    @property
    def is_adjustment(self) -> bool:
        return self.method in ADJUSTMENTS

    def input_keys(self) -> list[str]:
        """What callers submit for this indicator."""
        if self.method in COMPONENT_METHODS:
            return [f"{self.id}.{name}" for name in self.rates]
        if self.method == "FULL_MARKS" or (self.is_adjustment and self.of):
            return []
        return [self.id]


@dataclass(frozen=True)
class Scorecard:
    name: str
    version: int
    role: str
    total: Decimal
    peer_scope: str
    parts: tuple[Part, ...]
    indicators: tuple[Indicator, ...]
    quantitative_floor: Decimal = ZERO
    qualitative_ceiling: Decimal = HUNDRED
    missing_values: str = "warn"     # MISSING_POLICIES: does a missing required value block finalizing

    def __post_init__(self) -> None:
        # Cached once per card (cards are immutable): scoring asks these per person.
        with localcontext(CONTEXT):
            marks = {i.id: i.weight * self.total / HUNDRED for i in self.indicators}
        object.__setattr__(self, "_marks", marks)
        object.__setattr__(self, "_by_id", {i.id: i for i in self.indicators})
        object.__setattr__(self, "_inputs", {key: i for i in self.indicators for key in i.input_keys()})

    def full_marks(self, indicator: Indicator) -> Decimal:
        return self._marks[indicator.id]

    def part(self, part_id: str | None) -> Part | None:
        return next((p for p in self.parts if p.id == part_id), None)

    def indicator(self, indicator_id: str) -> Indicator | None:
        return self._by_id.get(indicator_id)

    def input_index(self) -> dict[str, Indicator]:
        """Submitted key ("calls_made", "loan_count.first_hand") -> its indicator."""
        return self._inputs

    def check_input(self, key: str, value: Decimal, *, rating: bool) -> str | None:
        """Why a submitted value is refused, or None."""
        indicator = self.input_index().get(key)
        if indicator is None:
            known = ", ".join(sorted(self.input_index()))
            return f"unknown indicator {key!r} for {self.role} (known: {known})"
        if (indicator.method == "RATING") != rating:
            return (f"{key!r} is a qualitative rating: use SubmitRatings" if not rating
                    else f"{key!r} is not a qualitative rating: use SubmitMetrics")
        if rating and not ZERO <= value <= self.full_marks(indicator):
            return f"rating {value} outside [0, {show(self.full_marks(indicator))}]"
        if value < 0 and not indicator.allow_negative:
            return f"{key!r} cannot be negative"
        bounds = self.out_of_range(key, value)
        if bounds is not None:
            return f"{key!r} = {value} is outside its declared range [{bounds[0]}, {bounds[1]}]"
        return None

    def out_of_range(self, key: str, value: Decimal) -> tuple[str, str] | None:
        """(min, max) as text ("" = open) when `value` is outside the declared
        range of the indicator `key` feeds, else None."""
        indicator = self.input_index().get(key)
        if indicator is None or (indicator.minimum is None and indicator.maximum is None):
            return None
        if (indicator.minimum is not None and value < indicator.minimum) or \
                (indicator.maximum is not None and value > indicator.maximum):
            return (_plain(indicator.minimum), _plain(indicator.maximum))
        return None


class ScorecardError(ValueError):
    def __init__(self, problems: Sequence[tuple[str, str]]):
        self.problems = list(problems)
        super().__init__("; ".join(f"{p}: {m}" for p, m in self.problems))


def _number(raw: Mapping, key: str, path: str, problems: list, default: Any = None,
            fraction: bool = False) -> Any:
    value = raw.get(key, default)
    if value is None:
        return None
    if isinstance(value, float):
        # YAML reads 0.25 as a float; its shortest repr is exactly what was written.
        value = repr(value)
    try:
        exact = parse_fraction(value) if fraction else parse_decimal(value)
    except ValueError as exc:
        problems.append((f"{path}.{key}", str(exc)))
        return None
    return exact


def parse_scorecard(params: Mapping, name: str = "", version: int = 0) -> Scorecard:
    """The scorecard of a ruleset's parameters, or ScorecardError with every problem."""
    problems: list[tuple[str, str]] = []
    card = _parse(params, name, version, problems)
    if card is not None:
        problems.extend(check_constraints(card, params))
    if problems or card is None:
        raise ScorecardError(problems or [("parameters", "not a scorecard")])
    return card


def _parse(params: Mapping, name: str, version: int, problems: list) -> Scorecard | None:
    if not isinstance(params, Mapping):
        problems.append(("parameters", "must be a mapping"))
        return None
    p = "parameters"
    role = params.get("role")
    if not isinstance(role, str) or not re.match(r"^[A-Z][A-Z0-9_]*$", role):
        problems.append((f"{p}.role", "required: an UPPER_SNAKE role code"))
    total = _number(params, "total", p, problems)
    if total is None or total <= 0:
        problems.append((f"{p}.total", "required: the card's points, above 0"))
    scope = params.get("peer_scope", "branch")
    if scope not in SCOPES:
        problems.append((f"{p}.peer_scope", f"one of {', '.join(SCOPES)}"))
    floor = _number(params, "quantitative_floor", p, problems, default=0)
    ceiling = _number(params, "qualitative_ceiling", p, problems, default=100)
    defaults = params.get("defaults") or {}
    if not isinstance(defaults, Mapping):
        problems.append((f"{p}.defaults", "must be a mapping"))
        defaults = {}
    missing_values = params.get("missing_values", "warn")
    if missing_values not in MISSING_POLICIES:
        problems.append((f"{p}.missing_values", f"one of {', '.join(MISSING_POLICIES)}"))

    parts: list[Part] = []
    raw_parts = params.get("parts")
    if not isinstance(raw_parts, list) or not raw_parts:
        problems.append((f"{p}.parts", "required: a list of parts (id, kind, weight)"))
        raw_parts = []
    for i, rp in enumerate(raw_parts):
        path = f"{p}.parts[{i}]"
        if not isinstance(rp, Mapping):
            problems.append((path, "a part is a mapping with id, kind, weight"))
            continue
        if not isinstance(rp.get("id"), str) or not ID_TEXT.match(rp["id"]):
            problems.append((f"{path}.id", "required: lower_snake id"))
        if rp.get("kind") not in PART_KINDS:
            problems.append((f"{path}.kind", f"one of {', '.join(PART_KINDS)}"))
        weight = _number(rp, "weight", path, problems)
        if weight is None or weight <= 0:
            problems.append((f"{path}.weight", "required: percent of the total, above 0"))
            weight = ZERO
        parts.append(Part(str(rp.get("id")), str(rp.get("kind")), weight, bool(rp.get("floor_at_zero", False))))

    indicators: list[Indicator] = []
    raw_inds = params.get("indicators")
    if not isinstance(raw_inds, list) or not raw_inds:
        problems.append((f"{p}.indicators", "required: a list of indicators"))
        raw_inds = []
    for i, ri in enumerate(raw_inds):
        path = f"{p}.indicators[{i}]"
        if not isinstance(ri, Mapping):
            problems.append((path, "an indicator is a mapping with id, method, ..."))
            continue
        ind = _parse_indicator(ri, path, defaults, problems)
        if ind is not None:
            indicators.append(ind)
    if problems:
        return None
    return Scorecard(name=name, version=version, role=str(role), total=total, peer_scope=str(scope),
                     parts=tuple(parts), indicators=tuple(indicators),
                     quantitative_floor=floor, qualitative_ceiling=ceiling, missing_values=str(missing_values))


def _parse_indicator(ri: Mapping, path: str, defaults: Mapping, problems: list) -> Indicator | None:
    before = len(problems)
    ind_id = ri.get("id")
    if not isinstance(ind_id, str) or not ID_TEXT.match(ind_id):
        problems.append((f"{path}.id", "required: lower_snake id"))
    method = ri.get("method")
    if method not in METHODS:
        problems.append((f"{path}.method", f"one of {', '.join(METHODS)}"))
        return None
    direction = ri.get("direction", "higher")
    if direction not in ("higher", "lower"):
        problems.append((f"{path}.direction", "higher or lower (which is better)"))
    is_stddev = method == "STDDEV"
    k = _number(ri, "k", path, problems, default=defaults.get("k", "0.25") if is_stddev else "0.25")
    lo = _number(ri, "lo", path, problems, default=defaults.get("lo", 0) if is_stddev else 0)
    hi = _number(ri, "hi", path, problems, default=defaults.get("hi", "1.5") if is_stddev else 1)
    target = _number(ri, "target", path, problems)
    weight = _number(ri, "weight", path, problems, default=0)
    per_unit = _number(ri, "per_unit", path, problems, default=1)
    cap = _number(ri, "cap", path, problems, default=0)
    rates: dict[str, Fraction] = {}
    raw_rates = ri.get("rates") or {}
    if not isinstance(raw_rates, Mapping):
        problems.append((f"{path}.rates", "a mapping of component -> rate"))
        raw_rates = {}
    for comp, rate in raw_rates.items():
        if not isinstance(comp, str) or not ID_TEXT.match(comp):
            problems.append((f"{path}.rates.{comp}", "component ids are lower_snake"))
            continue
        value = _number(raw_rates, comp, f"{path}.rates", problems, fraction=True)
        if value is not None:
            rates[comp] = value
    mode = ri.get("mode", "events")
    if mode not in ADJUSTMENT_MODES:
        problems.append((f"{path}.mode", f"one of {', '.join(ADJUSTMENT_MODES)}"))
    normalise_by = ri.get("normalise_by")
    if normalise_by is not None and normalise_by not in NORMALISERS:
        problems.append((f"{path}.normalise_by", f"one of {', '.join(NORMALISERS)}"))
    minimum = _number(ri, "min", path, problems)
    maximum = _number(ri, "max", path, problems)
    if minimum is not None and maximum is not None and minimum > maximum:
        problems.append((f"{path}.min", f"min {minimum} is above max {maximum}"))
    required = ri.get("required", method not in ADJUSTMENTS)
    if not isinstance(required, bool):
        problems.append((f"{path}.required", "true or false"))
    if len(problems) > before:
        return None
    return Indicator(id=ind_id, method=method, part=ri.get("part"), weight=weight, direction=direction,
                     k=k, lo=lo, hi=hi, target=target, rates=rates, mode=mode, of=ri.get("of"),
                     per_unit=per_unit, cap=cap, normalise_by=normalise_by,
                     allow_negative=bool(ri.get("allow_negative", False)),
                     description=str(ri.get("description", "")), minimum=minimum, maximum=maximum,
                     required=required)


def check_constraints(card: Scorecard, params: Mapping) -> list[tuple[str, str]]:
    """The card's constraints (DOMAIN.md §5): weights add up, quantitative share at
    least its floor, qualitative at most its ceiling, bounds and caps consistent."""
    problems: list[tuple[str, str]] = []
    p = "parameters"
    max_factor = _number(params, "max_factor", p, problems)
    max_deduction = _number(params, "max_deduction", p, problems)
    ids = [i.id for i in card.indicators]
    for dup in sorted({x for x in ids if ids.count(x) > 1}):
        problems.append((f"{p}.indicators", f"duplicate indicator id {dup!r}"))
    part_ids = [pt.id for pt in card.parts]
    for dup in sorted({x for x in part_ids if part_ids.count(x) > 1}):
        problems.append((f"{p}.parts", f"duplicate part id {dup!r}"))
    part_total = sum((pt.weight for pt in card.parts), ZERO)
    if part_total != HUNDRED:
        problems.append((f"{p}.parts", f"part weights add up to {part_total}%, not 100% of the total"))
    quantitative = sum((pt.weight for pt in card.parts if pt.kind == "quantitative"), ZERO)
    qualitative = sum((pt.weight for pt in card.parts if pt.kind == "qualitative"), ZERO)
    if quantitative < card.quantitative_floor:
        problems.append((f"{p}.parts", f"quantitative share {quantitative}% is below its floor "
                                       f"{card.quantitative_floor}%"))
    if qualitative > card.qualitative_ceiling:
        problems.append((f"{p}.parts", f"qualitative share {qualitative}% is above its ceiling "
                                       f"{card.qualitative_ceiling}%"))
    for pt in card.parts:
        inside = sum((i.weight for i in card.indicators if i.part == pt.id and not i.is_adjustment), ZERO)
        if inside != pt.weight:
            problems.append((f"{p}.parts[{part_ids.index(pt.id)}]",
                             f"indicator weights of part {pt.id!r} add up to {inside}%, not its {pt.weight}%"))
    for n, ind in enumerate(card.indicators):
        path = f"{p}.indicators[{n}]"
        problems.extend(_check_indicator(card, ind, path, max_factor, max_deduction))
    return problems


def _check_indicator(card: Scorecard, ind: Indicator, path: str, max_factor, max_deduction):
    if ind.part is not None and card.part(ind.part) is None:
        yield f"{path}.part", f"unknown part {ind.part!r}"
    if ind.is_adjustment:
        if ind.weight:
            yield f"{path}.weight", "deductions and bonuses carry no weight: they sit outside the marks"
        if ind.cap <= 0:
            yield f"{path}.cap", "required: a deduction or bonus is always capped (points, above 0)"
        elif max_deduction is not None and ind.cap > max_deduction:
            yield f"{path}.cap", f"cap {ind.cap} is above the card's max_deduction {max_deduction}"
        if ind.per_unit <= 0:
            yield f"{path}.per_unit", "must be above 0"
        if ind.mode != "events" and (ind.target is None or ind.target < 0):
            yield f"{path}.target", f"required for mode {ind.mode}"
        if ind.of is not None and (card.indicator(ind.of) is None or card.indicator(ind.of).method
                                   in COMPONENT_METHODS + ("FULL_MARKS",) + ADJUSTMENTS):
            yield f"{path}.of", f"{ind.of!r} is not a single-value indicator of this card"
        if ind.part is not None and card.part(ind.part) is not None and not card.part(ind.part).floor_at_zero:
            yield f"{path}.part", f"part {ind.part!r} takes deductions only with floor_at_zero: true"
        return
    if ind.part is None:
        yield f"{path}.part", "required: the part the indicator's weight belongs to"
    if ind.weight <= 0:
        yield f"{path}.weight", "required: percent of the total, above 0"
    if ind.method in ("STDDEV", "RATIO", "POINTS", "CONVERSION"):
        if ind.lo < 0:
            yield f"{path}.lo", "an indicator scores at least 0"
        if ind.hi < 1:
            yield f"{path}.hi", f"hi {ind.hi} is below 1: full marks could never be reached"
        if ind.lo > ind.hi:
            yield f"{path}.lo", f"lo {ind.lo} is above hi {ind.hi}"
        if max_factor is not None and ind.hi > max_factor:
            yield f"{path}.hi", f"hi {ind.hi} is above the card's max_factor {max_factor}"
    if ind.method == "STDDEV" and ind.k <= 0:
        yield f"{path}.k", "must be above 0"
    if ind.method in ("RATIO", "POINTS", "CONVERSION") and (ind.target is None or ind.target <= 0):
        yield f"{path}.target", "required: above 0"
    if ind.method in COMPONENT_METHODS:
        if not ind.rates:
            yield f"{path}.rates", "required: component -> rate (比价关系 / conversion table)"
        for comp, rate in ind.rates.items():
            if rate <= 0:
                yield f"{path}.rates.{comp}", "must be above 0"
        if ind.direction != "higher":
            yield f"{path}.direction", "points and conversions are higher-is-better"
    if ind.normalise_by and ind.method in COMPONENT_METHODS:
        yield f"{path}.normalise_by", "not for component indicators"


# --------------------------------------------------------------------------- scoring


class PeerStats(NamedTuple):
    mean: Decimal
    stddev: Decimal
    count: int


@dataclass(frozen=True)
class Person:
    staff_id: str
    branch_id: str
    values: Mapping[str, Decimal]   # submitted key -> value (metrics and ratings)
    book_size: int | None = None    # locked book, for normalised indicators


class IndicatorScore(NamedTuple):
    indicator_id: str
    method: str
    full_marks: Decimal
    raw_value: Decimal | None
    score: Decimal                  # exact; shown rounded
    peer_mean: Decimal | None = None
    peer_stddev: Decimal | None = None
    peer_count: int = 0
    note: str = ""
    missing: bool = False           # a required value was not submitted: scored 0, flagged


@dataclass(frozen=True)
class PersonScore:
    staff_id: str
    branch_id: str
    peer_group: str
    total: Decimal                  # rounded half-up to 2 places
    indicators: tuple[IndicatorScore, ...]
    rank: int = 0
    peer_group_size: int = 0

    @property
    def missing(self) -> list[str]:
        """Indicators whose required value was not submitted."""
        return [i.indicator_id for i in self.indicators if i.missing]


def peer_group(card: Scorecard, branch_id: str) -> str:
    return branch_id if card.peer_scope == "branch" else "*"


def clamp(value: Decimal, lo: Decimal, hi: Decimal) -> Decimal:
    return lo if value < lo else hi if value > hi else value


# The helpers below run inside the CONTEXT that their public caller entered once.

def _raw(card: Scorecard, ind: Indicator, person: Person) -> tuple[Decimal | None, str]:
    """The value an indicator is scored on (points, converted counts, normalised), and a note."""
    if ind.method in COMPONENT_METHODS:
        values = person.values
        given = [(values[key], rate) for key, rate in zip(ind.input_keys(), ind.rates.values()) if key in values]
        if not given:
            return None, "no value submitted"
        total = sum((Fraction(v) * rate for v, rate in given), Fraction(0))
        return Decimal(total.numerator) / Decimal(total.denominator), ""
    source = card.indicator(ind.of) if ind.of else ind
    value = person.values.get(source.id)
    if value is None:
        return None, "no value submitted"
    if source.normalise_by == "book_size":
        if not person.book_size:
            return ZERO, "empty or unknown locked book: ratio 0"
        return value / Decimal(person.book_size), f"{value} / {person.book_size} customers in the locked book"
    return value, ""


def compute_peer_stats(card: Scorecard, people: Iterable[Person]) -> dict[tuple[str, str], PeerStats]:
    """(peer group, indicator id) -> μ, population σ, n over peers with a value."""
    values: dict[tuple[str, str], list[Decimal]] = defaultdict(list)
    stddev_inds = [i for i in card.indicators if i.method == "STDDEV"]
    with localcontext(CONTEXT):
        for person in people:
            group = peer_group(card, person.branch_id)
            for ind in stddev_inds:
                x, _ = _raw(card, ind, person)
                if x is not None:
                    values[(group, ind.id)].append(x)
    return {key: stats_of(xs) for key, xs in values.items()}


def stats_of(xs: Sequence[Decimal]) -> PeerStats:
    with localcontext(CONTEXT):
        n = len(xs)
        mean = sum(xs, ZERO) / n
        variance = sum(((x - mean) ** 2 for x in xs), ZERO) / n
        return PeerStats(mean, variance.sqrt(), n)


def _stddev_factor(ind: Indicator, x: Decimal, stats: PeerStats | None) -> tuple[Decimal, str]:
    if stats is None or stats.count < 2:
        return ONE, f"fewer than 2 peers with a value (n = {stats.count if stats else 0}): full marks"
    if stats.stddev == 0:
        return ONE, "all peers equal (sigma = 0): full marks"
    z = (x - stats.mean) / stats.stddev
    if ind.direction == "lower":
        z = -z
    return clamp(ONE + ind.k * z, ind.lo, ind.hi), ""


def _ratio_factor(ind: Indicator, x: Decimal, target: Decimal) -> tuple[Decimal, str]:
    if ind.direction == "lower":
        if x == 0:
            return ind.hi, "0 (lower is better): the upper bound"
        return clamp(target / x, ind.lo, ind.hi), ""
    return clamp(x / target, ind.lo, ind.hi), ""


def _adjustment(ind: Indicator, x: Decimal) -> tuple[Decimal, str]:
    if ind.mode == "shortfall":
        basis = max(ZERO, ind.target - x)
    elif ind.mode == "excess":
        basis = max(ZERO, x - ind.target)
    else:
        basis = x
    amount = ind.per_unit * basis
    if amount > ind.cap:
        return ind.cap, f"{show(amount)} capped at {show(ind.cap)}"
    return amount, ""


def score_person(card: Scorecard, person: Person, stats: Mapping[tuple[str, str], PeerStats]) -> PersonScore:
    """One person's score on `card` with the peer statistics of the period."""
    with localcontext(CONTEXT):
        return _score_person(card, person, stats)


def _score_person(card: Scorecard, person: Person, stats: Mapping[tuple[str, str], PeerStats]) -> PersonScore:
    group = peer_group(card, person.branch_id)
    results: dict[str, IndicatorScore] = {}
    for ind in card.indicators:
        w = card.full_marks(ind)
        method = ind.method
        if method == "FULL_MARKS":
            results[ind.id] = IndicatorScore(ind.id, method, w, None, w,
                                             note="full marks unless the part's deductions take them")
            continue
        x, note = _raw(card, ind, person)
        peer = stats.get((group, ind.id)) if method == "STDDEV" else None
        why = ""
        missing = x is None and ind.required
        if x is None:
            score = ZERO
            if missing:
                note = f"{note}: required, scored 0" if note else "required value missing: scored 0"
        elif method == "STDDEV":
            factor, why = _stddev_factor(ind, x, peer)
            score = w * factor
        elif method == "RATING":
            score = x
        elif method in ADJUSTMENTS:
            amount, why = _adjustment(ind, x)
            score = -amount if method == "DEDUCTION" else amount
        else:  # RATIO, POINTS, CONVERSION
            factor, why = _ratio_factor(ind, x, ind.target)
            score = w * factor
        if why:
            note = f"{note}; {why}" if note else why
        if peer is None:
            results[ind.id] = IndicatorScore(ind.id, method, w, x, score, note=note, missing=missing)
        else:
            results[ind.id] = IndicatorScore(ind.id, method, w, x, score, peer.mean, peer.stddev, peer.count, note,
                                             missing)
    total = ZERO
    for part in card.parts:
        total += _part_subtotal(card, part, results)
    for ind in card.indicators:
        if ind.part is None and ind.is_adjustment:
            total += results[ind.id].score
    total = max(ZERO, total)
    return PersonScore(person.staff_id, person.branch_id, group, round2(total),
                       tuple(results[i.id] for i in card.indicators))


def _part_subtotal(card: Scorecard, part: Part, results: dict[str, IndicatorScore]) -> Decimal:
    """Σ of the part's indicators; its deductions stop at 0 for the part (replacing
    the deduction's score by what it actually took, with a note)."""
    marks = sum((results[i.id].score for i in card.indicators if i.part == part.id and not i.is_adjustment), ZERO)
    remaining = marks
    for ind in card.indicators:
        if ind.part != part.id or not ind.is_adjustment:
            continue
        r = results[ind.id]
        remaining += r.score
        if part.floor_at_zero and remaining < 0:
            taken = r.score - remaining  # what was left of the part
            results[ind.id] = r._replace(score=taken, note=_join(
                r.note, f"limited to {show(-taken)}: the {part.id} part stops at 0"))
            remaining = ZERO
    return remaining


def _join(*notes: str) -> str:
    return "; ".join(n for n in notes if n)


def rank(scores: list[PersonScore]) -> list[PersonScore]:
    """Competition ranking (1, 2, 2, 4) by shown total within each peer group;
    output sorted by group, rank, staff id."""
    groups: dict[str, list[PersonScore]] = defaultdict(list)
    for s in scores:
        groups[s.peer_group].append(s)
    ranked: list[PersonScore] = []
    for group in sorted(groups):
        members = sorted(groups[group], key=lambda s: (-s.total, s.staff_id))
        previous, position = None, 0
        for i, s in enumerate(members, start=1):
            if s.total != previous:
                position, previous = i, s.total
            ranked.append(_with_rank(s, position, len(members)))
    return ranked


def rank_among(total: Decimal, peer_totals: Iterable[Decimal]) -> int:
    """Rank of one (revised) total among the other peers' totals."""
    return 1 + sum(1 for t in peer_totals if t > total)


def _with_rank(s: PersonScore, position: int, size: int) -> PersonScore:
    return PersonScore(s.staff_id, s.branch_id, s.peer_group, s.total, s.indicators, position, size)


def score_people(card: Scorecard, people: Sequence[Person]) -> list[PersonScore]:
    """Score everyone of a role in a period, ranked in their peer groups."""
    return score_role(card, people)[0]


def score_role(card: Scorecard, people: Sequence[Person]
               ) -> tuple[list[PersonScore], dict[tuple[str, str], PeerStats]]:
    """The ranked scores and the peer statistics they used."""
    stats = compute_peer_stats(card, people)
    with localcontext(CONTEXT):
        return rank([_score_person(card, person, stats) for person in people]), stats


def needs_book_size(card: Scorecard) -> bool:
    return any(i.normalise_by == "book_size" for i in card.indicators)


BookSize = Callable[[str], int | None]
