"""Customer ids never reach a log line in clear, whoever logs them as a field."""
from __future__ import annotations

import json
import logging

from services.common.logging import JsonFormatter


def _line(**fields) -> dict:
    record = logging.LogRecord("kequn.test", logging.INFO, __file__, 1, "claim %s", ("ok",), None)
    record.fields = fields
    return json.loads(JsonFormatter("benefits").format(record))


def test_customer_id_field_is_masked_to_its_last_four_characters():
    line = _line(customer_id="C0000123456", benefit_id="GIFT_TEA")
    assert line["customer_id"] == "****3456"
    assert line["benefit_id"] == "GIFT_TEA" and line["service"] == "benefits" and line["msg"] == "claim ok"


def test_a_list_of_customer_ids_is_masked_item_by_item():
    assert _line(customer_ids=["C0000000001", "C0000000002"])["customer_ids"] == ["****0001", "****0002"]


def test_lines_without_customer_ids_are_unchanged():
    assert _line(method="GetBook", code="OK")["method"] == "GetBook"
