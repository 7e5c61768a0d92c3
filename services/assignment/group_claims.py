"""Use cases: group books (管群分包认领). A claim covers one customer group
within a scope (the claimer's unit and below, or the unit its selector's
home_branch_id names), narrowed by selector keys the policy declares; claims
on one group conflict only where they could cover the same customer."""
from __future__ import annotations

import json
import uuid
from collections.abc import Mapping

from sqlalchemy import Connection, insert, select

from services.common.errors import FailedPrecondition, InvalidArgument, NotFound

from . import domain as d
from . import store as t
from .base import ServiceBase, _record, _row

MAX_CODE = 64  # group codes and selector values are stored in 64-character columns


def customer_fields(row) -> dict[str, str]:
    """What a selector can name: a few customer columns and the group keys of the feed."""
    fields = json.loads(row.group_keys or "{}")
    fields.update({"tier": row.tier, "home_branch_id": row.home_branch_id, "card_level": row.card_level})
    return fields


class GroupClaimUseCases(ServiceBase):
    def _check_claim(self, group: str, selector: Mapping[str, str], policy: d.Policy) -> None:
        violations = []
        if not group:
            violations.append(("group", "required"))
        elif len(group) > MAX_CODE:
            violations.append(("group", f"at most {MAX_CODE} characters"))
        violations += d.check_selector(selector, policy.group_selectors)
        violations += [(f"selector.{k}", f"at most {MAX_CODE} characters")
                       for k, v in selector.items() if len(v) > MAX_CODE and k in policy.group_selectors]
        if violations:
            raise InvalidArgument(violations=violations)

    def _covered(self, conn: Connection, group: str, claims: list[tuple[dict, str]], org: d.OrgTree) -> list[str]:
        """Customer ids (sorted) any of `claims` (selector, scope) covers."""
        out = []
        for c in conn.execute(select(t.customers).where(t.customers.c.segments.like(f"%,{group},%"))
                              .order_by(t.customers.c.customer_id)):
            segments, fields = t.split_codes(c.segments), customer_fields(c)
            if any(d.claim_covers(group, sel, scope, segments, fields, c.home_branch_id, org) for sel, scope in claims):
                out.append(c.customer_id)
        return out

    def _refuse_if_locked(self, conn: Connection, org: d.OrgTree, scope: str, group: str) -> None:
        """A new claim moves customers into a group book: during an assessment
        period that is a book change like any other, so it waits for the
        period's end (BOOK_LOCKED). Retrying an existing claim changes nothing
        and stays allowed."""
        for p in conn.execute(self._in_force().order_by(t.lock_periods.c.id)):
            if org.within(scope, p.branch_id) or org.within(p.branch_id, scope):
                raise FailedPrecondition(
                    f"group books under {scope} are locked by period {p.period_id} on {p.branch_id} "
                    f"through {p.ends_on}; claim {group} after it ends",
                    reason="BOOK_LOCKED", metadata={"period_id": p.period_id, "branch_id": p.branch_id,
                                                    "ends_on": str(p.ends_on), "group": group})

    def claim_group(self, actor: str, staff_id: str, group: str, selector: Mapping[str, str], request_id: str
                    ) -> tuple[dict, int]:
        policy, _ = self.policy()
        selector = dict(sorted(selector.items()))
        self._check_claim(group, selector, policy)
        selector_json = json.dumps(selector, ensure_ascii=False)

        def tx(conn):
            t.serialize_claims(conn, group)
            member = self._staff(conn, staff_id)
            org = self._org(conn)
            scope = d.claim_scope(selector, member.branch_id)
            if scope not in org:
                raise NotFound(f"branch {scope[:64]} (selector.home_branch_id) not found")
            claim = None
            for e in conn.execute(select(t.group_claims).where(t.group_claims.c.group_code == group)
                                  .order_by(t.group_claims.c.claim_id)).all():
                theirs = json.loads(e.selector_json)
                if e.staff_id == staff_id and e.scope_branch_id == scope and e.selector_json == selector_json:
                    claim = _row(e)  # already this person's: a retry changes nothing
                    break
                if d.claims_overlap(selector, scope, theirs, e.scope_branch_id, org):
                    raise FailedPrecondition(
                        f"group {group} in {scope} {selector_json} overlaps the claim of {e.staff_id} "
                        f"({e.scope_branch_id} {e.selector_json})", reason="CONFLICT",
                        metadata={"claim_id": e.claim_id, "staff_id": e.staff_id, "scope_branch_id": e.scope_branch_id,
                                  "group": group})
            created = claim is None
            if created:
                self._refuse_if_locked(conn, org, scope, group)
                claim = {"claim_id": "GC-" + uuid.uuid4().hex[:20], "staff_id": staff_id, "group_code": group,
                         "selector_json": selector_json, "claimed_at": self.clock(), "claimed_by": actor,
                         "request_id": request_id or None, "scope_branch_id": scope}
                conn.execute(insert(t.group_claims).values(**claim))
            covered = len(self._covered(conn, group, [(selector, scope)], org))
            if created:
                self.audit(conn, actor, [_record("group.claim", f"group_claim/{claim['claim_id']}", None, claim)])
            return claim, covered
        return self._tx(tx)

    def get_group_book(self, staff_id: str, group: str, page_size: int, page_token: str
                       ) -> tuple[list[dict], int, list[str], str]:
        """(the person's claims on the group, customers covered, this page of them, next token)."""
        if not group:
            raise InvalidArgument(violations=[("group", "required")])
        limit, offset, token_scope = self._page(page_size, page_token, "assignment.GetGroupBook", staff_id, group)
        with self.engine.connect() as conn:
            self._staff(conn, staff_id)
            claims = [_row(r) for r in conn.execute(select(t.group_claims).where(
                t.group_claims.c.staff_id == staff_id, t.group_claims.c.group_code == group)
                .order_by(t.group_claims.c.claim_id))]
            covered = self._covered(conn, group, [(json.loads(c["selector_json"]), c["scope_branch_id"])
                                                  for c in claims], self._org(conn)) if claims else []
        return claims, len(covered), covered[offset:offset + limit], self._next(offset, limit, len(covered), token_scope)
