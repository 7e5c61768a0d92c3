"""`kequn rules ...`: validate and test offline; publish, list, show, diff,
roll back and export through the owning service's RuleStoreService, so the
publisher is the authenticated principal and the running service sees it."""
from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

import grpc

from kequn.rules.v1 import rules_pb2, rules_pb2_grpc
from services.common.client import dial
from services.common.config import service_target
from services.rules.document import DocumentSyntaxError, parse_yaml
from services.rules.engine import default_engine
from services.rules.examples import run_examples
from services.rules.validation import validate_text

from . import registry
from .tokens import token_for


# Who the rules commands act as: `--as NAME` picks a development token
# (`kequn up` ships rule_admin, rule_owner_1 and rule_owner_2); KEQUN_TOKEN wins.
_ACTING_AS = {"name": "rule_admin"}


def _stub(service: str) -> rules_pb2_grpc.RuleStoreServiceStub:
    return rules_pb2_grpc.RuleStoreServiceStub(dial(service_target(service), token_for(_ACTING_AS["name"])))


def _create_draft(path: Path, explicit_service: str | None, comment: str):
    """A DRAFT from a ruleset file on the service that serves its kind:
    (service, that service's stub, the new RulesetVersion)."""
    text = path.read_text(encoding="utf-8")
    try:
        raw = parse_yaml(text)
    except DocumentSyntaxError as exc:
        raise SystemExit(f"{path}: {exc}")
    service = explicit_service or registry.service_of_kind(str(raw.get("kind")))
    stub = _stub(service)
    created = stub.CreateRulesetVersion(rules_pb2.CreateRulesetVersionRequest(
        name=str(raw.get("name")), document=text, comment=comment)).ruleset_version
    return service, stub, created


def _service_for_name(name: str, explicit: str | None) -> str:
    if explicit:
        return explicit
    prefix = name.split(".", 1)[0]
    if prefix in registry.SERVICES:
        return prefix
    raise SystemExit(f"cannot tell which service owns {name!r}: pass --service")


def cmd_validate(args) -> int:
    kinds = registry.all_kinds()
    failed = 0
    for path in args.files:
        result = validate_text(Path(path).read_text(encoding="utf-8"), kinds, default_engine(),
                               run_examples_too=False)
        if result.ok:
            print(f"{path}: ok ({result.document.name}, kind {result.document.kind})")
        else:
            failed += 1
            for problem in result.problems:
                print(f"{path}: {problem.path or '<document>'}: {problem.message}")
    return 1 if failed else 0


def cmd_test(args) -> int:
    kinds = registry.all_kinds()
    failed = 0
    for path in args.files:
        text = Path(path).read_text(encoding="utf-8")
        result = validate_text(text, kinds, default_engine(), run_examples_too=False)
        if not result.ok:
            failed += 1
            for problem in result.problems:
                print(f"{path}: {problem.path or '<document>'}: {problem.message}")
            continue
        from services.rules.compiler import compile_document
        from services.rules.validation import list_keys
        doc = result.document
        loaded = default_engine().load(compile_document(doc), 0, list_keys(kinds.get(doc.kind)))
        try:
            results = run_examples(loaded, doc)
        finally:
            default_engine().unload(loaded)
        for r in results:
            print(f"{path}: {'PASS' if r.passed else 'FAIL'} {r.name}{'' if r.passed else ': ' + r.message}")
            failed += not r.passed
        print(f"{path}: {sum(r.passed for r in results)} passed, {sum(not r.passed for r in results)} failed")
    return 1 if failed else 0


def cmd_publish(args) -> int:
    service, stub, created = _create_draft(Path(args.file), args.service, args.comment)
    print(f"created {created.name} v{created.version} (DRAFT) on {service}")
    if args.draft:
        return 0
    try:
        published = stub.PublishRuleset(rules_pb2.PublishRulesetRequest(
            name=created.name, version=created.version, comment=args.comment))
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.FAILED_PRECONDITION and "four eyes" in (exc.details() or ""):
            print(f"{created.name} is released with four eyes: run\n  kequn rules release {created.name} "
                  f"--version {created.version}\nand have another rule owner approve it.", file=sys.stderr)
        raise
    print(f"published {created.name} v{created.version} (was v{published.previous_version}); "
          f"running {service} replicas pick it up within their poll interval")
    return 0


def cmd_list(args) -> int:
    for service in [args.service] if args.service else [s.name for s in registry.available_specs()]:
        try:
            response = _stub(service).ListRulesets(rules_pb2.ListRulesetsRequest(page_size=1000))
        except grpc.RpcError as exc:
            print(f"{service}: {exc.code().name} {exc.details()}", file=sys.stderr)
            continue
        for summary in response.rulesets:
            print(f"{service:<11} {summary.name:<32} {summary.kind:<24} active v{summary.active_version} "
                  f"latest v{summary.latest_version}{'  four eyes' if summary.four_eyes else ''}")
    return 0


def _get(service: str, name: str, version: int) -> rules_pb2.RulesetVersion:
    return _stub(service).GetRuleset(rules_pb2.GetRulesetRequest(name=name, version=version)).ruleset_version


def cmd_show(args) -> int:
    service = _service_for_name(args.name, args.service)
    if args.versions:
        response = _stub(service).ListRulesetVersions(rules_pb2.ListRulesetVersionsRequest(name=args.name))
        for v in response.versions:
            print(f"v{v.version:<4} {rules_pb2.RulesetStatus.Name(v.status)[15:]:<10}{' active' if v.active else '':<8}"
                  f"{v.created_by:<16} {v.checksum[:12]}  {v.comment}")
        return 0
    v = _get(service, args.name, args.version)
    print(f"# {v.name} v{v.version} {rules_pb2.RulesetStatus.Name(v.status)[15:]}"
          f"{' (active)' if v.active else ''} by {v.created_by}, checksum {v.checksum}")
    print(v.document)
    return 0


def cmd_diff(args) -> int:
    service = _service_for_name(args.name, args.service)
    a, b = _get(service, args.name, args.from_version), _get(service, args.name, args.to_version)
    sys.stdout.writelines(difflib.unified_diff(
        a.document.splitlines(keepends=True), b.document.splitlines(keepends=True),
        fromfile=f"{args.name}@v{a.version}", tofile=f"{args.name}@v{b.version}"))
    return 0


def cmd_rollback(args) -> int:
    service = _service_for_name(args.name, args.service)
    response = _stub(service).RollbackRuleset(rules_pb2.RollbackRulesetRequest(
        name=args.name, to_version=args.to, comment=args.comment))
    print(f"{args.name}: v{response.previous_version} → v{response.ruleset_version.version} active")
    return 0


_RELEASE_STATUS = {name: getattr(rules_pb2, f"RELEASE_STATUS_{name}")
                   for name in ("PENDING", "APPROVED", "REJECTED", "ACTIVE", "CANCELLED")}


def _release_line(r: rules_pb2.Release) -> str:
    when = r.effective_from.ToDatetime().isoformat() + "Z" if r.HasField("effective_from") else "on approval"
    return (f"{r.release_id}  {r.name} v{r.version}  {rules_pb2.ReleaseStatus.Name(r.status)[15:]:<9} "
            f"effective {when}  requested by {r.requested_by}"
            + (f", decided by {r.decided_by}" if r.decided_by else ""))


def cmd_release(args) -> int:
    """FILE: create a DRAFT from it first; NAME --version N: an existing DRAFT."""
    from datetime import datetime, timezone
    from google.protobuf.timestamp_pb2 import Timestamp
    target = Path(args.target)
    if target.is_file():
        service, _, created = _create_draft(target, args.service, args.comment)
        name, version = created.name, created.version
        print(f"created {name} v{version} (DRAFT) on {service}")
    else:
        if not args.version:
            raise SystemExit(f"{args.target} is not a file: give a ruleset name with --version N")
        name, version = args.target, args.version
        service = _service_for_name(name, args.service)
    effective = None
    if args.effective_from:
        moment = datetime.fromisoformat(args.effective_from.replace("Z", "+00:00"))
        effective = Timestamp()
        effective.FromDatetime(moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc))
    release = _stub(service).RequestRelease(rules_pb2.RequestReleaseRequest(
        name=name, version=version, effective_from=effective, comment=args.comment))
    print(f"requested: {_release_line(release)}")
    print(f"another rule owner approves with: kequn rules approve {release.release_id} --service {service}")
    return 0


def _decide(args, approve: bool) -> int:
    services = [args.service] if args.service else [s.name for s in registry.available_specs()]
    for service in services:  # a release id is unique: ask each service until one has it
        stub = _stub(service)
        request = rules_pb2.DecideReleaseRequest(release_id=args.release_id, comment=args.comment)
        try:
            release = (stub.ApproveRelease if approve else stub.RejectRelease)(request)
        except grpc.RpcError as exc:
            if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE) and len(services) > 1:
                continue
            raise
        print(_release_line(release))
        return 0
    raise SystemExit(f"release {args.release_id} not found on {', '.join(services)}")


def cmd_approve(args) -> int:
    return _decide(args, True)


def cmd_reject(args) -> int:
    return _decide(args, False)


def cmd_releases(args) -> int:
    services = [args.service] if args.service else (
        [_service_for_name(args.name, None)] if args.name else [s.name for s in registry.available_specs()])
    for service in services:
        try:
            response = _stub(service).ListReleases(rules_pb2.ListReleasesRequest(
                name=args.name or "", status=_RELEASE_STATUS.get(args.status or "", 0), page_size=1000))
        except grpc.RpcError as exc:
            print(f"{service}: {exc.code().name} {exc.details()}", file=sys.stderr)
            continue
        for release in response.releases:
            print(f"{service:<11} {_release_line(release)}")
    return 0


def _print_matrix(title: str, transitions, code_changes, out) -> None:
    """A migration matrix per scalar outcome (rows: from, columns: to) and
    the codes gained and lost per list outcome."""
    by_key: dict[str, dict[tuple[str, str], int]] = {}
    for t in transitions:
        by_key.setdefault(t.outcome_key, {})[(t.from_outcome, t.to_outcome)] = t.count
    for key, cells in sorted(by_key.items()):
        rows = sorted({f for f, _ in cells})
        cols = sorted({to for _, to in cells})
        width = max([len(key) + 8, *(len(r or "-") for r in rows)]) + 2
        colw = max([8, *(len(c or "-") + 2 for c in cols)])
        print(f"\n{title} {key}: from (active) \u2193 / to (candidate) \u2192", file=out)
        print(" " * width + "".join(f"{c or '-':>{colw}}" for c in cols), file=out)
        for r in rows:
            print(f"{r or '-':<{width}}" + "".join(f"{cells.get((r, c), 0) or '.':>{colw}}" for c in cols), file=out)
    if code_changes:
        print(f"\n{title} groups and flags:", file=out)
        for c in code_changes:
            print(f"  {c.outcome_key:<10} {c.code:<24} +{c.gained:<8} -{c.lost:<8}", file=out)


def cmd_simulate(args) -> int:
    if not args.population:
        raise SystemExit("give --population: the candidate against every stored customer")
    service, stub, created = _create_draft(Path(args.file), args.service, args.comment or "simulation candidate")
    print(f"created {created.name} v{created.version} (DRAFT) on {service}; simulating...", file=sys.stderr)
    result, changes = None, []
    for message in stub.SimulatePopulation(rules_pb2.SimulatePopulationRequest(
            name=created.name, version=created.version, branch_id=args.branch or "", include_changes=args.impact)):
        if message.done:
            result = message.result
        elif message.changes:
            changes.extend(message.changes)
        else:
            print(f"  {message.evaluated:,} / {message.total:,}", file=sys.stderr)
    if result is None:
        raise SystemExit("the simulation ended without a result")
    print(f"{created.name}: candidate v{result.candidate_version} against active v{result.active_version}: "
          f"{result.total:,} evaluated, {result.changed:,} changed, {result.skipped:,} skipped "
          f"({result.elapsed_ms / 1000:.1f} s)")
    _print_matrix("all branches,", result.transitions, result.code_changes, sys.stdout)
    if args.by_branch:
        for b in result.branches:
            print(f"\n== branch {b.branch_id or '-'}: {b.total:,} evaluated, {b.changed:,} changed")
            _print_matrix(f"branch {b.branch_id or '-'},", b.transitions, b.code_changes, sys.stdout)
    if not args.no_csv:
        import csv
        args.csv = args.csv or f"population-{created.name}-v{created.version}.csv"
        with open(args.csv, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["branch_id", "outcome_key", "from", "to", "code", "count", "gained", "lost",
                             "example_ids"])
            for branch_id, transitions, codes in [("*", result.transitions, result.code_changes)] + [
                    (b.branch_id, b.transitions, b.code_changes) for b in result.branches]:
                for t in transitions:
                    writer.writerow([branch_id, t.outcome_key, t.from_outcome, t.to_outcome, "", t.count, "", "",
                                     " ".join(t.example_ids)])
                for c in codes:
                    writer.writerow([branch_id, c.outcome_key, "", "", c.code, "", c.gained, c.lost,
                                     " ".join([*c.gained_example_ids, *c.lost_example_ids])])
        print(f"\nwrote {args.csv} (branch_id * = all branches)")
    if args.impact:
        _print_impact(service, changes)
    return 0


def _print_impact(service: str, changes) -> None:
    """Downstream: the changed customers' simulated outcomes to assignment
    (books) and benefits (entitlements, budgets), each in a dry run."""
    from kequn.assignment.v1 import assignment_pb2, assignment_pb2_grpc
    from kequn.benefits.v1 import benefits_pb2, benefits_pb2_grpc
    from kequn.common.v1 import common_pb2
    if service != "tiering":
        print("\n(downstream impact is reported for tiering candidates only)")
        return
    outcomes = [common_pb2.SimulatedOutcome(
        customer_id=c.id, tier=c.outcome.get("tier", ""), groups_changed=bool(c.codes),
        segments=c.codes["segments"].codes if "segments" in c.codes else [],
        flags=c.codes["flags"].codes if "flags" in c.codes else []) for c in changes]
    print(f"\n== downstream impact of the {len(outcomes):,} customers whose outcome changes")

    def batches(request_type):
        for start in range(0, len(outcomes), 1000):
            yield request_type(outcomes=outcomes[start:start + 1000])
    token = token_for(_ACTING_AS["name"])
    try:
        books = assignment_pb2_grpc.AssignmentServiceStub(dial(service_target("assignment"), token)) \
            .SimulateTierChanges(batches(assignment_pb2.SimulateTierChangesRequest))
        print(f"\nbooks (assignment dry run; {books.simulated:,} customers known, {books.unknown:,} not yet):")
        for title, rows in (("unplaced", books.unplaced), ("need a new manager", books.new_manager)):
            print(f"  {title}: branch / role{' / reason' if title == 'unplaced' else ''}: as stored -> with candidate")
            for r in rows:
                print(f"    {r.branch_id:<12} {r.role:<16} {r.reason:<16} {r.baseline:>8,} -> {r.candidate:,}")
        for b in books.full_books:
            print(f"  full book: {b.staff_id} ({b.role}, {b.branch_id}) {b.load}/{b.max}, {b.waiting:,} waiting")
    except grpc.RpcError as exc:
        print(f"  assignment: {exc.code().name} {exc.details()}", file=sys.stderr)
    try:
        benefits = benefits_pb2_grpc.BenefitsServiceStub(dial(service_target("benefits"), token)) \
            .SimulateTierChanges(batches(benefits_pb2.SimulateTierChangesRequest))
        print(f"\nbenefits ({benefits.simulated:,} customers): entitlements gained / lost")
        for b in benefits.benefits:
            print(f"    {b.benefit_id:<24} +{b.gained:<8,} -{b.lost:,}")
        for b in benefits.budgets:
            print(f"  budget {b.group:<16} {b.period:<8} needs {b.needed_fen / 100:>14,.2f} CNY "
                  f"(left {b.remaining_fen / 100:,.2f})")
    except grpc.RpcError as exc:
        print(f"  benefits: {exc.code().name} {exc.details()}", file=sys.stderr)


def cmd_policy(args) -> int:
    service = _service_for_name(args.name, args.service)
    response = _stub(service).SetReleasePolicy(rules_pb2.SetReleasePolicyRequest(
        name=args.name, four_eyes=args.four_eyes == "on", comment=args.comment))
    print(f"{response.name}: four eyes {'on' if response.four_eyes else 'off'}")
    return 0


def cmd_export(args) -> int:
    service = _service_for_name(args.name, args.service)
    document = _get(service, args.name, args.version).document
    if args.output:
        Path(args.output).write_text(document, encoding="utf-8")
    else:
        sys.stdout.write(document)
    return 0


def register(subparsers) -> None:
    rules = subparsers.add_parser("rules", help="write, test and publish rule changes")
    sub = rules.add_subparsers(dest="rules_command", required=True)

    p = sub.add_parser("validate", help="check documents offline (schema, fields, bands, engine limits)")
    p.add_argument("files", nargs="+")
    p.set_defaults(func=cmd_validate)
    p = sub.add_parser("test", help="run the documents' examples offline")
    p.add_argument("files", nargs="+")
    p.set_defaults(func=cmd_test)

    def remote(name: str, help_text: str, func) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--service", choices=registry.SERVICES)
        p.add_argument("--as", dest="acting_as", default="rule_admin",
                       help="act as this development principal (e.g. rule_owner_2); KEQUN_TOKEN wins")

        def run(args, func=func):
            _ACTING_AS["name"] = args.acting_as
            return func(args)
        p.set_defaults(func=run)
        return p

    p = remote("publish", "create a version from FILE and publish it", cmd_publish)
    p.add_argument("file")
    p.add_argument("--comment", "-m", default="")
    p.add_argument("--draft", action="store_true", help="create the DRAFT only")
    remote("list", "rulesets and their active versions", cmd_list)
    p = remote("show", "a version's document (0 = active)", cmd_show)
    p.add_argument("name")
    p.add_argument("--version", type=int, default=0)
    p.add_argument("--versions", action="store_true", help="list all versions instead")
    p = remote("diff", "unified diff between two versions", cmd_diff)
    p.add_argument("name")
    p.add_argument("from_version", type=int)
    p.add_argument("to_version", type=int, nargs="?", default=0)
    p = remote("rollback", "re-activate an earlier version", cmd_rollback)
    p.add_argument("name")
    p.add_argument("--to", type=int, required=True)
    p.add_argument("--comment", "-m", default="")
    p = remote("release", "ask for a version (FILE, or NAME --version N) to be released; four eyes",
               cmd_release)
    p.add_argument("target", help="a YAML file (a new DRAFT is created) or a ruleset name")
    p.add_argument("--version", type=int, default=0)
    p.add_argument("--effective-from", help="ISO 8601 instant, e.g. 2027-01-01T00:00:00+08:00 (default: on approval)")
    p.add_argument("--comment", "-m", default="")
    p = remote("approve", "approve a release (not your own, not of a version you wrote)", cmd_approve)
    p.add_argument("release_id")
    p.add_argument("--comment", "-m", default="")
    p = remote("reject", "reject a pending release, or cancel an approved one before it takes effect", cmd_reject)
    p.add_argument("release_id")
    p.add_argument("--comment", "-m", default="")
    p = remote("releases", "releases and their status", cmd_releases)
    p.add_argument("name", nargs="?")
    p.add_argument("--status", choices=sorted(_RELEASE_STATUS))
    p = remote("simulate", "a candidate FILE against the service's whole stored population", cmd_simulate)
    p.add_argument("file")
    p.add_argument("--population", action="store_true", help="every stored customer's latest snapshot")
    p.add_argument("--branch", help="only this branch's customers")
    p.add_argument("--by-branch", action="store_true", help="print the matrix of every branch too")
    p.add_argument("--csv", help="where to write every cell (overall and per branch) with example ids "
                                 "(default: population-NAME-vN.csv here)")
    p.add_argument("--no-csv", action="store_true", help="print only")
    p.add_argument("--impact", action="store_true",
                   help="also what the changes do downstream: books (assignment) and benefits, in dry runs")
    p.add_argument("--comment", "-m", default="")
    p = remote("policy", "set a ruleset's release policy (admin only)", cmd_policy)
    p.add_argument("name")
    p.add_argument("--four-eyes", choices=["on", "off"], required=True)
    p.add_argument("--comment", "-m", required=True)
    p = remote("export", "write a version's YAML", cmd_export)
    p.add_argument("name")
    p.add_argument("--version", type=int, default=0)
    p.add_argument("--output", "-o")


