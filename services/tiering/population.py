"""Tiering's population for SimulatePopulation: every customer's latest
stored decision input (inputs.py), as the facts the tier and groups rulesets
see, grouped by the customer's home branch. Read-only; travels to the
simulation worker processes (a URL, no open connection)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

from sqlalchemy import text

from .domain import project, rule_facts
from .inputs import FORMAT, SnapshotValues

CHUNK = 2000


def _latest(where: str) -> str:
    # The latest decision of each customer, in partitions by its seq.
    return ("SELECT d.customer_id, d.home_branch_id, d.input FROM tiering_decisions d"
            " JOIN (SELECT max(seq) AS seq FROM tiering_decisions GROUP BY customer_id) m ON d.seq = m.seq"
            f" WHERE d.seq % :parts = :part{where}")


def facts_of(input_text: str | None, home_branch_id: str, fields: frozenset[str]) -> Mapping[str, Any] | None:
    """The facts the decision's rulesets saw, projected on ``fields``; None
    for a decision stored without its input (before tiering_0005)."""
    if not input_text:
        return None
    fmt, snapshot, *_ = json.loads(input_text)
    if fmt != FORMAT:
        return None
    return project(rule_facts(SnapshotValues._make(snapshot), home_branch_id), fields)


@dataclass(frozen=True)
class TieringPopulation:
    database_url: str

    def _engine(self):
        from services.common.db import make_engine
        return make_engine(self.database_url)

    def count(self, branch_id: str = "") -> int:
        engine = self._engine()
        try:
            with engine.connect() as conn:
                query = "SELECT count(*) FROM tiering_customers" + (" WHERE home_branch_id = :b" if branch_id else "")
                return int(conn.execute(text(query), {"b": branch_id}).scalar_one())
        finally:
            engine.dispose()

    def items(self, branch_id: str, part: int, parts: int,
              fields: frozenset[str]) -> Iterator[Sequence[tuple[str, str, Mapping[str, Any] | None]]]:
        engine = self._engine()
        try:
            with engine.connect() as conn:
                result = conn.execution_options(stream_results=True, yield_per=CHUNK).execute(
                    text(_latest(" AND d.home_branch_id = :b" if branch_id else "")),
                    {"parts": parts, "part": part, "b": branch_id})
                for rows in result.partitions(CHUNK):
                    yield [(cid, home, facts_of(raw, home, fields)) for cid, home, raw in rows]
        finally:
            engine.dispose()
