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


def _stub(service: str) -> rules_pb2_grpc.RuleStoreServiceStub:
    return rules_pb2_grpc.RuleStoreServiceStub(dial(service_target(service), token_for("rule_admin")))


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
    text = Path(args.file).read_text(encoding="utf-8")
    try:
        raw = parse_yaml(text)
    except DocumentSyntaxError as exc:
        raise SystemExit(f"{args.file}: {exc}")
    service = args.service or registry.service_of_kind(str(raw.get("kind")))
    stub = _stub(service)
    created = stub.CreateRulesetVersion(rules_pb2.CreateRulesetVersionRequest(
        name=str(raw.get("name")), document=text, comment=args.comment)).ruleset_version
    print(f"created {created.name} v{created.version} (DRAFT) on {service}")
    if args.draft:
        return 0
    published = stub.PublishRuleset(rules_pb2.PublishRulesetRequest(
        name=created.name, version=created.version, comment=args.comment))
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
                  f"latest v{summary.latest_version}")
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
        p.set_defaults(func=func)
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
    p = remote("export", "write a version's YAML", cmd_export)
    p.add_argument("name")
    p.add_argument("--version", type=int, default=0)
    p.add_argument("--output", "-o")


