"""`kequn benefits ...`: reconcile the ledgers of a running benefits service."""
from __future__ import annotations

import argparse
import sys

import grpc

from kequn.benefits.v1 import benefits_pb2, benefits_pb2_grpc
from services.common.client import dial
from services.common.config import service_target


def _token() -> str | None:
    from services.cli.tokens import token_for  # the CLI's token lookup (KEQUN_TOKEN, then kequn up's dev tokens)
    return token_for("operations")


def cmd_reconcile(args) -> int:
    stub = benefits_pb2_grpc.BenefitsServiceStub(dial(args.target or service_target("benefits"), _token()))
    try:
        answer = stub.Reconcile(benefits_pb2.ReconcileRequest(), timeout=args.timeout)
    except grpc.RpcError as exc:
        print(f"reconcile failed: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 2
    for m in answer.mismatches:
        print(f"MISMATCH {m.kind} {m.subject}: expected {m.expected}, actual {m.actual} — {m.message}")
    print("ok: stock, budgets and points equal their ledgers" if answer.ok
          else f"{len(answer.mismatches)} mismatch(es)")
    return 0 if answer.ok else 1


def register(subparsers) -> None:
    parser = subparsers.add_parser("benefits", help="benefits service operations")
    sub = parser.add_subparsers(dest="benefits_command", required=True)
    rec = sub.add_parser("reconcile", help="prove stock, budgets and points equal their ledger sums (exit 1 if not)")
    rec.add_argument("--target", help="host:port of the benefits service (default KEQUN_BENEFITS_TARGET)")
    rec.add_argument("--timeout", type=float, default=60.0)
    rec.set_defaults(func=cmd_reconcile)


if __name__ == "__main__":
    top = argparse.ArgumentParser(prog="kequn")
    register(top.add_subparsers(dest="command", required=True))
    ns = top.parse_args()
    raise SystemExit(ns.func(ns))
