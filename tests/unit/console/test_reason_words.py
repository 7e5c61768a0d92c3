"""Every refusal reason docs/errors.md lists is shown in words, in both languages."""
from __future__ import annotations

import re

import grpc

from services.common.testing import REPO_ROOT
from services.console import i18n


def documented_reasons() -> set[str]:
    """The UPPER_SNAKE names in the first column of docs/errors.md's reason table."""
    names: set[str] = set()
    for line in (REPO_ROOT / "docs" / "errors.md").read_text(encoding="utf-8").splitlines():
        if line.startswith("| `"):
            names |= set(re.findall(r"`([A-Z][A-Z0-9_]+)`", line.split("|")[1]))
    return names


def test_the_table_is_parsed():
    reasons = documented_reasons()
    # A sample from the top, the middle and the assignment row: the parser reads the whole table.
    assert {"INVALID_INPUT", "OUT_OF_STOCK", "MISSING_VALUES", "BOOK_FULL", "SELF_APPROVAL", "NOT_APPROVER",
            "OUT_OF_SCOPE"} <= reasons


def test_every_documented_reason_has_words_in_english_and_chinese():
    missing = sorted(documented_reasons() - set(i18n.REASONS))
    assert missing == [], f"reasons in docs/errors.md without words in services/console/i18n.py: {missing}"
    for reason in documented_reasons():
        en, zh = i18n.reason_words(reason, "en"), i18n.reason_words(reason, "zh")
        assert en.strip() and zh.strip() and en != zh, reason
        assert re.search(r"[\u4e00-\u9fff]", zh), f"{reason}: the Chinese words have no Chinese"


def test_no_words_for_a_reason_no_service_gives():
    codes = {code.name for code in grpc.StatusCode}  # words for a bare status, e.g. a service that is down
    stale = sorted(set(i18n.REASONS) - documented_reasons() - codes)
    assert stale == [], f"words in services/console/i18n.py for reasons docs/errors.md does not list: {stale}"


def test_an_unknown_reason_still_gets_words():
    assert i18n.reason_words("SOMETHING_NEW", "en") == "The service refused it."
    assert i18n.reason_words("SOMETHING_NEW", "zh") == "服务拒绝了该操作。"


def test_unplaced_reasons_and_causes_have_words():
    for code in ("NO_STAFF_OF_ROLE", "ALL_BOOKS_FULL", "NO_HOME_BRANCH"):
        assert i18n.unplaced_words(code, "en") != code and i18n.unplaced_words(code, "zh") != code
    for code in ("MANUAL", "TIER_CHANGE", "PERIOD_END"):
        assert i18n.cause_words(code, "en") != code
