"""Book assignment (管户), pure: the org tree, book sizes, the planner, and the
checks a change request must pass. Standard library only."""
from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from services.common.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied

ADD, REMOVE, TRANSFER = "ADD", "REMOVE", "TRANSFER"
ACTIONS = (ADD, REMOVE, TRANSFER)
PENDING, APPROVED, REJECTED, EXPIRED, SUPERSEDED = "PENDING", "APPROVED", "REJECTED", "EXPIRED", "SUPERSEDED"
BRANCH, SUB_BRANCH, OUTLET = "BRANCH", "SUB_BRANCH", "OUTLET"
LEVELS = (BRANCH, SUB_BRANCH, OUTLET)
# Unplaced reasons (the proto names them).
NO_STAFF_OF_ROLE, ALL_BOOKS_FULL, NO_HOME_BRANCH = "NO_STAFF_OF_ROLE", "ALL_BOOKS_FULL", "NO_HOME_BRANCH"
SYSTEM = "system"
# Why a change request exists (ChangeRequest.cause).
MANUAL, TIER_CHANGE, GROUP_CHANGE, HOME_BRANCH_CHANGE = "MANUAL", "TIER_CHANGE", "GROUP_CHANGE", "HOME_BRANCH_CHANGE"
STAFF_DEACTIVATED, BOOK_OVER_MAX, PERIOD_END = "STAFF_DEACTIVATED", "BOOK_OVER_MAX", "PERIOD_END"
CAUSE_TEXT = {
    TIER_CHANGE: "the customer's tier changed during a lock period",
    GROUP_CHANGE: "the customer's groups or flags changed during a lock period",
    HOME_BRANCH_CHANGE: "the customer's home branch changed during a lock period",
    STAFF_DEACTIVATED: "the manager holding the customer was deactivated or moved during a lock period",
    BOOK_OVER_MAX: "the manager's book is over its max during a lock period",
    PERIOD_END: "an earlier lock period ended while another still locks this book",
}
# The keys a group claim's selector may name unless the policy declares its own.
DEFAULT_GROUP_SELECTORS = ("tier", "home_branch_id", "card_level", "payroll_employer_id", "merchant_market_id")
SCOPE_KEY = "home_branch_id"  # a selector naming it moves the claim's scope to that unit


# --- policy -------------------------------------------------------------------------------

@dataclass(frozen=True)
class BookSize:
    """0 = no limit. Fill everybody to `initial` first, then up to `max`."""

    initial: int
    max: int

    def phase(self, load: int) -> int:
        return 0 if self.initial == 0 or load < self.initial else 1

    def has_room(self, load: int) -> bool:
        return self.max == 0 or load < self.max


@dataclass(frozen=True)
class Policy:
    """The parameters of the active `assignment.policy` ruleset."""

    books: Mapping[str, BookSize]
    non_book_roles: frozenset[str] = frozenset()
    expiry: timedelta = timedelta(hours=72)
    # Seed 003: the 分行 approves; a bank may delegate to the 支行.
    approver_level: str = BRANCH
    # How many units above the nearest unit with staff of the role may take
    # a customer when all of that unit's books are full (0 = none).
    overflow_levels: int = 0
    group_selectors: tuple[str, ...] = DEFAULT_GROUP_SELECTORS

    @classmethod
    def from_parameters(cls, params: Mapping) -> "Policy":
        books = {str(role): BookSize(int(s.get("initial", 0)), int(s.get("max", 0)))
                 for role, s in (params.get("books") or {}).items()}
        return cls(books=books, non_book_roles=frozenset(map(str, params.get("non_book_roles") or ())),
                   expiry=timedelta(hours=int(params.get("change_request_expiry_hours", 72))),
                   approver_level=str(params.get("approver_level") or BRANCH),
                   overflow_levels=int(params.get("overflow_levels") or 0),
                   group_selectors=tuple(map(str, params.get("group_selectors") or DEFAULT_GROUP_SELECTORS)))

    @property
    def roles(self) -> frozenset[str]:
        return frozenset(self.books) | self.non_book_roles

    def holds_book(self, role: str) -> bool:
        return role in self.books


def policy_input(tier: str, has_personal_loan: bool, annual_card_spend_fen: int, annual_avg_aum_fen: int,
                 card_level: str) -> dict:
    """What the policy ruleset sees. Every field is always present: a rule
    condition on an absent field matches nothing, not even `ne`."""
    return {"tier": tier or "", "has_personal_loan": bool(has_personal_loan),
            "annual_card_spend_fen": int(annual_card_spend_fen or 0),
            "annual_avg_aum_fen": int(annual_avg_aum_fen or 0), "card_level": card_level or ""}


# --- org tree -----------------------------------------------------------------------------

class OrgTree:
    """Branch id -> parent id. `chain(b)` is b and its ancestors, nearest first."""

    def __init__(self, parents: Mapping[str, str | None], levels: Mapping[str, str] | None = None):
        self._parents = {b: (p or None) for b, p in parents.items()}
        self._levels = dict(levels or {})
        self._chains: dict[str, tuple[str, ...]] = {}

    def level(self, branch_id: str) -> str | None:
        return self._levels.get(branch_id)

    def __contains__(self, branch_id: object) -> bool:
        return branch_id in self._parents

    def parent(self, branch_id: str) -> str | None:
        return self._parents.get(branch_id)

    def chain(self, branch_id: str | None) -> tuple[str, ...]:
        if not branch_id or branch_id not in self._parents:
            return ()
        cached = self._chains.get(branch_id)
        if cached is None:
            seen: list[str] = []
            node: str | None = branch_id
            while node is not None and node in self._parents and node not in seen:  # cycle-safe
                seen.append(node)
                node = self._parents[node]
            cached = self._chains[branch_id] = tuple(seen)
        return cached

    def is_ancestor(self, ancestor: str, branch_id: str) -> bool:
        """Strictly above `branch_id`."""
        return ancestor in self.chain(branch_id)[1:]

    def within(self, branch_id: str, root: str) -> bool:
        """`branch_id` is `root` or below it."""
        return root in self.chain(branch_id)


def check_branch(branch_id: str, parent_id: str, level: str, org: OrgTree) -> None:
    """A new or replaced branch keeps the tree a tree with 分行 → 支行 → 网点 levels."""
    problems = []
    if not branch_id:
        problems.append(("branch_id", "required"))
    if level not in LEVELS:
        problems.append(("level", f"one of {', '.join(LEVELS)}"))
    if problems:
        raise InvalidArgument(violations=problems)
    if level == BRANCH:
        if parent_id:
            raise InvalidArgument(violations=[("parent_branch_id", "a 分行 (BRANCH) has no parent")])
        return
    if not parent_id:
        raise InvalidArgument(violations=[("parent_branch_id", f"required for level {level}")])
    if parent_id == branch_id or branch_id in org.chain(parent_id):
        raise InvalidArgument(violations=[("parent_branch_id", "would make a cycle")])
    if parent_id not in org:
        raise NotFound(f"parent branch {parent_id} not found")


def parent_level_ok(level: str, parent_level: str) -> bool:
    return LEVELS.index(parent_level) == LEVELS.index(level) - 1


# --- the planner --------------------------------------------------------------------------

@dataclass(frozen=True)
class StaffMember:
    staff_id: str
    branch_id: str
    role: str
    active: bool = True


@dataclass(frozen=True)
class CustomerNeed:
    customer_id: str
    home_branch_id: str
    roles: tuple[str, ...]


@dataclass(frozen=True)
class Move:
    """One change of one relationship: ADD (no from), REMOVE (no to) or TRANSFER."""

    customer_id: str
    role: str
    from_staff_id: str | None
    to_staff_id: str | None
    cause: str = ""  # set when the planner knows it (STAFF_DEACTIVATED, BOOK_OVER_MAX, ...)

    @property
    def action(self) -> str:
        if self.from_staff_id is None:
            return ADD
        return REMOVE if self.to_staff_id is None else TRANSFER


@dataclass(frozen=True)
class Unplaced:
    customer_id: str
    role: str
    reason: str
    branch_id: str
    tried: tuple[str, ...] = ()  # units tried, nearest first


@dataclass
class Plan:
    moves: list[Move] = field(default_factory=list)        # applied now
    suggestions: list[Move] = field(default_factory=list)  # locked: become suggested change requests
    unplaced: list[Unplaced] = field(default_factory=list)
    unchanged: int = 0
    loads: dict[str, int] = field(default_factory=dict)    # staff id -> book size after the plan

    def count(self, action: str) -> int:
        return sum(1 for m in self.moves if m.action == action)


def relationship_valid(role: str, staff: StaffMember | None, home_branch_id: str, needed: Iterable[str],
                       org: OrgTree) -> bool:
    """Still valid = still needed, with an active person of that role somewhere above the home outlet."""
    return (staff is not None and staff.active and staff.role == role and role in needed
            and staff.branch_id in org.chain(home_branch_id))


def plan_assignment(
    customers: Sequence[CustomerNeed],
    current: Mapping[str, Mapping[str, str]],
    staff: Sequence[StaffMember],
    loads: Mapping[str, int],
    org: OrgTree,
    policy: Policy,
    locked_branches: Iterable[str] = (),
) -> Plan:
    """Where every customer in scope belongs.

    `current`: customer -> role -> staff id (tier books of the customers in scope);
    `loads`: staff id -> customers in the book now (all customers, in scope or not).
    Keeps every valid relationship, releases the invalid ones (and the excess of
    a book over its max, highest customer ids first, when someone else has
    room), then places the missing roles in the nearest unit up from the home
    outlet that has someone of the role: the least filled person first (below
    `initial` before anyone goes beyond it), never over `max`; ties by staff id.
    When all of that unit's books are full, the units above it take the
    customer, up to `policy.overflow_levels` levels higher. Deterministic:
    customers and roles in sorted order. In a locked branch nothing is applied:
    what would change becomes a suggestion, and capacity is reserved for it so
    suggestions respect caps.
    """
    by_id = {s.staff_id: s for s in staff}
    locked = frozenset(locked_branches)
    load = {s.staff_id: int(loads.get(s.staff_id, 0)) for s in staff}
    plan = Plan(loads=load)

    def is_locked(c: CustomerNeed) -> bool:
        if not locked:
            return False
        branches = set(org.chain(c.home_branch_id))
        for staff_id in current.get(c.customer_id, {}).values():
            if staff_id in by_id:
                branches.update(org.chain(by_id[staff_id].branch_id))
        return not locked.isdisjoint(branches)

    ordered = sorted(customers, key=lambda c: c.customer_id)
    lock_of = {c.customer_id: is_locked(c) for c in ordered}
    # Pass 1: release what is no longer valid (locked books keep theirs until approved).
    released: dict[tuple[str, str], str] = {}
    cause_of: dict[tuple[str, str], str] = {}
    for c in ordered:
        for role, staff_id in sorted(current.get(c.customer_id, {}).items()):
            member = by_id.get(staff_id)
            if not relationship_valid(role, member, c.home_branch_id, c.roles, org):
                released[(c.customer_id, role)] = staff_id
                if member is None or not member.active or member.role != role:
                    cause_of[(c.customer_id, role)] = STAFF_DEACTIVATED
                if not lock_of[c.customer_id] and staff_id in load:
                    load[staff_id] -= 1
    # Books over their max (the policy lowered it): the excess in scope is moved
    # where there is room; without room anywhere it stays (never dropped).
    held: dict[str, list[tuple[str, str]]] = {}
    for c in ordered:
        for role, staff_id in current.get(c.customer_id, {}).items():
            if (c.customer_id, role) not in released:
                held.setdefault(staff_id, []).append((c.customer_id, role))
    excess: set[tuple[str, str]] = set()
    for staff_id, pairs in sorted(held.items()):
        size = policy.books.get(by_id[staff_id].role) if staff_id in by_id else None
        if size is None or not size.max or load[staff_id] <= size.max:
            continue
        for pair in sorted(pairs, reverse=True)[:load[staff_id] - size.max]:
            released[pair], cause_of[pair] = staff_id, BOOK_OVER_MAX
            excess.add(pair)
            if not lock_of[pair[0]]:
                load[staff_id] -= 1

    pools: dict[tuple[str, str], list[tuple[int, int, str]]] = {}
    members: dict[tuple[str, str], list[str]] = {}
    for s in sorted(staff, key=lambda s: s.staff_id):
        if s.active and policy.holds_book(s.role):
            members.setdefault((s.branch_id, s.role), []).append(s.staff_id)

    def pool(unit: str, role: str) -> list[tuple[int, int, str]]:
        heap = pools.get((unit, role))
        if heap is None:
            size = policy.books[role]
            heap = [(size.phase(load[sid]), load[sid], sid) for sid in members[(unit, role)]]
            heapq.heapify(heap)
            pools[(unit, role)] = heap
        return heap

    def record(c: CustomerNeed, move: Move) -> None:
        (plan.suggestions if lock_of[c.customer_id] else plan.moves).append(move)

    # Pass 2: place what is missing.
    for c in ordered:
        mine = current.get(c.customer_id, {})
        for role, staff_id in sorted(mine.items()):
            if role not in c.roles:  # no longer needed at all
                record(c, Move(c.customer_id, role, staff_id, None, cause_of.get((c.customer_id, role), "")))
        for role in sorted(set(c.roles)):
            key = (c.customer_id, role)
            old = released.get(key)
            if role in mine and old is None:
                plan.unchanged += 1
                continue
            chain = org.chain(c.home_branch_id)
            reason, tried, chosen = None, (), None
            if not chain:
                reason = NO_HOME_BRANCH
            elif role not in policy.books:
                reason, tried = NO_STAFF_OF_ROLE, chain
            else:
                units = [u for u in chain if (u, role) in members]
                if not units:
                    reason, tried = NO_STAFF_OF_ROLE, chain
                else:
                    reach = chain.index(units[0]) + policy.overflow_levels
                    size = policy.books[role]
                    for unit in units:
                        if chain.index(unit) > reach:
                            break
                        tried += (unit,)
                        heap = pool(unit, role)
                        _, current_load, candidate = heap[0]
                        if candidate != old and size.has_room(current_load):
                            chosen = candidate
                            load[chosen] = current_load + 1
                            heapq.heapreplace(heap, (size.phase(load[chosen]), load[chosen], chosen))
                            break
                    else:
                        reason = ALL_BOOKS_FULL
                    if chosen is None and reason is None:
                        reason = ALL_BOOKS_FULL
            if chosen is not None:
                record(c, Move(c.customer_id, role, old, chosen, cause_of.get(key, "")))
            elif key in excess:  # nowhere with room: it stays in the over-full book
                if not lock_of[c.customer_id]:
                    load[old] += 1
                plan.unchanged += 1
            else:
                plan.unplaced.append(Unplaced(c.customer_id, role, reason or ALL_BOOKS_FULL, c.home_branch_id,
                                              tuple(tried)))
                if old is not None:
                    record(c, Move(c.customer_id, role, old, None, cause_of.get(key, "")))
    return plan


# --- change requests ----------------------------------------------------------------------

@dataclass(frozen=True)
class CustomerView:
    customer_id: str
    home_branch_id: str
    roles: tuple[str, ...]
    managers: Mapping[str, str]  # role -> staff id (tier books)


def change_role(action: str, from_staff: StaffMember | None, to_staff: StaffMember | None) -> str:
    """The book a change request touches; checks the request's shape."""
    if action not in ACTIONS:
        raise InvalidArgument(violations=[("action", "one of ADD, REMOVE, TRANSFER")])
    need_from, need_to = action in (REMOVE, TRANSFER), action in (ADD, TRANSFER)
    violations = []
    if need_from != (from_staff is not None):
        violations.append(("from_staff_id", "required" if need_from else f"must be empty for {action}"))
    if need_to != (to_staff is not None):
        violations.append(("to_staff_id", "required" if need_to else f"must be empty for {action}"))
    if violations:
        raise InvalidArgument(violations=violations)
    if from_staff is not None and to_staff is not None and from_staff.role != to_staff.role:
        raise FailedPrecondition(f"cannot transfer from a {from_staff.role} to a {to_staff.role}", reason="ROLE_MISMATCH",
                                 metadata={"from_role": from_staff.role, "to_role": to_staff.role})
    return (to_staff or from_staff).role  # type: ignore[union-attr]


def check_change(action: str, customer: CustomerView, from_staff: StaffMember | None,
                 to_staff: StaffMember | None, org: OrgTree) -> str:
    """Whether the change makes sense for this customer now; returns the role. Run
    when the request is made and again, under locks, when it is approved."""
    role = change_role(action, from_staff, to_staff)
    held = customer.managers.get(role)
    if from_staff is not None and held != from_staff.staff_id:
        raise FailedPrecondition(f"{customer.customer_id} is not in the book of {from_staff.staff_id}", reason="CONFLICT",
                                 metadata={"customer_id": customer.customer_id, "staff_id": from_staff.staff_id,
                                           "held_by": held or ""})
    if action == ADD and held is not None:
        raise FailedPrecondition(f"{customer.customer_id} already has a {role}: {held}", reason="CONFLICT",
                                 metadata={"customer_id": customer.customer_id, "role": role, "held_by": held})
    if to_staff is not None:
        if not to_staff.active:
            raise FailedPrecondition(f"{to_staff.staff_id} is inactive", reason="STAFF_INACTIVE",
                                     metadata={"staff_id": to_staff.staff_id})
        if role not in customer.roles:
            raise FailedPrecondition(
                f"{customer.customer_id} needs {', '.join(customer.roles) or 'no manager'}, not a {role}",
                reason="ROLE_NOT_NEEDED", metadata={"customer_id": customer.customer_id, "role": role})
        if to_staff.branch_id not in org.chain(customer.home_branch_id):
            raise FailedPrecondition(f"{to_staff.staff_id} is not above {customer.customer_id}'s home outlet",
                                     reason="OUT_OF_SCOPE", metadata={"staff_id": to_staff.staff_id,
                                                                      "home_branch_id": customer.home_branch_id})
    return role


def check_room(staff: StaffMember, load: int, policy: Policy) -> None:
    size = policy.books.get(staff.role)
    if size is None or not size.has_room(load):
        raise FailedPrecondition(f"the book of {staff.staff_id} is full ({load} of {size.max if size else 0})",
                                 reason="BOOK_FULL", metadata={"staff_id": staff.staff_id, "size": load,
                                                               "limit": size.max if size else 0})


def check_approver(approver: str, approver_branch: str | None, maker: str, request_branch: str,
                   org: OrgTree, is_admin: bool = False, level: str = BRANCH) -> None:
    """Checker ≠ maker, and the checker sits above the customer's home unit at
    the policy's approver level or higher (seed 003: the 分行)."""
    if approver == maker:
        raise PermissionDenied("the maker of a change request cannot decide it", reason="SELF_APPROVAL",
                               metadata={"requested_by": maker})
    if is_admin:
        return
    meta = {"required_level": level, "branch_id": request_branch, "approver_branch_id": approver_branch or ""}
    if approver_branch is None:
        raise PermissionDenied(f"{approver} is not placed in the org tree as an approver; a {level} approver "
                               f"of {request_branch} must decide", reason="NOT_APPROVER", metadata=meta)
    approver_level = org.level(approver_branch)
    if approver_level is None or level not in LEVELS:  # no levels known: any unit strictly above
        ok = org.is_ancestor(approver_branch, request_branch)
    else:
        ok = (approver_branch in org.chain(request_branch)
              and LEVELS.index(approver_level) <= LEVELS.index(level))
    if not ok:
        raise PermissionDenied(f"{approver} ({approver_branch}) cannot decide for {request_branch}: the approver "
                               f"must sit at the {level} above it or higher", reason="NOT_APPROVER", metadata=meta)


def expired(expires_at: datetime, now: datetime) -> bool:
    return now >= expires_at


def claim_scope(selector: Mapping[str, str], claimer_branch: str) -> str:
    """The unit a claim covers (with everything below it): the selector's
    home_branch_id when it names one, else the claimer's own unit (seed 000:
    a group manager per outlet)."""
    return selector.get(SCOPE_KEY) or claimer_branch


def claim_covers(group: str, selector: Mapping[str, str], scope: str, segments: Iterable[str],
                 fields: Mapping[str, str], home_branch_id: str, org: OrgTree) -> bool:
    """A group claim covers a customer of that group whose home is within the
    claim's scope and whose values equal every other selector entry."""
    return (group in segments and org.within(home_branch_id, scope)
            and all(str(fields.get(k, "")) == v for k, v in selector.items() if k != SCOPE_KEY))


def claims_overlap(selector_a: Mapping[str, str], scope_a: str, selector_b: Mapping[str, str], scope_b: str,
                   org: OrgTree) -> bool:
    """Two claims on one group could cover the same customer: their scopes are
    nested and no key they both name has different values."""
    if not (org.within(scope_a, scope_b) or org.within(scope_b, scope_a)):
        return False
    return all(selector_b[k] == v for k, v in selector_a.items() if k != SCOPE_KEY and k in selector_b)


def check_selector(selector: Mapping[str, str], allowed: Iterable[str]) -> list[tuple[str, str]]:
    """Problems of a claim's selector against the policy's vocabulary."""
    allowed = tuple(allowed)
    problems = []
    for key, value in selector.items():
        if key not in allowed:
            problems.append((f"selector.{key[:64]}", f"unknown key; one of {', '.join(allowed)}"))
        elif not value:
            problems.append((f"selector.{key}", "must not be empty"))
    return problems


def lock_in_force(status: str, starts_on: str, ends_on: str, today: str) -> bool:
    """A period locks from starts_on through ends_on (YYYY-MM-DD, inclusive), while OPEN."""
    return status == "OPEN" and starts_on <= today <= ends_on


def locked_units(open_periods: Iterable[str], org: OrgTree) -> frozenset[str]:
    """A period locks its branch and everything below it: listed as the locked roots."""
    return frozenset(b for b in open_periods if b in org)


def page(items: Sequence, page_size: int, token: str, max_size: int = 1000) -> tuple[Sequence, str]:
    """Offset paging with an opaque decimal token."""
    if page_size < 0 or page_size > max_size:
        raise InvalidArgument(violations=[("page_size", f"must be between 0 and {max_size}")])
    try:
        start = int(token) if token else 0
    except ValueError:
        raise InvalidArgument(violations=[("page_token", "not a token this service issued")]) from None
    if start < 0:
        raise InvalidArgument(violations=[("page_token", "not a token this service issued")])
    size = page_size or 100
    chunk = items[start:start + size]
    return chunk, (str(start + size) if start + size < len(items) else "")


Clock = Callable[[], datetime]
