"""Hypothesis strategies for any protobuf request, built from its descriptor:
valid-looking values (ids, dates, decimals, codes kequn uses) mixed with
hostile ones (huge and odd strings, deep and wide maps, boundary and
overflowing numbers, unknown enum values), and raw wire bytes protobuf
would refuse to produce (invalid UTF-8, truncated, overlong varints)."""
from __future__ import annotations

from hypothesis import strategies as st
from google.protobuf.descriptor import FieldDescriptor as F

INT_RANGES = {
    F.TYPE_INT32: (-2**31, 2**31 - 1), F.TYPE_SINT32: (-2**31, 2**31 - 1), F.TYPE_SFIXED32: (-2**31, 2**31 - 1),
    F.TYPE_INT64: (-2**63, 2**63 - 1), F.TYPE_SINT64: (-2**63, 2**63 - 1), F.TYPE_SFIXED64: (-2**63, 2**63 - 1),
    F.TYPE_UINT32: (0, 2**32 - 1), F.TYPE_FIXED32: (0, 2**32 - 1),
    F.TYPE_UINT64: (0, 2**64 - 1), F.TYPE_FIXED64: (0, 2**64 - 1),
}
HUGE = "x" * 300_000
OVER_LIMIT = "y" * (4 * 1024 * 1024 + 16)  # past grpc's default 4 MiB receive limit
HOSTILE_STRINGS = [
    "", " ", "\x00", "\x00\x01\x02", "'; DROP TABLE x; --", "../../../../etc/passwd", "%s%s%n", "${jndi:x}",
    "\u202egnp.exe", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "\ud7ff\ue000", "-1", "-0", "9" * 40, "1e309", "NaN", "-Infinity", "0x7fffffff",
    "2025-02-30", "9999-99-99", "0000-00-00", "null", "{}", "[]", "*", "%", "_", "\\", "a" * 10_000,
    ".".join(["k"] * 500), HUGE, OVER_LIMIT,
    "name: x\nkind: x\nrules: " + "[" * 500, "a: &a [*a, *a]\nb: *a",  # YAML bombs for documents
]
VALID_LOOKING = [
    "C1", "C2", "C000001", "S1", "S2", "RM1", "B1", "BR-001", "2025-03-01", "2025-Q1", "2025-01", "MASS",
    "AFFLUENT", "PRIVATE_BANKING", "LONG_TAIL", "SILVER_HAIR", "RELATIONSHIP_MANAGER", "ADD", "REMOVE",
    "TRANSFER", "1", "0", "1.5", "100", "-3", "MOBILE", "BRANCH", "tiering.tiers", "tiering.groups",
]


def strings():
    return st.one_of(
        st.sampled_from(VALID_LOOKING),
        st.text(max_size=24),
        st.sampled_from(HOSTILE_STRINGS),
    )


def _scalar(field):
    t = field.type
    if t in INT_RANGES:
        lo, hi = INT_RANGES[t]
        return st.one_of(st.sampled_from([0, 1, -1 if lo < 0 else 2, lo, hi, hi // 2]), st.integers(lo, hi),
                         st.integers(-1000, 100_000_000).filter(lambda v: lo <= v <= hi))
    if t == F.TYPE_BOOL:
        return st.booleans()
    if t in (F.TYPE_FLOAT, F.TYPE_DOUBLE):
        return st.floats(allow_nan=True, allow_infinity=True, width=32 if t == F.TYPE_FLOAT else 64)
    if t == F.TYPE_ENUM:
        known = [v.number for v in field.enum_type.values]
        return st.sampled_from(known + [max(known) + 1, 999, -5])  # open enums keep unknown numbers
    if t == F.TYPE_STRING:
        return strings()
    if t == F.TYPE_BYTES:
        return st.binary(max_size=64)
    raise TypeError(f"no strategy for field type {t}")


def _map_of(field, depth):
    value_field = field.message_type.fields_by_name["value"]
    values = _value(value_field, depth + 1)
    return st.one_of(
        st.dictionaries(strings().map(lambda s: s[:200]), values, max_size=4),
        # deep: attributes are flattened to dotted keys before the rules see them
        st.integers(2, 400).map(lambda n: {".".join(f"k{i}" for i in range(n)): "v"}) if value_field.type == F.TYPE_STRING
        else st.just({}),
        # wide: past the rule engine's 255 properties per fact
        st.integers(200, 600).map(lambda n: {f"attr_{i}": str(i) for i in range(n)}) if value_field.type == F.TYPE_STRING
        else st.just({}),
    )


def _value(field, depth):
    if field.type == F.TYPE_MESSAGE:
        return messages(field.message_type, depth + 1)
    return _scalar(field)


def messages(descriptor, depth=0):
    """A strategy of instances of the message `descriptor` (nested at most 3 deep)."""
    from google.protobuf import message_factory
    cls = message_factory.GetMessageClass(descriptor)
    if depth > 3:
        return st.just(cls())
    parts = {}
    for field in descriptor.fields:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            parts[field.name] = _map_of(field, depth)
        elif field.is_repeated:
            parts[field.name] = st.one_of(st.lists(_value(field, depth), max_size=4),
                                          st.lists(_value(field, depth), min_size=50, max_size=300)
                                          if field.type != F.TYPE_MESSAGE else st.just([]))
        else:
            parts[field.name] = _value(field, depth)
    optional = {name: s for name, s in parts.items()}
    return st.fixed_dictionaries({}, optional=optional).map(lambda values: _build(cls, descriptor, values))


def _build(cls, descriptor, values):
    msg = cls()
    for name, value in values.items():
        field = descriptor.fields_by_name[name]
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            target = getattr(msg, name)
            for k, v in value.items():
                if field.message_type.fields_by_name["value"].type == F.TYPE_MESSAGE:
                    target[k].CopyFrom(v)
                else:
                    target[k] = v
        elif field.is_repeated:
            if field.type == F.TYPE_MESSAGE:
                getattr(msg, name).extend(value)
            else:
                getattr(msg, name).extend(value)
        elif field.type == F.TYPE_MESSAGE:
            getattr(msg, name).CopyFrom(value)
        else:
            setattr(msg, name, value)
    return msg


# --- raw wire bytes -------------------------------------------------------------------------

def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _len_field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def string_path(descriptor, depth=0):
    """Field numbers down to the first string field (through messages and map entries)."""
    for field in descriptor.fields:
        if field.type == F.TYPE_STRING:
            return [field.number]
    if depth < 4:
        for field in descriptor.fields:
            if field.type == F.TYPE_MESSAGE:
                rest = string_path(field.message_type, depth + 1)
                if rest:
                    return [field.number, *rest]
    return None


def invalid_utf8(descriptor, payload: bytes = b"\xff\xfe\xc3\x28 bad") -> bytes | None:
    """A message whose first string field holds bytes that are not UTF-8."""
    path = string_path(descriptor)
    if path is None:
        return None
    data = _len_field(path[-1], payload)
    for number in reversed(path[:-1]):
        data = _len_field(number, data)
    return data


MALFORMED = [
    b"\x0a\x7fshort",                  # length runs past the end
    b"\x08" + b"\xff" * 11,            # varint longer than 10 bytes
    b"\x0b\x0c",                       # unmatched start/end group
    b"\x07",                           # wire type 7 does not exist
    b"\x00\x00",                       # field number 0
    b"\xfa\xff\xff\xff\x0f\x00",       # largest field number, unknown, valid: decodes
]


def raw_requests():
    return st.one_of(st.sampled_from(MALFORMED), st.binary(max_size=48))


def string_fields(descriptor, limit: int = 3, depth: int = 0, prefix=()):
    """Paths (field names) to up to `limit` string fields, top level first, then inside messages."""
    out = [(*prefix, f.name) for f in descriptor.fields if f.type == F.TYPE_STRING and not f.is_repeated]
    if depth < 3:
        for f in descriptor.fields:
            if f.type == F.TYPE_MESSAGE and not f.is_repeated and len(out) < limit:
                out += string_fields(f.message_type, limit - len(out), depth + 1, (*prefix, f.name))
    return out[:limit]


def with_string(cls, path, value):
    """A message of class `cls` with only the string at `path` set to `value`."""
    msg = cls()
    target = msg
    for name in path[:-1]:
        target = getattr(target, name)
    setattr(target, path[-1], value)
    return msg
