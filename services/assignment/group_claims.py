"""Use case: group books (管群分包认领)."""
from __future__ import annotations

import json
import uuid
from collections.abc import Mapping

from sqlalchemy import insert, select

from services.common.errors import FailedPrecondition, InvalidArgument

from . import domain as d
from . import store as t
from .base import GROUP_SELECTOR_FIELDS, ServiceBase, _record, _row


class GroupClaimUseCases(ServiceBase):
    def claim_group(self, actor: str, staff_id: str, group: str, selector: Mapping[str, str], request_id: str
                    ) -> tuple[dict, int]:
        violations = []
        if not group:
            violations.append(("group", "required"))
        for key in selector:
            if key not in GROUP_SELECTOR_FIELDS:
                violations.append((f"selector.{key}", f"unknown field; one of {', '.join(GROUP_SELECTOR_FIELDS)}"))
        if violations:
            raise InvalidArgument(violations=violations)
        selector_json = json.dumps(dict(sorted(selector.items())), ensure_ascii=False)

        def tx(conn):
            member = self._staff(conn, staff_id)
            existing = conn.execute(select(t.group_claims).where(
                t.group_claims.c.group_code == group, t.group_claims.c.selector_json == selector_json)).first()
            if existing is not None:
                if existing.staff_id != staff_id:
                    raise FailedPrecondition(f"group {group} {selector_json} is already claimed by "
                                             f"{existing.staff_id}")
                claim = _row(existing)
            else:
                claim = {"claim_id": "GC-" + uuid.uuid4().hex[:20], "staff_id": staff_id, "group_code": group,
                         "selector_json": selector_json, "claimed_at": self.clock(), "claimed_by": actor,
                         "request_id": request_id or None}
                conn.execute(insert(t.group_claims).values(**claim))
            org = self._org(conn)
            covered = 0
            for c in conn.execute(select(t.customers).where(t.customers.c.segments.like(f"%,{group},%"))):
                fields = {k: getattr(c, k) for k in GROUP_SELECTOR_FIELDS}
                covered += d.claim_covers(group, selector, member.branch_id, t.split_codes(c.segments), fields,
                                          c.home_branch_id, org)
            if existing is None:
                self.audit(conn, actor, [_record("group.claim", f"group_claim/{claim['claim_id']}", None, claim)])
            return claim, covered
        return self._tx(tx)

