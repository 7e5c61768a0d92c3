"""Every request field of every RPC has a declared bound (services/common/limits.py),
generated from the descriptors: a new RPC or field without one fails here, with the
line to paste. And the checker refuses what the bounds say, without echoing values."""
from __future__ import annotations

from google.protobuf.descriptor import FieldDescriptor as F

from kequn.benefits.v1 import benefits_pb2
from kequn.rules.v1 import rules_pb2
from kequn.tiering.v1 import tiering_pb2
from services.common import bounds, errors, limits
from tests.security.rpcs import all_rpcs


def request_fields():
    """Every field reachable from an RPC's request message (recursively, map values included)."""
    seen, out = set(), []

    def walk(descriptor):
        if descriptor.full_name in seen:
            return
        seen.add(descriptor.full_name)
        for field in descriptor.fields:
            out.append(field)
            target = field.message_type
            if target is not None and target.GetOptions().map_entry:
                target = target.fields_by_name["value"].message_type
            if target is not None:
                walk(target)

    for rpc in all_rpcs():
        walk(rpc.input.DESCRIPTOR)
    return out


def suggest(field) -> str:
    """A starting point for the missing line (check the column it ends up in)."""
    name = field.name
    if bounds.is_map(field):
        return "Map(50, Str(64), Str(200, TEXT))"
    if bounds.is_repeated(field):
        return "Many(1000)" if field.type == F.TYPE_MESSAGE else "Many(100, CODE)"
    if field.type in (F.TYPE_STRING, F.TYPE_BYTES):
        for suffix, bound in (("request_id", "REQUEST_ID"), ("page_token", "PAGE_TOKEN"), ("_id", "ID"),
                              ("reason", "REASON"), ("comment", "REASON"), ("name", "NAME"), ("_on", "DATE"),
                              ("date", "DATE")):
            if name.endswith(suffix):
                return bound
        return "CODE"
    if name.endswith("_fen"):
        return "MONEY"
    if name == "page_size":
        return "PAGE_SIZE"
    if "version" in name:
        return "VERSION"
    return "Int(0, INT32_MAX)"


def test_every_request_field_of_every_rpc_has_a_declared_bound():
    missing = [f for f in request_fields() if bounds.needs_bound(f) and bounds.declared(f) is None]
    lines = "\n".join(f'    "{f.containing_type.full_name}": {{"{f.name}": {suggest(f)}}},' for f in missing)
    assert not missing, ("request fields without a bound; add them to services/common/limits.py FIELDS "
                         f"(merge into the message's entry):\n{lines}")


def test_limits_name_only_fields_that_exist_and_every_bound_fits_its_field():
    reachable = {(f.containing_type.full_name, f.name): f for f in request_fields()}
    stale = [f"{m}.{n}" for m, fields in limits.FIELDS.items() for n in fields if (m, n) not in reachable]
    assert not stale, f"limits.py declares fields no request has: {stale}"
    pointless = [f"{m}.{n}" for (m, n), f in reachable.items()
                 if bounds.declared(f) is not None and not bounds.needs_bound(f)]
    assert not pointless, f"bounds on bool/enum/message fields: {pointless}"
    for rpc in all_rpcs():  # compiling raises TypeError for a Str on an int field, Many on a map, ...
        bounds.violations(rpc.input())


def test_per_item_streams_are_client_streams():
    streams = {rpc.path for rpc in all_rpcs() if rpc.client_streaming}
    assert limits.PER_ITEM_STREAMS <= streams


def _snapshot(**kw):
    values = dict(customer_id="C000123", as_of="2025-03-01", annual_avg_aum_fen=123_456_789,
                  holdings=[tiering_pb2.BranchHolding(branch_id="BR-001", aum_fen=5)],
                  attributes={"channel": "MOBILE"})
    values.update(kw)
    return tiering_pb2.EvaluateCustomerRequest(customer=tiering_pb2.CustomerSnapshot(**values), request_id="r-1")


def test_a_typical_request_is_within_bounds():
    assert bounds.violations(_snapshot()) == []


def test_nul_and_control_characters_in_identifiers_are_refused_with_the_field_path():
    for bad in ("C1\x00", "C1\n", "\u202eC1", "C\u200b1"):
        assert bounds.violations(_snapshot(customer_id=bad)) == [
            ("customer.customer_id", "must be printable: no control, format or separator characters")]
    # free text keeps newlines but not NUL
    ok = benefits_pb2.CancelClaimRequest(claim_id="c1", reason="line one\nline two\tend", request_id="r")
    assert bounds.violations(ok) == []
    assert [f for f, _ in bounds.violations(benefits_pb2.CancelClaimRequest(reason="a\x00b"))] == ["reason"]


def test_lengths_match_the_columns_and_nested_elements_are_named():
    found = bounds.violations(_snapshot(holdings=[tiering_pb2.BranchHolding(branch_id="B1"),
                                                  tiering_pb2.BranchHolding(branch_id="B" * 101)]))
    assert found == [("customer.holdings[1].branch_id", "at most 64 characters (got 101)")]
    assert bounds.violations(_snapshot(customer_id="C" * 64)) == []


def test_numbers_that_could_overflow_a_sum_are_refused():
    assert [f for f, _ in bounds.violations(benefits_pb2.AdjustInventoryRequest(delta=2**63 - 1))] == ["delta"]
    assert [f for f, _ in bounds.violations(benefits_pb2.CreditPointsRequest(points=2**63 - 1))] == ["points"]
    assert [f for f, _ in bounds.violations(_snapshot(annual_avg_aum_fen=-2**63))] == ["customer.annual_avg_aum_fen"]
    assert bounds.violations(benefits_pb2.CreditPointsRequest(points=limits.MAX_POINTS_PER_CALL)) == []
    # a rule version is an INTEGER column
    assert [f for f, _ in bounds.violations(rules_pb2.GetRulesetRequest(name="t", version=2**31))] == ["version"]


def test_lists_and_maps_are_counted_and_map_keys_are_never_echoed():
    found = bounds.violations(_snapshot(attributes={f"k{i}": "v" for i in range(300)}))
    assert found == [("customer.attributes", "at most 255 entries (got 300)")]
    found = bounds.violations(_snapshot(attributes={"x" * 100: "v"}))
    assert found == [("customer.attributes[0].key", "at most 64 characters (got 100)")]


def test_per_item_elements_are_only_counted_here():
    bad = _snapshot(customer_id="C\x00")
    batch = tiering_pb2.EvaluateCustomerBatchesRequest(requests=[bad])
    assert bounds.violations(batch) == []
    assert isinstance(bounds.item_error(bad), errors.InvalidArgument)
    assert bounds.item_error(_snapshot()) is None
    big = tiering_pb2.EvaluateCustomerBatchesRequest(requests=[_snapshot()] * 5001)
    assert [f for f, _ in bounds.violations(big)] == ["requests"]


def test_a_megabyte_id_gets_a_short_message_and_violations_stop_at_ten():
    huge = "C" * 1_000_000
    exc = bounds.item_error(_snapshot(customer_id=huge))
    assert "CCCC" not in exc.message and len(exc.message) < 200
    many = benefits_pb2.Benefit(channels=["\x00"] * 30)
    assert len(bounds.violations(many)) == bounds.MAX_VIOLATIONS


def test_nan_and_infinite_numbers_are_refused():
    from google.protobuf import struct_pb2
    sample = struct_pb2.Struct()
    sample.update({"a": float("nan"), "b": float("inf"), "c": 1.5})
    found = bounds.violations(rules_pb2.SimulateRulesetRequest(name="t", sample=[sample]))
    # map entries are named by position (protobuf maps have no order), never by key
    assert len(found) == 2
    assert all(f.startswith("sample[0].fields[") and f.endswith("].value.number_value") for f, _ in found)


def test_the_status_of_any_error_quotes_at_most_a_short_prefix():
    from google.rpc import error_details_pb2
    from services.common.grpc_errors import MAX_MESSAGE, to_status_proto
    sent = "Z" * 1_000_000
    for exc in (errors.NotFound(f"customer {sent} has never been evaluated", metadata={"customer_id": sent}),
                errors.InvalidArgument(violations=[(sent, sent)] * 1000)):
        status = to_status_proto(exc)
        assert len(status.message) <= MAX_MESSAGE
        assert status.ByteSize() < 40_000
        for detail in status.details:
            for kind in (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest):
                if detail.Is(kind.DESCRIPTOR):
                    unpacked = kind()
                    detail.Unpack(unpacked)
                    assert "Z" * 200 not in str(unpacked)


def test_errors_quote_at_most_64_characters_of_any_request_string():
    from services.common.grpc_errors import MAX_ECHO, sent_strings, to_status_proto
    from kequn.rules.v1 import rules_pb2 as r
    name = "".join(f"{i:03d}" for i in range(33))  # 99 characters, within its bound of 100
    request = r.GetRulesetRequest(name=name, version=1)
    sent = sent_strings(request)
    assert sent == [name]
    status = to_status_proto(errors.NotFound(f"ruleset {name} is not served here", metadata={"name": name}), sent)
    assert status.message == f"ruleset {name[:MAX_ECHO]}… is not served here"
    assert name[:MAX_ECHO + 1] not in str(status)
    partial = to_status_proto(errors.InvalidArgument(violations=[("name", f"unknown: {name[:80]}")]), sent)
    assert name[:MAX_ECHO + 1] not in str(partial)
