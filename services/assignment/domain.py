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

    @classmethod
    def from_parameters(cls, params: Mapping) -> "Policy":
        books = {str(role): BookSize(int(s.get("initial", 0)), int(s.get("max", 0)))
                 for role, s in (params.get("books") or {}).items()}
        return cls(books=books, non_book_roles=frozenset(map(str, params.get("non_book_roles") or ())),
                   expiry=timedelta(hours=int(params.get("change_request_expiry_hours", 72))))

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

    def __init__(self, parents: Mapping[str, str | None]):
        self._parents = {b: (p or None) for b, p in parents.items()}
        self._chains: dict[str, tuple[str, ...]] = {}

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
    Keeps every valid relationship, releases the invalid ones, then places the
    missing roles in the nearest unit up from the home outlet that has someone of
    the role: the least filled person first (below `initial` before anyone goes
    beyond it), never over `max`; ties by staff id. Deterministic: customers and
    roles in sorted order. In a locked branch nothing is applied: what would change
    becomes a suggestion, and capacity is reserved for it so suggestions respect caps.
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
    for c in ordered:
        for role, staff_id in sorted(current.get(c.customer_id, {}).items()):
            if not relationship_valid(role, by_id.get(staff_id), c.home_branch_id, c.roles, org):
                released[(c.customer_id, role)] = staff_id
                if not lock_of[c.customer_id] and staff_id in load:
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
                record(c, Move(c.customer_id, role, staff_id, None))
        for role in sorted(set(c.roles)):
            old = released.get((c.customer_id, role))
            if role in mine and old is None:
                plan.unchanged += 1
                continue
            chain = org.chain(c.home_branch_id)
            reason = None
            if not chain:
                reason = NO_HOME_BRANCH
            elif role not in policy.books:
                reason = NO_STAFF_OF_ROLE
            else:
                unit = next((u for u in chain if (u, role) in members), None)
                if unit is None:
                    reason = NO_STAFF_OF_ROLE
                else:
                    heap = pool(unit, role)
                    _, current_load, chosen = heap[0]
                    size = policy.books[role]
                    if not size.has_room(current_load):
                        reason = ALL_BOOKS_FULL
                    else:
                        load[chosen] = current_load + 1
                        heapq.heapreplace(heap, (size.phase(load[chosen]), load[chosen], chosen))
                        record(c, Move(c.customer_id, role, old, chosen))
            if reason is not None:
                plan.unplaced.append(Unplaced(c.customer_id, role, reason, c.home_branch_id))
                if old is not None:
                    record(c, Move(c.customer_id, role, old, None))
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
        raise FailedPrecondition(f"cannot transfer from a {from_staff.role} to a {to_staff.role}")
    return (to_staff or from_staff).role  # type: ignore[union-attr]


def check_change(action: str, customer: CustomerView, from_staff: StaffMember | None,
                 to_staff: StaffMember | None, org: OrgTree) -> str:
    """Whether the change makes sense for this customer now; returns the role. Run
    when the request is made and again, under locks, when it is approved."""
    role = change_role(action, from_staff, to_staff)
    held = customer.managers.get(role)
    if from_staff is not None and held != from_staff.staff_id:
        raise FailedPrecondition(f"{customer.customer_id} is not in the book of {from_staff.staff_id}")
    if action == ADD and held is not None:
        raise FailedPrecondition(f"{customer.customer_id} already has a {role}: {held}")
    if to_staff is not None:
        if not to_staff.active:
            raise FailedPrecondition(f"{to_staff.staff_id} is inactive")
        if role not in customer.roles:
            raise FailedPrecondition(
                f"{customer.customer_id} needs {', '.join(customer.roles) or 'no manager'}, not a {role}")
        if to_staff.branch_id not in org.chain(customer.home_branch_id):
            raise FailedPrecondition(f"{to_staff.staff_id} is not above {customer.customer_id}'s home outlet")
    return role


def check_room(staff: StaffMember, load: int, policy: Policy) -> None:
    size = policy.books.get(staff.role)
    if size is None or not size.has_room(load):
        raise FailedPrecondition(f"the book of {staff.staff_id} is full ({load} of {size.max if size else 0})")


def check_approver(approver: str, approver_branch: str | None, maker: str, request_branch: str,
                   org: OrgTree, is_admin: bool = False) -> None:
    """Checker ≠ maker, and the checker belongs to a branch above the customer's."""
    if approver == maker:
        raise PermissionDenied("the maker of a change request cannot decide it")
    if is_admin:
        return
    if approver_branch is None:
        raise PermissionDenied(f"{approver} is not placed in the org tree as an approver")
    if not org.is_ancestor(approver_branch, request_branch):
        raise PermissionDenied(f"{approver} ({approver_branch}) is not of a parent branch of {request_branch}")


def expired(expires_at: datetime, now: datetime) -> bool:
    return now >= expires_at


def claim_covers(group: str, selector: Mapping[str, str], claimer_branch: str, segments: Iterable[str],
                 fields: Mapping[str, str], home_branch_id: str, org: OrgTree) -> bool:
    """A group claim covers a customer of that group, under the claimer's branch,
    whose fields equal every selector entry."""
    return (group in segments and org.within(home_branch_id, claimer_branch)
            and all(str(fields.get(k, "")) == v for k, v in selector.items()))


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
