"""The ruleset document: a human-edited YAML file, parsed into plain values.

Parsing is deliberately forgiving (it never raises on shape problems): the
validator reports every problem with its path, and only a document without
problems is compiled. Everything here is pure Python.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

import yaml


@dataclass(frozen=True)
class Rule:
    id: str
    when: Any  # condition tree as written; None = always
    then: Mapping[str, Any]
    priority: int = 0
    description: str = ""


@dataclass(frozen=True)
class Band:
    value: Any
    lower: int | None  # inclusive; None = unbounded
    upper: int | None  # exclusive; None = unbounded


@dataclass(frozen=True)
class BandTable:
    """Contiguous ranges of one integer field, each yielding one outcome value."""

    id: str
    field: str
    output: str
    bands: tuple[Band, ...]
    priority: int = 0


@dataclass(frozen=True)
class Example:
    name: str
    input: Mapping[str, Any]
    expect: Mapping[str, Any]
    expect_rules: tuple[str, ...] | None = None


@dataclass(frozen=True)
class RulesetDocument:
    name: str
    kind: str
    description: str
    parameters: Mapping[str, Any]
    bands: tuple[BandTable, ...]
    rules: tuple[Rule, ...]
    examples: tuple[Example, ...]
    raw: Mapping[str, Any] = field(repr=False, compare=False, default_factory=dict)

    def band_table(self, table_id: str) -> BandTable | None:
        return next((t for t in self.bands if t.id == table_id), None)

    def all_rule_ids(self) -> list[str]:
        ids = [r.id for r in self.rules]
        for table in self.bands:
            ids.extend(band_rule_id(table, b) for b in table.bands)
        return ids


def band_rule_id(table: BandTable, band: Band) -> str:
    return f"{table.id}.{band.value}"


class DocumentSyntaxError(ValueError):
    """The text is not YAML, or not a mapping at the top."""


MAX_EXPANDED_NODES = 200_000  # far above any real ruleset; aliases can multiply a small text


def _expanded_size_exceeds(node, limit: int) -> bool:
    """Counts nodes as if every alias were expanded, stopping at ``limit``:
    nested aliases ("billion laughs") are tiny as text and as shared Python
    objects, but expand exponentially in JSON, checksums and the engine."""
    count, stack = 0, [node]
    while stack:
        item = stack.pop()
        count += 1
        if count > limit:
            return True
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def parse_yaml(text: str) -> dict:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise DocumentSyntaxError(f"not valid YAML: {exc}") from None
    except (ValueError, TypeError, OverflowError) as exc:  # e.g. a date like 0000-00-00
        raise DocumentSyntaxError(f"not valid YAML: {exc}") from None
    except RecursionError:
        raise DocumentSyntaxError("not valid YAML: nested too deeply") from None
    if not isinstance(raw, dict):
        raise DocumentSyntaxError("a ruleset document must be a mapping at the top level")
    if _expanded_size_exceeds(raw, MAX_EXPANDED_NODES):
        raise DocumentSyntaxError(f"the document expands to more than {MAX_EXPANDED_NODES} values "
                                  "(nested aliases?)")
    return raw


def checksum(text: str) -> str:
    """Checksum of the canonical content, so reformatting the YAML keeps it."""
    canonical = json.dumps(parse_yaml(text), sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _band(raw: Any) -> Band:
    raw = raw if isinstance(raw, dict) else {}
    return Band(value=raw.get("value"), lower=raw.get("from"), upper=raw.get("below"))


def from_mapping(raw: Mapping[str, Any]) -> RulesetDocument:
    """Builds the document from an already validated mapping."""
    rules = tuple(
        Rule(
            id=str(r.get("id")),
            when=r.get("when"),
            then=dict(r.get("then") or {}),
            priority=int(r.get("priority", 0)),
            description=str(r.get("description", "")),
        )
        for r in raw.get("rules") or ()
    )
    bands = tuple(
        BandTable(
            id=str(t.get("id")),
            field=str(t.get("field")),
            output=str(t.get("output", t.get("id"))),
            bands=tuple(_band(b) for b in t.get("bands") or ()),
            priority=int(t.get("priority", 0)),
        )
        for t in raw.get("bands") or ()
    )
    examples = tuple(
        Example(
            name=str(e.get("name", f"example {i + 1}")),
            input=dict(e.get("input") or {}),
            expect=dict(e.get("expect") or {}),
            expect_rules=tuple(e["expect_rules"]) if e.get("expect_rules") is not None else None,
        )
        for i, e in enumerate(raw.get("examples") or ())
    )
    return RulesetDocument(
        name=str(raw.get("name")),
        kind=str(raw.get("kind")),
        description=str(raw.get("description", "")),
        parameters=dict(raw.get("parameters") or {}),
        bands=bands,
        rules=rules,
        examples=examples,
        raw=raw,
    )


def load_text(text: str) -> RulesetDocument:
    return from_mapping(parse_yaml(text))
