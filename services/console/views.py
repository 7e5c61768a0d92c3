"""Pure view logic: formatting and the view models the templates show.

Nothing here imports HTTP or gRPC. Inputs are plain values or objects with
the attributes of the kequn messages (duck-typed, so unit tests pass plain
stand-ins). Money is integer fen throughout: it is formatted with integer
arithmetic only, never a float.
"""
from __future__ import annotations

import csv
import difflib
import io
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

try:  # China has kept UTC+8 without DST since 1991; the fixed offset is the fallback without tzdata.
    from zoneinfo import ZoneInfo
    SHANGHAI = ZoneInfo("Asia/Shanghai")
except Exception:  # noqa: BLE001 - no tz database in a slim image
    SHANGHAI = timezone(timedelta(hours=8), "Asia/Shanghai")


# --- formatting ---------------------------------------------------------------------------

def yuan(fen: int) -> str:
    """Integer fen as yuan with thousands separators: 123456 -> "¥1,234.56"."""
    if isinstance(fen, bool) or not isinstance(fen, int):
        raise TypeError(f"fen must be an int, not {type(fen).__name__}")
    sign = "-" if fen < 0 else ""
    whole, cents = divmod(abs(fen), 100)
    return f"{sign}¥{whole:,}.{cents:02d}"


def shanghai(when: datetime | None) -> str:
    """An instant as Asia/Shanghai local time, "YYYY-MM-DD HH:MM"; "" for none."""
    if when is None:
        return ""
    if when.tzinfo is None:  # protobuf Timestamp.ToDatetime() gives naive UTC
        when = when.replace(tzinfo=timezone.utc)
    return when.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M")


def timestamp(ts) -> str:
    """A google.protobuf.Timestamp (or None/unset) in Asia/Shanghai."""
    if ts is None or (getattr(ts, "seconds", 0) == 0 and getattr(ts, "nanos", 0) == 0):
        return ""
    return shanghai(datetime.fromtimestamp(ts.seconds, timezone.utc) + timedelta(microseconds=ts.nanos // 1000))


def duration(seconds: int) -> str:
    """A cool-down as days/hours/minutes: 90000 -> "1d 1h"; 0 -> "0"."""
    seconds = int(seconds)
    if seconds <= 0:
        return "0"
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    parts = [f"{n}{unit}" for n, unit in ((days, "d"), (hours, "h"), (minutes, "min")) if n]
    return " ".join(parts) or f"{seconds}s"


def enum_name(full: str, prefix: str) -> str:
    """CHANGE_ACTION_TRANSFER -> TRANSFER."""
    return full[len(prefix):] if full.startswith(prefix) else full


def enum_of(message, field_name: str) -> str:
    """The short name of a message's enum field: change=CHANGE_KIND_UPGRADE -> "UPGRADE"."""
    value = getattr(message, field_name)
    descriptor = getattr(message, "DESCRIPTOR", None)
    if descriptor is None:  # a plain stand-in already holds the name
        return str(value)
    enum = descriptor.fields_by_name[field_name].enum_type
    full = enum.values_by_number[value].name if value in enum.values_by_number else str(value)
    prefix = "".join("_" + c if c.isupper() else c for c in enum.name).lstrip("_").upper() + "_"
    return enum_name(full, prefix)


def fill_percent(size: int, max_size: int) -> int | None:
    """Whole percent of a book's max (rounded down); None when there is no max."""
    if max_size <= 0:
        return None
    return size * 100 // max_size


# --- change requests ----------------------------------------------------------------------

@dataclass(frozen=True)
class BookFill:
    staff_id: str
    size: int
    max_size: int  # 0 = no limit

    @property
    def full(self) -> bool:
        return self.max_size > 0 and self.size >= self.max_size


@dataclass(frozen=True)
class Effect:
    """What approving a request does to one book."""
    staff_id: str
    before: int
    after: int
    max_size: int
    over: bool  # after > max: the service will refuse it (BOOK_FULL)


def effects(action: str, from_book: BookFill | None, to_book: BookFill | None) -> list[Effect]:
    """The book sizes before and after approving ADD / REMOVE / TRANSFER."""
    out = []
    if from_book is not None and action in ("REMOVE", "TRANSFER"):
        out.append(Effect(from_book.staff_id, from_book.size, from_book.size - 1, from_book.max_size, False))
    if to_book is not None and action in ("ADD", "TRANSFER"):
        after = to_book.size + 1
        out.append(Effect(to_book.staff_id, to_book.size, after, to_book.max_size,
                          to_book.max_size > 0 and after > to_book.max_size))
    return out


# --- rules ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class DiffLine:
    kind: str  # "hunk", "add", "del", "ctx", "file"
    text: str


def diff_documents(old: str, new: str, old_name: str, new_name: str) -> list[DiffLine]:
    lines = []
    for line in difflib.unified_diff(old.splitlines(), new.splitlines(), old_name, new_name, lineterm="", n=3):
        if line.startswith(("---", "+++")):
            kind = "file"
        elif line.startswith("@@"):
            kind = "hunk"
        elif line.startswith("+"):
            kind = "add"
        elif line.startswith("-"):
            kind = "del"
        else:
            kind = "ctx"
        lines.append(DiffLine(kind, line))
    return lines


class SampleError(ValueError):
    def __init__(self, line: int):
        super().__init__(f"line {line} is not a JSON object")
        self.line = line


MAX_SAMPLE_DEPTH = 20


def _depth(value, level: int = 0) -> int:
    if level > MAX_SAMPLE_DEPTH:
        return level
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level + 1)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level + 1)
    return level


def _loads(text: str, line: int):
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: thousands of nested brackets
        raise SampleError(line) from None
    if _depth(value) > MAX_SAMPLE_DEPTH:
        raise SampleError(line)
    return value


def parse_sample(text: str, limit: int = 1000) -> list[dict]:
    """One JSON object per non-blank line (a JSON array of objects also works).

    Money fields stay integers: json parses 100000 as int; a float would be
    refused by the rule store's own validation, not silently rounded here."""
    text = text.strip()
    if not text:
        return []
    if text.startswith("["):
        items = _loads(text, 1)
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise SampleError(1)
        return items[:limit]
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        item = _loads(line, number)
        if not isinstance(item, dict):
            raise SampleError(number)
        out.append(item)
        if len(out) >= limit:
            break
    return out


@dataclass
class Matrix:
    """A migration matrix: rows = outcome under the version in force, columns = under the candidate."""
    key: str
    rows: list[str] = field(default_factory=list)
    cols: list[str] = field(default_factory=list)
    counts: dict[tuple[str, str], int] = field(default_factory=dict)
    # SimulatePopulation: a few ids of each cell (SimulateRuleset sends none).
    examples: dict[tuple[str, str], list[str]] = field(default_factory=dict)

    @property
    def peak(self) -> int:
        return max(self.counts.values(), default=0)

    def cells(self) -> list["Cell"]:
        """Every cell seen, row by row, with its count and example ids: the heat map's numbers
        in a form a table (and a screen reader) can show."""
        return [Cell(r, c, self.counts[(r, c)], tuple(self.examples.get((r, c), ())), self.key)
                for r in self.rows for c in self.cols if (r, c) in self.counts]

    @property
    def changed(self) -> int:
        return sum(n for (r, c), n in self.counts.items() if r != c)


@dataclass(frozen=True)
class Cell:
    src: str
    dst: str
    count: int
    example_ids: tuple[str, ...] = ()
    key: str = ""

    @property
    def moved(self) -> bool:
        return self.src != self.dst


NONE_OUTCOME = "—"


def matrices(transitions) -> list[Matrix]:
    """Transition cells (outcome_key, from_outcome, to_outcome, count) grouped by outcome key."""
    by_key: dict[str, Matrix] = {}
    for t in transitions:
        m = by_key.setdefault(t.outcome_key or "outcome", Matrix(t.outcome_key or "outcome"))
        src, dst = t.from_outcome or NONE_OUTCOME, t.to_outcome or NONE_OUTCOME
        if src not in m.rows:
            m.rows.append(src)
        if dst not in m.cols:
            m.cols.append(dst)
        m.counts[(src, dst)] = m.counts.get((src, dst), 0) + int(t.count)
        ids = list(getattr(t, "example_ids", ()) or ())
        if ids:
            kept = m.examples.setdefault((src, dst), [])
            kept.extend(i for i in ids if i not in kept)
    for m in by_key.values():
        m.rows.sort()
        m.cols.sort()
    return [by_key[k] for k in sorted(by_key)]


# --- scores ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ScoreGroup:
    role: str
    branch_id: str
    people: int
    mean: Decimal
    low: Decimal
    high: Decimal


def score_summary(scores) -> list[ScoreGroup]:
    """A period's scores by role and branch: how many, mean (half-up to 0.01), lowest, highest.
    Decimal throughout, from the service's decimal strings."""
    groups: dict[tuple[str, str], list[Decimal]] = {}
    for s in scores:
        groups.setdefault((s.role, s.branch_id), []).append(Decimal(s.total))
    out = []
    for (role, branch), totals in sorted(groups.items()):
        mean = (sum(totals) / len(totals)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
        out.append(ScoreGroup(role, branch, len(totals), mean, min(totals), max(totals)))
    return out


SCORE_COLUMNS = ("period_id", "staff_id", "role", "branch_id", "total", "rank", "peer_group_size", "status",
                 "revision", "scorecard", "scorecard_version")


def _cell(value) -> str:
    """A CSV cell that a spreadsheet will not run as a formula (OWASP CSV injection),
    with plain decimal numbers (e.g. "-1.50") kept as they are."""
    text = str(value)
    if text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        try:
            Decimal(text)
            return text
        except InvalidOperation:
            return "'" + text
    return text


def scores_csv(scores) -> str:
    """HR's download: one line per person, the decimals exactly as the service sent them."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(SCORE_COLUMNS)
    for s in scores:
        writer.writerow([_cell(v) for v in (
            s.period_id, s.staff_id, s.role, s.branch_id, s.total, s.rank, s.peer_group_size,
            enum_of(s, "status"), s.revision, s.scorecard.name, s.scorecard.version)])
    return buf.getvalue()


# --- overview ---------------------------------------------------------------------------------

def tier_distribution(tiers: dict[str, str], order: tuple[str, ...] = ()) -> list[tuple[str, int]]:
    """Customers per tier from {customer: tier}; tiers named in `order` first, in that order."""
    counts: dict[str, int] = {}
    for tier in tiers.values():
        if tier:
            counts[tier] = counts.get(tier, 0) + 1
    rank = {t: i for i, t in enumerate(order)}
    return sorted(counts.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0]))


@dataclass(frozen=True)
class RoleFill:
    """The books of one role: how many people, customers held, and the room the caps give."""
    role: str
    people: int
    customers: int
    capacity: int          # sum of max_size over books that have one
    uncapped: int          # books without a max
    full: int              # books at or over their max
    customers_capped: int  # customers in the books that have a max

    @property
    def percent(self) -> int | None:
        """Fill of the capped books against their caps; None when no book of the role has one."""
        return fill_percent(self.customers_capped, self.capacity) if self.capacity else None


def fill_by_role(books) -> list[RoleFill]:
    """Books (anything with role, size, max_size) grouped by role, roles sorted."""
    acc: dict[str, list[int]] = {}
    for b in books:
        a = acc.setdefault(b.role, [0, 0, 0, 0, 0, 0])
        a[0] += 1
        a[1] += int(b.size)
        if b.max_size > 0:
            a[2] += int(b.max_size)
            a[5] += int(b.size)
            a[4] += 1 if b.size >= b.max_size else 0
        else:
            a[3] += 1
    return [RoleFill(role, a[0], a[1], a[2], a[3], a[4], a[5]) for role, a in sorted(acc.items())]


@dataclass(frozen=True)
class Stock:
    benefit_id: str
    name: str
    on_hand: int
    reserved: int
    available: int


@dataclass(frozen=True)
class BudgetLeft:
    group: str
    period: str
    amount_fen: int
    spent_fen: int
    remaining_fen: int


def budget_periods(today) -> list[str]:
    """The budget periods containing `today` (a date), most specific first, as the benefits
    service charges them: "2026-03", "2026Q1", "2026"."""
    return [f"{today.year}-{today.month:02d}", f"{today.year}Q{(today.month - 1) // 3 + 1}", str(today.year)]


def today_shanghai(now: datetime | None = None):
    return (now or datetime.now(timezone.utc)).astimezone(SHANGHAI).date()


# --- rule governance: releases, population impact -----------------------------------------

class LocalTimeError(ValueError):
    """An effective date that is not a local date-time."""


LOCAL_FORMATS = ("%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S")


def shanghai_local_to_utc(text: str) -> datetime | None:
    """What a datetime-local input sent ("2026-03-01T09:30", read as Asia/Shanghai wall time) as
    the exact UTC instant; None for an empty field (= on approval). China has no DST, so every
    local time names exactly one instant."""
    text = (text or "").strip()
    if not text:
        return None
    for fmt in LOCAL_FORMATS:
        try:
            local = datetime.strptime(text, fmt)
        except ValueError:
            continue
        return local.replace(tzinfo=SHANGHAI).astimezone(timezone.utc)
    raise LocalTimeError(text)


def shanghai_local_input(now: datetime) -> str:
    """An instant as a datetime-local value in Asia/Shanghai (the form's lower bound)."""
    if now.tzinfo is None:
        now = now.replace(tzinfo=timezone.utc)
    return now.astimezone(SHANGHAI).strftime("%Y-%m-%dT%H:%M")


@dataclass(frozen=True)
class ReleaseRow:
    """One release as the page lists it, and what this person may do with it."""
    release: object
    status: str
    mine: bool            # I requested it: approving would be SELF_APPROVAL (the service says so)
    can_decide: bool      # PENDING: approve or reject
    can_cancel: bool      # APPROVED with an effective date still ahead: cancel


def release_rows(releases, me: str, can_approve: bool, can_reject: bool,
                 now: datetime | None = None) -> list[ReleaseRow]:
    """Releases newest first as the service sent them. Approve/reject are offered on PENDING ones
    (also to the requester: the service's SELF_APPROVAL refusal is then shown in words), cancel
    on APPROVED ones whose instant is still ahead (the service enforces its lead time)."""
    now = now or datetime.now(timezone.utc)
    rows = []
    for r in releases:
        status = enum_of(r, "status")
        effective = getattr(r, "effective_from", None)
        seconds = getattr(effective, "seconds", 0) if effective is not None else 0
        ahead = bool(seconds) and datetime.fromtimestamp(seconds, timezone.utc) > now
        rows.append(ReleaseRow(r, status, r.requested_by == me,
                               can_decide=status == "PENDING" and (can_approve or can_reject),
                               can_cancel=status == "APPROVED" and ahead and can_reject))
    return rows


@dataclass(frozen=True)
class CodeRow:
    outcome_key: str
    code: str
    gained: int
    lost: int
    gained_example_ids: tuple[str, ...]
    lost_example_ids: tuple[str, ...]


def code_rows(code_changes) -> list[CodeRow]:
    """Groups and flags gained and lost, sorted by outcome key then code."""
    return sorted((CodeRow(c.outcome_key, c.code, int(c.gained), int(c.lost), tuple(c.gained_example_ids),
                           tuple(c.lost_example_ids)) for c in code_changes),
                  key=lambda c: (c.outcome_key, c.code))


@dataclass(frozen=True)
class BranchRow:
    branch_id: str
    total: int
    changed: int
    moves: list[Cell]          # only cells whose outcome changes
    codes: list[CodeRow]


def branch_rows(branches) -> list[BranchRow]:
    """The per-branch breakdown: each branch's moved cells (unchanged ones are its total minus
    changed) and its groups gained and lost."""
    out = []
    for b in branches:
        moves = [c for m in matrices(b.transitions) for c in m.cells() if c.moved]
        out.append(BranchRow(b.branch_id or NONE_OUTCOME, int(b.total), int(b.changed), moves,
                             code_rows(b.code_changes)))
    return out


@dataclass(frozen=True)
class ImpactRow:
    """Customers per (branch, role[, reason]) as stored and with the candidate."""
    branch_id: str
    role: str
    reason: str
    baseline: int
    candidate: int

    @property
    def delta(self) -> int:
        return self.candidate - self.baseline


def impact_rows(rows) -> list[ImpactRow]:
    return sorted((ImpactRow(r.branch_id, r.role, getattr(r, "reason", ""), int(r.baseline), int(r.candidate))
                   for r in rows), key=lambda r: (r.branch_id, r.role, r.reason))


def simulated_outcomes(changes) -> list[dict]:
    """SimulatePopulation's changed items as the fields of kequn.common.v1.SimulatedOutcome, the way
    `kequn rules simulate --impact` sends them downstream (groups only when they changed)."""
    out = []
    for c in changes:
        codes = c.codes
        out.append({"customer_id": c.id, "tier": c.outcome.get("tier", ""), "groups_changed": bool(codes),
                    "segments": list(codes["segments"].codes) if "segments" in codes else [],
                    "flags": list(codes["flags"].codes) if "flags" in codes else []})
    return out


def snapshot_fields(snapshot: dict) -> list[tuple[str, str]]:
    """A stored input (a CustomerSnapshot as a dict of its set fields) as (field, value) lines in
    field-name order: amounts in fen also in yuan (exact), nested values as compact JSON."""
    rows = []
    for key in sorted(snapshot):
        value = snapshot[key]
        if key.endswith("_fen") and isinstance(value, (int, str)) and str(value).lstrip("-").isdigit():
            text = f"{int(value)} ({yuan(int(value))})"
        elif isinstance(value, (dict, list)):
            text = json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(", ", ": "))
        else:
            text = str(value)
        rows.append((key, text))
    return rows


# --- audit chain verification (Operations) ----------------------------------------------------

@dataclass(frozen=True)
class ChainRow:
    bucket: int  # -1: the legacy chain
    state: str  # "ok", "broken", "not_checked": the label chain_<state>
    checked: int
    length: int
    bad_id: str
    problem: str


@dataclass(frozen=True)
class ChainVerdict:
    rows: list[ChainRow]
    summary: str  # the label: verify_ok, verify_broken or verify_partial
    broken: int
    unchecked: int
    records: int
    record_count: int
    verified_at: object
    digest: str


_CHAIN_STATES = {1: "ok", 2: "broken", 3: "not_checked"}


def chain_verdict(reply) -> ChainVerdict:
    """A VerifyAuditChainResponse in the page's terms; broken chains first, so none hides below the fold."""
    rows = [ChainRow(c.bucket, _CHAIN_STATES.get(c.state, "not_checked"), c.records_checked, c.head_seq,
                     c.first_bad_event_id, c.problem) for c in reply.chains]
    rows.sort(key=lambda r: (r.state != "broken", r.bucket))
    broken = sum(r.state == "broken" for r in rows)
    unchecked = sum(r.state == "not_checked" for r in rows)
    summary = "verify_broken" if broken else "verify_partial" if unchecked or not reply.complete else "verify_ok"
    return ChainVerdict(rows, summary, broken, unchecked, reply.records_checked, reply.record_count,
                        reply.verified_at, reply.heads_digest)
