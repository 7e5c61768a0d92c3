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


# A document's size as if every alias were written out: aliases make a small
# text expand (nested: "billion laughs"; flat: one 100 kB string aliased
# 3,000 times is 300 MB), and everything after parsing (checksums, JSON for
# the engine, outcomes copied per customer) walks the expanded form.
MAX_EXPANDED_NODES = 200_000        # far above any real ruleset
MAX_EXPANDED_CHARS = 4_000_000      # 4 x the largest text accepted (validation.MAX_DOCUMENT_BYTES)


class _Expansion:
    """Counts a composed YAML node graph's expanded size in one pass over
    its distinct nodes (a shared node's size is computed once and added at
    each alias), stopping past the limits: before any Python object is
    built from it."""

    def __init__(self) -> None:
        self.sizes: dict[int, tuple[int, int]] = {}
        self.open: set[int] = set()

    def size(self, node: yaml.Node) -> tuple[int, int]:
        """(nodes, characters) of ``node`` expanded."""
        key = id(node)
        known = self.sizes.get(key)
        if known is not None:
            return known
        if key in self.open:
            raise DocumentSyntaxError("not valid YAML for a ruleset: an alias refers to itself (a recursive structure)")
        if isinstance(node, yaml.ScalarNode):
            nodes, chars = 1, len(node.value)
        else:
            self.open.add(key)
            nodes, chars = 1, 0
            children = (node.value if isinstance(node, yaml.SequenceNode)
                        else [part for pair in node.value for part in pair])
            for child in children:
                n, c = self.size(child)
                nodes, chars = nodes + n, chars + c
                if nodes > MAX_EXPANDED_NODES or chars > MAX_EXPANDED_CHARS:
                    raise DocumentSyntaxError(
                        f"the document expands to more than {MAX_EXPANDED_NODES} values or "
                        f"{MAX_EXPANDED_CHARS} characters (aliases repeat what they refer to)")
            self.open.discard(key)
        self.sizes[key] = (nodes, chars)
        return nodes, chars


def parse_yaml(text: str) -> dict:
    """Composes the node graph, bounds its expanded size, then builds it."""
    loader = None
    try:
        loader = yaml.SafeLoader(text)  # reads the text at once: non-printable characters raise here
        node = loader.get_single_node()
        if node is None:
            raise DocumentSyntaxError("a ruleset document must be a mapping at the top level")
        _Expansion().size(node)
        raw = loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise DocumentSyntaxError(f"not valid YAML: {exc}") from None
    except (ValueError, TypeError, OverflowError) as exc:  # e.g. a date like 0000-00-00
        if isinstance(exc, DocumentSyntaxError):
            raise
        raise DocumentSyntaxError(f"not valid YAML: {exc}") from None
    except RecursionError:
        raise DocumentSyntaxError("not valid YAML: nested too deeply") from None
    finally:
        if loader is not None:
            loader.dispose()
    if not isinstance(raw, dict):
        raise DocumentSyntaxError("a ruleset document must be a mapping at the top level")
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
