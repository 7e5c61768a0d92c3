"""Where the CLI finds the services: each ``services/<name>/__main__.py``
exposes a side-effect-free ``SPEC`` (a ServiceSpec)."""
from __future__ import annotations

import importlib
import logging

from services.rules.bootstrap import ServiceSpec
from services.rules.kinds import KindRegistry

SERVICES = ("tiering", "assignment", "scoring", "benefits")
log = logging.getLogger(__name__)


def spec(name: str) -> ServiceSpec:
    if name not in SERVICES:
        raise SystemExit(f"unknown service {name!r} (known: {', '.join(SERVICES)})")
    return importlib.import_module(f"services.{name}.__main__").SPEC


def available_specs() -> list[ServiceSpec]:
    specs = []
    for name in SERVICES:
        try:
            specs.append(spec(name))
        except (ImportError, AttributeError) as exc:
            log.warning("service %s not available: %s", name, exc)
    return specs


def all_kinds() -> KindRegistry:
    return KindRegistry(kind for s in available_specs() for kind in s.kinds)


def service_of_kind(kind: str) -> str:
    for s in available_specs():
        if any(k.name == kind for k in s.kinds):
            return s.name
    raise SystemExit(f"no service serves rulesets of kind {kind!r}")
