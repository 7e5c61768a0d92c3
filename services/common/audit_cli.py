"""`kequn audit verify --service S`: check a service's audit hash chains.

Every chain (bucket) is checked record by record and must end exactly at its
anchored head, so a removed tail is reported too. Exit codes: 0 every chain
intact, 1 a chain broken (the first bad record, or the cut chain, is named),
2 no audit table in that database. The printed digest of the heads can be
kept elsewhere to detect a rewrite of the log together with its heads.
"""

from __future__ import annotations

import argparse

from sqlalchemy import MetaData, inspect

from services.common.audit import audit_table, chain_head, default_table_name, snapshot, verify_audit
from services.common.config import DEFAULT_PORTS, ServiceConfig
from services.common.db import make_engine


def verify(database_url: str, table_name: str) -> tuple[int, str]:
    """(exit code, message)."""
    engine = make_engine(database_url)
    try:
        if not inspect(engine).has_table(table_name):
            return 2, f"no audit table {table_name} in {engine.url.render_as_string(hide_password=True)}"
        table = audit_table(MetaData(), table_name)
        with snapshot(engine) as conn:  # the service may be appending meanwhile
            verdict = verify_audit(conn, table)
            count, head = chain_head(conn, table)
        if verdict.ok:
            return 0, f"{table_name}: {count} records, chain intact, heads digest {head}"
        where = f"at record id {verdict.bad_id}" if verdict.bad_id is not None else f"in chain {verdict.bucket}"
        return 1, f"{table_name}: chain BROKEN {where}: {verdict.problem} ({count} records)"
    finally:
        engine.dispose()


def cmd_verify(args) -> int:
    url = args.database_url or ServiceConfig.from_env(args.service).database_url
    code, message = verify(url, args.table or default_table_name(args.service))
    print(message)
    return code


def register(subparsers) -> None:
    p = subparsers.add_parser("audit", help="audit log tools")
    sub = p.add_subparsers(dest="audit_command", required=True)
    v = sub.add_parser("verify", help="verify the tamper-evident hash chain of a service's audit log")
    v.add_argument("--service", required=True, choices=sorted(DEFAULT_PORTS))
    v.add_argument("--table", help="audit table (default: <service>_audit_log)")
    v.add_argument("--database-url", help="default: the service's KEQUN_<SERVICE>_DATABASE_URL")
    v.set_defaults(func=cmd_verify)


def main(argv=None) -> int:  # `python -m services.common.audit_cli verify --service S`
    parser = argparse.ArgumentParser(prog="kequn")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["audit", *(argv if argv is not None else __import__("sys").argv[1:])])
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
