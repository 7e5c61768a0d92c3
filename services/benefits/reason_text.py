"""Rule descriptions with placeholders: the words an app shows a customer.

A description may name what is known about the customer, in optional parts:

    代发工资客户[（{payroll_employer_id}）] / payroll customers[ of employer {payroll_employer_id}]

``[...]`` is an optional part; ``{key}`` inside it names a group key the
customer's profile carries (``payroll_employer_id``, ``merchant_market_id``
and the groups ruleset's ``group_key_attributes``) or the context ``tier``
(the tier the rule was evaluated for) and ``groups`` (the customer's groups).
A part whose keys are all known is shown without its brackets; otherwise the
whole part is dropped, so a customer never sees a raw brace. Publishing is
refused for a placeholder outside a part, a stray brace, or a nested or
unbalanced bracket (``problems``); ``render`` is total anyway, for a text
that was stored before these checks.

Values are sanitised before they are put in (control and format characters,
braces and brackets removed, each value bounded) and rendering is one pass,
so a value that looks like a placeholder stays text. The rendered text is
bounded too.
"""
from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import Mapping

MAX_VALUE_CHARS = 64     # one key's value in a text (ids and names, not essays)
MAX_TEXT_CHARS = 300     # one rendered reason text

_KEY = r"[A-Za-z][A-Za-z0-9_]{0,63}"
_TOKEN = re.compile(r"\{(" + _KEY + r")\}|[\[\]{}]")
_DROPPED = frozenset("{}[]")
_HIDDEN = frozenset(("Cc", "Cf", "Cs", "Co", "Cn"))  # control, format (bidi, zero-width), surrogate, private, unassigned
_SPACES = re.compile(r" {2,}")  # where a dropped part leaves two spaces

# A compiled template: a tuple of parts; a part is (optional, pieces), a piece
# is ("text", words) or ("key", name).
Template = tuple[tuple[bool, tuple[tuple[str, str], ...]], ...]


@lru_cache(maxsize=4096)
def compile_template(text: str) -> Template:
    """Parses once per distinct description (descriptions are few)."""
    parts: list[tuple[bool, tuple[tuple[str, str], ...]]] = []
    pieces: list[tuple[str, str]] = []
    optional = False
    position = 0
    for match in _TOKEN.finditer(text):
        if match.start() > position:
            pieces.append(("text", text[position:match.start()]))
        position = match.end()
        token = match.group(0)
        if match.group(1):
            pieces.append(("key", match.group(1)))
        elif token == "[" and not optional:
            parts.append((False, tuple(pieces)))
            pieces, optional = [], True
        elif token == "]" and optional:
            parts.append((True, tuple(pieces)))
            pieces, optional = [], False
        # anything else (a stray brace, a nested or unmatched bracket) is dropped
    if position < len(text):
        pieces.append(("text", text[position:]))
    parts.append((optional, tuple(pieces)))  # an unclosed part is still optional
    return tuple(parts)


def problems(text: str) -> list[str]:
    """Why a description cannot be published (empty = fine)."""
    found: list[str] = []
    inside = False
    for match in _TOKEN.finditer(text):
        token = match.group(0)
        if match.group(1):
            if not inside:
                found.append(f"placeholder {token} outside an optional [...] part: write [ ... {token} ... ] so "
                             "the part is dropped when the key is not known")
        elif token == "[":
            if inside:
                found.append("nested '[': optional parts cannot nest")
            inside = True
        elif token == "]":
            if not inside:
                found.append("']' without its '['")
            inside = False
        else:
            found.append(f"stray '{token}': a placeholder is {{key}}, key = letters, digits, _ (at most 64)")
    if inside:
        found.append("'[' without its ']'")
    return found


def clean_value(value: object) -> str:
    """A key's value as it may appear in a text: no control or format
    characters (bidi overrides, zero-width), no braces or brackets, any run
    of whitespace (newlines too) one space, trimmed and bounded."""
    text = "".join(" " if ch.isspace() else ch for ch in str(value)
                   if ch not in _DROPPED and (ch.isspace() or unicodedata.category(ch) not in _HIDDEN))
    return " ".join(text.split())[:MAX_VALUE_CHARS].strip()


def clean_values(values: Mapping[str, object]) -> dict[str, str]:
    """The values a text may name; those empty once cleaned are unknown."""
    cleaned = {str(k): clean_value(v) for k, v in values.items()}
    return {k: v for k, v in cleaned.items() if v}


def render(text: str, values: Mapping[str, str]) -> str:
    """``text`` with its optional parts filled from ``values`` (already
    cleaned: clean_values) or dropped. Never leaves a brace or a bracket."""
    out: list[str] = []
    for optional, pieces in compile_template(text):
        keys = [piece for kind, piece in pieces if kind == "key"]
        if optional and not all(values.get(k) for k in keys):
            continue  # a key is not known: the whole part goes
        # (outside a part, a key validation let through is filled or dropped alone)
        out.extend(piece if kind == "text" else values.get(piece, "") for kind, piece in pieces)
    return bound(_SPACES.sub(" ", "".join(out)).strip())


def bound(text: str) -> str:
    """At most MAX_TEXT_CHARS characters, an ellipsis marking a cut."""
    return text if len(text) <= MAX_TEXT_CHARS else text[:MAX_TEXT_CHARS - 1].rstrip() + "…"
