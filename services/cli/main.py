"""The `kequn` command."""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

# `kequn up` forks the services while gRPC is loaded here: with gRPC's fork
# support on, the child's restarted poller can hit the epoll fd that
# subprocess closes before exec and abort the child (grpc/grpc#43055).
# Set before grpc is imported, since gRPC reads it at start-up.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import grpc  # noqa: E402

from services.common.config import ServiceConfig  # noqa: E402

from . import registry, rules_cmd, up  # noqa: E402


def cmd_serve(args) -> int:
    if args.service == "console":
        from services.console.__main__ import main as console_main
        return console_main()
    from services.rules.bootstrap import run_service
    return run_service(registry.spec(args.service))


def cmd_migrate(args) -> int:
    from services.rules.bootstrap import install_default_rules, migrate
    from services.common.db import make_engine
    from services.rules.admin import RuleAdmin
    from services.rules.engine import default_engine
    from services.rules.kinds import KindRegistry
    from services.rules.store import RuleStore

    for name in args.services or registry.SERVICES:
        spec = registry.spec(name)
        config = ServiceConfig.from_env(name)
        migrate(spec, config.database_url)
        admin = RuleAdmin(RuleStore(make_engine(config.database_url)), KindRegistry(spec.kinds), default_engine())
        installed = install_default_rules(spec, admin)
        print(f"{name}: migrated {config.database_url}; default rulesets published: {', '.join(installed) or 'none new'}")
    return 0


def _register_service_commands(subparsers) -> None:
    """Service-specific subcommands live in services/<svc>/cli.py."""
    for module_name in [f"services.{name}.cli" for name in registry.SERVICES] + ["services.common.audit_cli"]:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise  # a real import error inside the module must not hide
            continue
        module.register(subparsers)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kequn", description="kequn: tiering, assignment, scoring and benefits")
    sub = parser.add_subparsers(dest="command", required=True)
    up.register(sub)
    p = sub.add_parser("serve", help="run one service in the foreground")
    p.add_argument("service", choices=(*registry.SERVICES, "console"))
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("migrate", help="migrate databases and publish missing default rulesets")
    p.add_argument("services", nargs="*", help="only these (default: all)")
    p.set_defaults(func=cmd_migrate)
    rules_cmd.register(sub)
    _register_service_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except grpc.RpcError as exc:
        print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
