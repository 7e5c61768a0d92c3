"""`kequn assignment import-org FILE` / `kequn assignment import-staff FILE`: bulk
CSV import through the running assignment server (so every row is checked and
audited like an UpsertBranch / UpsertStaff call, under the caller's token).

org CSV:   branch_id,parent_branch_id,name,level     (level: BRANCH | SUB_BRANCH | OUTLET)
staff CSV: staff_id,branch_id,role,active,name       (active: true/false, default true)
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path

import grpc

from services.common.client import dial
from services.common.config import service_target

ORG_COLUMNS = ("branch_id", "parent_branch_id", "name", "level")
STAFF_COLUMNS = ("staff_id", "branch_id", "role", "active", "name")
LEVEL_ORDER = ("BRANCH", "SUB_BRANCH", "OUTLET")


class CsvError(ValueError):
    pass


def read_rows(path: Path, required: tuple[str, ...]) -> list[tuple[int, dict]]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        missing = [c for c in required if c not in (reader.fieldnames or ())]
        if missing:
            raise CsvError(f"{path}: missing column(s) {', '.join(missing)}")
        return [(i, {k: (v or "").strip() for k, v in row.items() if k}) for i, row in enumerate(reader, start=2)]


def org_requests(rows):
    """Parents before children (by level), so a file in any order imports."""
    from kequn.assignment.v1 import assignment_pb2 as pb
    problems = [f"line {n}: level {r['level']!r} is not one of {', '.join(LEVEL_ORDER)}"
                for n, r in rows if r["level"] not in LEVEL_ORDER]
    if problems:
        raise CsvError("\n".join(problems))
    ordered = sorted(rows, key=lambda nr: (LEVEL_ORDER.index(nr[1]["level"]), nr[0]))
    return [(n, pb.Branch(branch_id=r["branch_id"], parent_branch_id=r["parent_branch_id"], name=r["name"],
                          level=getattr(pb, "BRANCH_LEVEL_" + r["level"]))) for n, r in ordered]


def staff_requests(rows):
    from kequn.assignment.v1 import assignment_pb2 as pb
    problems, out = [], []
    for n, r in rows:
        active = (r.get("active") or "true").lower()
        if active not in ("true", "false", "1", "0", "yes", "no"):
            problems.append(f"line {n}: active {active!r} is not true/false")
            continue
        out.append((n, pb.Staff(staff_id=r["staff_id"], branch_id=r["branch_id"], role=r["role"],
                                active=active in ("true", "1", "yes"), name=r.get("name", ""))))
    if problems:
        raise CsvError("\n".join(problems))
    return out


def _import(args, columns, to_requests, method: str) -> int:
    from kequn.assignment.v1 import assignment_pb2_grpc
    try:
        requests = to_requests(read_rows(Path(args.file), columns))
    except (OSError, CsvError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    token = args.token or os.environ.get("KEQUN_TOKEN")
    with dial(args.target or service_target("assignment"), token) as channel:
        call = getattr(assignment_pb2_grpc.AssignmentServiceStub(channel), method)
        created = updated = failed = 0
        for line, request in requests:
            try:
                answer = call(request, timeout=30)
            except grpc.RpcError as exc:
                failed += 1
                print(f"line {line}: {exc.code().name}: {exc.details()}", file=sys.stderr)
                continue
            created += answer.created
            updated += not answer.created
    print(f"{created} created, {updated} updated, {failed} failed")
    return 1 if failed else 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("assignment", help="book assignment: bulk imports")
    commands = parser.add_subparsers(dest="assignment_command", required=True)
    for name, help_text, columns, to_requests, method in (
            ("import-org", "import branches from CSV (" + ",".join(ORG_COLUMNS) + ")", ORG_COLUMNS,
             org_requests, "UpsertBranch"),
            ("import-staff", "import staff from CSV (" + ",".join(STAFF_COLUMNS) + ")", STAFF_COLUMNS[:3],
             staff_requests, "UpsertStaff")):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("file")
        sub.add_argument("--target", help="assignment server host:port (default: KEQUN_ASSIGNMENT_TARGET)")
        sub.add_argument("--token", help="bearer token (default: $KEQUN_TOKEN)")
        sub.set_defaults(func=lambda args, c=columns, f=to_requests, m=method: _import(args, c, f, m))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="kequn")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
