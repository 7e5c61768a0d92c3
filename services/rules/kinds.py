"""Kinds of ruleset: which input fields a ruleset may name and who owns it.

Each service declares its kinds (``services/<svc>/rules_kind.py``); the rule
store only knows them through a ``KindRegistry`` handed in by a composition
root, so this package never imports a service.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

# Field types a condition may compare. Money and counts are "int"; durable-rules
# compares numbers natively, so no decimals reach the engine.
INT, STRING, BOOL, STRING_LIST = "int", "string", "bool", "string_list"
FIELD_TYPES = frozenset({INT, STRING, BOOL, STRING_LIST})


@dataclass(frozen=True)
class Problem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass(frozen=True)
class KindSpec:
    """What one kind of ruleset may say.

    ``fields``: input fields conditions may name, with their types.
    ``outputs``: outcome keys a rule may set: "scalar" (highest priority wins)
    or "list" (union over every fired rule). Empty = any key, scalar.
    ``allow_attributes``: conditions may also name ``attributes.<key>``
    (bank-specific string fields the caller sends).
    ``check``: extra, kind-specific validation of the parsed mapping
    (scorecard weights, catalog shape...), returning problems with paths.
    ``four_eyes``: the default release policy of rulesets of this kind: a
    version is activated only through a release approved by a second person
    (DOMAIN.md §7); ``PublishRuleset`` is refused.
    """

    name: str
    service: str
    fields: Mapping[str, str]
    outputs: Mapping[str, str] = field(default_factory=dict)
    allow_attributes: bool = False
    check: Callable[[Mapping], Iterable[Problem]] | None = None
    description: str = ""
    four_eyes: bool = False

    def field_type(self, name: str) -> str | None:
        if name in self.fields:
            return self.fields[name]
        if self.allow_attributes and name.startswith("attributes.") and len(name) > len("attributes."):
            return STRING
        return None

    def output_mode(self, key: str) -> str:
        return self.outputs.get(key, "scalar")


class KindRegistry:
    def __init__(self, kinds: Iterable[KindSpec] = ()):
        self._kinds: dict[str, KindSpec] = {}
        for kind in kinds:
            self.add(kind)

    def add(self, kind: KindSpec) -> None:
        if kind.name in self._kinds:
            raise ValueError(f"kind {kind.name} registered twice")
        self._kinds[kind.name] = kind

    def get(self, name: str) -> KindSpec | None:
        return self._kinds.get(name)

    def names(self) -> list[str]:
        return sorted(self._kinds)

    def for_service(self, service: str) -> list[KindSpec]:
        return [k for k in self._kinds.values() if k.service == service]

    def __contains__(self, name: str) -> bool:
        return name in self._kinds
