"""PopulationResult <-> kequn.rules.v1 messages (the protobuf edge of population.py)."""
from __future__ import annotations

from kequn.rules.v1 import rules_pb2

from .population import ALL, PopulationResult, Tally


def progress_message(evaluated: int, total: int) -> rules_pb2.SimulationProgress:
    return rules_pb2.SimulationProgress(evaluated=evaluated, total=total, done=False)


def _transitions(tally: Tally, scope: str | None) -> list[rules_pb2.Transition]:
    cells = sorted((key, b, a, n) for (s, key, b, a), n in tally.cells.items() if s == scope)
    return [rules_pb2.Transition(outcome_key=key, from_outcome=b, to_outcome=a, count=n,
                                 example_ids=tally.examples.get((scope, key, b, a), []))
            for key, b, a, n in cells]


def _code_changes(tally: Tally, scope: str | None) -> list[rules_pb2.CodeChange]:
    rows: dict[tuple[str, str], dict] = {}
    for (s, key, code, how), n in tally.codes.items():
        if s == scope:
            row = rows.setdefault((key, code), {"gained": 0, "lost": 0})
            row[how] = n
    return [rules_pb2.CodeChange(outcome_key=key, code=code, gained=row["gained"], lost=row["lost"],
                                 gained_example_ids=tally.examples.get((scope, key, code, "gained"), []),
                                 lost_example_ids=tally.examples.get((scope, key, code, "lost"), []))
            for (key, code), row in sorted(rows.items())]


CHANGES_PER_MESSAGE = 1000


def changes_messages(result: PopulationResult):
    """The changed items (include_changes), in messages before the result."""
    t = result.tally
    total = t.total + t.skipped
    for start in range(0, len(t.changes), CHANGES_PER_MESSAGE):
        items = []
        for item_id, branch, outcome in t.changes[start:start + CHANGES_PER_MESSAGE]:
            item = rules_pb2.SimulatedItem(id=item_id, branch_id=branch)
            for key, value in outcome.items():
                if isinstance(value, list):
                    item.codes[key].codes.extend(sorted(map(str, value)))
                elif value is not None:
                    item.outcome[key] = str(value)
            items.append(item)
        yield rules_pb2.SimulationProgress(evaluated=total, total=total, done=False, changes=items)


def simulation_message(result: PopulationResult) -> rules_pb2.PopulationSimulation:
    t = result.tally
    branches = [rules_pb2.BranchSimulation(branch_id=branch, total=counts[0], changed=counts[1],
                                           transitions=_transitions(t, branch), code_changes=_code_changes(t, branch))
                for branch, counts in sorted(t.branches.items())]
    return rules_pb2.PopulationSimulation(
        active_version=result.active_version, candidate_version=result.candidate_version, total=t.total,
        changed=t.changed, transitions=_transitions(t, ALL), code_changes=_code_changes(t, ALL), branches=branches,
        skipped=t.skipped, elapsed_ms=int(result.elapsed_seconds * 1000))


def result_message(result: PopulationResult) -> rules_pb2.SimulationProgress:
    return rules_pb2.SimulationProgress(evaluated=result.tally.total + result.tally.skipped,
                                        total=result.tally.total + result.tally.skipped, done=True,
                                        result=simulation_message(result))
