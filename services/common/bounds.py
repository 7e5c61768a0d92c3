"""Every request field within its declared bounds, before any use case runs.

The bounds are declared once, in services/common/limits.py. This module
compiles them, per message type, into straight-line Python (one attribute
read and one comparison per scalar field), so a typical
EvaluateCustomerRequest costs about 3 µs (docs/reliability.md, bench/bounds_bench.py).

BoundsInterceptor (in every server, see server.py) refuses a request with a
field out of bounds: INVALID_ARGUMENT, reason INVALID_INPUT, one BadRequest
field violation per field (at most MAX_VIOLATIONS). The descriptions never
echo the value, so a 1 MB id costs the caller a short message. Client-stream
items are checked as they are read; items of PER_ITEM_STREAMS and elements
of `Many(per_item=True)` fields are left to the API, which answers each bad
one in place with `item_error(item)`.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import grpc
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from services.common import errors
from services.common.grpc_errors import abort_with
from services.common.limits import FIELDS, ID_CHARS, PER_ITEM_STREAMS, TEXT, Bound, Float, Int, Many, Map, Str
from services.common.rpc import wrap_handler

MAX_VIOLATIONS = 10

# Identifiers: printable characters only (str.isprintable: no controls such as NUL or newline, no
# invisible format characters such as bidi overrides or zero widths that make two ids look alike,
# no separators but the ASCII space). Text: only tab, LF and CR of the C0 controls. PostgreSQL
# refuses NUL in any text column.
_TEXT_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_ID_WHY = "must be printable: no control, format or separator characters"
_TEXT_WHY = "must not contain NUL or control characters other than tab and newlines"


def _bad_chars(v: str, chars: str) -> bool:
    if v.isprintable():
        return False
    return chars == ID_CHARS or _TEXT_BAD.search(v) is not None


def _str_fail(out, path: str, v: str, n: int, chars: str) -> None:
    """Called only when a string failed its fast check: says which way."""
    if len(v) > n:
        _add(out, path, f"at most {n} characters (got {len(v)})")
    elif _bad_chars(v, chars):
        _add(out, path, _ID_WHY if chars == ID_CHARS else _TEXT_WHY)

_STRING_TYPES = (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES)
_INT_TYPES = (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT32,
              FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SINT64,
              FieldDescriptor.TYPE_FIXED32, FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED32,
              FieldDescriptor.TYPE_SFIXED64)
_FLOAT_TYPES = (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE)

# A field with no declaration still gets a bound at run time (the unit test makes every field
# declare its own): nothing unbounded reaches a use case.
_FALLBACK = {"string": Str(1000, TEXT), "int": Int(-2**63, 2**63 - 1), "float": Float(-1e18, 1e18),
             "many": Many(10_000), "map": Map(1000, Str(200))}

Violations = list  # of (field path, description)
Check = Callable[[object, str, Violations], None]


class Full(Exception):
    """Enough violations collected: stop walking."""


def _add(out: Violations, path: str, description: str) -> None:
    out.append((path, description))
    if len(out) >= MAX_VIOLATIONS:
        raise Full


def is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def is_repeated(field: FieldDescriptor) -> bool:
    return field.is_repeated


def needs_bound(field: FieldDescriptor) -> bool:
    """Fields that must be declared in limits.FIELDS: strings, bytes, numbers, lists, maps."""
    return (is_map(field) or is_repeated(field) or field.type in _STRING_TYPES or field.type in _INT_TYPES
            or field.type in _FLOAT_TYPES)


def declared(field: FieldDescriptor) -> Bound | None:
    return FIELDS.get(field.containing_type.full_name, {}).get(field.name)


def _fallback(field: FieldDescriptor) -> Bound:
    if is_map(field):
        return _FALLBACK["map"]
    if is_repeated(field):
        return _FALLBACK["many"]
    if field.type in _STRING_TYPES:
        return _FALLBACK["string"]
    if field.type in _FLOAT_TYPES:
        return _FALLBACK["float"]
    return _FALLBACK["int"]


# --- scalar checks (value, path, out) -----------------------------------------------------------

def _scalar_check(bound: Bound, field: FieldDescriptor) -> Check:
    if isinstance(bound, Str):
        n, chars = bound.max_len, bound.chars
        if field.type == FieldDescriptor.TYPE_BYTES:
            def check_bytes(v, path, out):
                if len(v) > n:
                    _add(out, path, f"at most {n} bytes (got {len(v)})")
            return check_bytes

        def check_str(v, path, out):
            if len(v) > n or _bad_chars(v, chars):
                _str_fail(out, path, v, n, chars)
        return check_str
    if isinstance(bound, Int):
        lo, hi = bound.lo, bound.hi
        why = f"must be between {lo} and {hi}"

        def check_int(v, path, out):
            if v < lo or v > hi:
                _add(out, path, why)
        return check_int
    if isinstance(bound, Float):
        lo, hi = bound.lo, bound.hi
        why = f"must be a finite number between {lo:g} and {hi:g}"

        def check_float(v, path, out):
            if not (lo <= v <= hi):  # NaN compares false
                _add(out, path, why)
        return check_float
    raise TypeError(f"{field.full_name}: {bound!r} does not fit a {field.type} field")


# --- message checkers -------------------------------------------------------------------------

_CHECKERS: dict[str, Callable[[object, str, Violations], None]] = {}
# Globals of the generated checkers: helpers, and each compiled checker under a name of its own
# (looked up at call time, so message types may contain themselves).
_BY_TYPE: dict[type, Callable[[object, str, Violations], None]] = {}
_NS: dict[str, object] = {"_add": _add, "_str_fail": _str_fail, "_TEXT_BAD": _TEXT_BAD}


def _message_checker(descriptor: Descriptor) -> Callable[[object, str, Violations], None]:
    """A checker of messages of `descriptor`, compiled once into straight-line Python: one
    attribute read and one comparison per scalar field (the hot path: tiering's unary call)."""
    name = descriptor.full_name
    if name in _CHECKERS:
        return _CHECKERS[name]
    me = f"_m{len(_CHECKERS)}"
    _CHECKERS[name] = lambda msg, prefix, out: _NS[me](msg, prefix, out)  # until compiled (recursion)
    lines = ["def check(msg, prefix, out):"]
    for i, field in enumerate(descriptor.fields):
        lines += _field_lines(field, f"{me}_{i}")
    if len(lines) == 1:
        lines.append("    pass")
    code = compile("\n".join(lines), f"<bounds of {name}>", "exec")
    scope: dict[str, object] = {}
    exec(code, _NS, scope)  # noqa: S102 - our own source, generated from descriptors
    _NS[me] = _CHECKERS[name] = scope["check"]
    return _NS[me]


def _field_lines(field: FieldDescriptor, helper: str) -> list[str]:
    """Source lines checking `field` of `msg` (a closure in _NS[helper] for lists and maps)."""
    f = field.name
    bound = declared(field)
    if bound is None and needs_bound(field):
        bound = _fallback(field)
    if is_map(field) or is_repeated(field):
        _NS[helper] = _map_check(field, bound) if is_map(field) else _many_check(field, bound)
        return [f"    v = msg.{f}", "    if v:", f"        {helper}(v, prefix + {f!r}, out)"]
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        _NS[helper] = _message_checker(field.message_type)
        return [f"    if msg.HasField({f!r}):", f"        {helper}(msg.{f}, prefix + {(f + '.')!r}, out)"]
    if bound is None:
        return []  # bool, enum
    if isinstance(bound, Str) and field.type == FieldDescriptor.TYPE_STRING:
        fast = "not v.isprintable()" if bound.chars == ID_CHARS else \
            "(not v.isprintable() and _TEXT_BAD.search(v) is not None)"
        return [f"    v = msg.{f}", f"    if v and (len(v) > {bound.max_len} or {fast}):",
                f"        _str_fail(out, prefix + {f!r}, v, {bound.max_len}, {bound.chars!r})"]
    if isinstance(bound, Int) and field.type in _INT_TYPES:
        return [f"    v = msg.{f}", f"    if v < {bound.lo} or v > {bound.hi}:",
                f"        _add(out, prefix + {f!r}, {f'must be between {bound.lo} and {bound.hi}'!r})"]
    if isinstance(bound, Float) and field.type in _FLOAT_TYPES:
        why = f"must be a finite number between {bound.lo:g} and {bound.hi:g}"
        return [f"    v = msg.{f}", f"    if not ({bound.lo!r} <= v <= {bound.hi!r}):",
                f"        _add(out, prefix + {f!r}, {why!r})"]
    _NS[helper] = _scalar_check(bound, field)  # bytes; raises TypeError for a bound of the wrong kind
    return [f"    v = msg.{f}", "    if v:", f"        {helper}(v, prefix + {f!r}, out)"]


def _many_check(field: FieldDescriptor, bound: Bound) -> Check:
    if not isinstance(bound, Many):
        raise TypeError(f"{field.full_name} is repeated: declare Many(...), not {bound!r}")
    n = bound.max_items
    too_many = f"at most {n} elements"
    if bound.per_item:
        def check_count(v, path, out):
            if len(v) > n:
                _add(out, path, f"{too_many} (got {len(v)})")
        return check_count
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        sub = _message_checker(field.message_type)

        def check_messages(v, path, out):
            if len(v) > n:
                _add(out, path, f"{too_many} (got {len(v)})")
                return
            for i, item in enumerate(v):
                sub(item, f"{path}[{i}].", out)
        return check_messages
    each = _scalar_check(bound.each if bound.each is not None else _fallback_scalar(field), field)

    def check_scalars(v, path, out):
        if len(v) > n:
            _add(out, path, f"{too_many} (got {len(v)})")
            return
        for i, item in enumerate(v):
            each(item, f"{path}[{i}]", out)
    return check_scalars


def _fallback_scalar(field: FieldDescriptor) -> Bound:
    if field.type in _STRING_TYPES:
        return _FALLBACK["string"]
    return _FALLBACK["float"] if field.type in _FLOAT_TYPES else _FALLBACK["int"]


def _map_check(field: FieldDescriptor, bound: Bound) -> Check:
    if not isinstance(bound, Map):
        raise TypeError(f"{field.full_name} is a map: declare Map(...), not {bound!r}")
    key_field = field.message_type.fields_by_name["key"]
    value_field = field.message_type.fields_by_name["value"]
    n = bound.max_items
    check_key = _scalar_check(bound.key, key_field)
    if value_field.type == FieldDescriptor.TYPE_MESSAGE:
        sub = _message_checker(value_field.message_type)

        def check_value(v, path, out):
            sub(v, path + ".", out)
    else:
        check_value = _scalar_check(bound.value if bound.value is not None else _fallback_scalar(value_field),
                                    value_field)

    def check_map(v, path, out):
        if len(v) > n:
            _add(out, path, f"at most {n} entries (got {len(v)})")
            return
        for i, (key, value) in enumerate(v.items()):
            # The key itself may be hostile: name the entry by position, never by the key.
            check_key(key, f"{path}[{i}].key", out)
            check_value(value, f"{path}[{i}].value", out)
    return check_map


# --- public API -------------------------------------------------------------------------------

def violations(message) -> list[tuple[str, str]]:
    """(field path, description) of every bound `message` breaks (at most MAX_VIOLATIONS)."""
    out: Violations = []
    check = _BY_TYPE.get(type(message))
    if check is None:
        check = _BY_TYPE[type(message)] = _message_checker(message.DESCRIPTOR)
    try:
        check(message, "", out)
    except Full:
        pass
    return out


def refusal(found: list[tuple[str, str]]) -> errors.InvalidArgument:
    return errors.InvalidArgument(
        "invalid argument: " + "; ".join(f"{f}: {d}" for f, d in found[:3])
        + (f" (and {len(found) - 3} more)" if len(found) > 3 else ""),
        violations=found)


def item_error(message) -> errors.InvalidArgument | None:
    """For APIs that answer a bad stream item in place: its error, or None when it is within bounds."""
    found = violations(message)
    return refusal(found) if found else None


def check(message) -> None:
    """Raise InvalidArgument when `message` breaks a declared bound."""
    found = violations(message)
    if found:
        raise refusal(found)


def _checked_items(items: Iterator) -> Iterator:
    for item in items:
        check(item)
        yield item


class BoundsInterceptor(grpc.ServerInterceptor):
    """Refuses out-of-bounds requests of kequn's own services (health and
    reflection excepted) before the handler runs. Sits inside
    GuardInterceptor (undecodable requests are refused there first)."""

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        method = handler_call_details.method or ""
        if handler is None or not method.startswith("/kequn.") or handler.request_deserializer is None:
            return handler  # health, reflection, raw-bytes handlers: nothing declared
        if method in PER_ITEM_STREAMS:
            return handler  # the API answers each bad item in place (item_error)
        request_streaming = handler.request_streaming

        def wrap(behavior, streaming):
            def admit(request, context):
                if request_streaming:
                    return _checked_items(request)
                found = violations(request)
                if found:
                    abort_with(context, refusal(found))
                return request

            if not streaming:
                return lambda request, context: behavior(admit(request, context), context)

            def stream(request, context):
                yield from behavior(admit(request, context), context)
            return stream

        return wrap_handler(handler, wrap)
