"""Reason texts that name the employer, market or tier: optional [..{key}..]
parts filled from the profile or dropped, never a raw brace, refused on
publish when a placeholder could show unfilled."""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

from kequn.tiering.v1 import tiering_pb2
from services.benefits import domain
from services.benefits.domain import BenefitDefinition, Calendar, Grant, Profile, reason_texts
from services.benefits.profiles import profile_from_decision
from services.benefits.reason_text import MAX_TEXT_CHARS, MAX_VALUE_CHARS, clean_values, problems, render
from services.benefits.rules_kind import KINDS
from services.rules.engine import default_engine
from services.rules.kinds import KindRegistry
from services.rules.validation import validate_text

PAYROLL = ("代发工资客户[（{payroll_employer_name}{payroll_employer_id}）] / "
           "Payroll customer[ of employer {payroll_employer_id}]")
CATALOG = Path(__file__).resolve().parents[3] / "services" / "benefits" / "rulesets" / "catalog.yaml"
BRACES = set("{}[]")


def test_a_part_whose_keys_are_all_known_is_shown_without_brackets():
    values = {"payroll_employer_id": "E1", "payroll_employer_name": "华为"}
    assert reason_texts(PAYROLL, "r", values) == ("Payroll customer of employer E1", "代发工资客户（华为E1）")


def test_a_part_with_any_key_missing_is_dropped_whole():
    assert reason_texts(PAYROLL, "r", {"payroll_employer_id": "E1"}) == (
        "Payroll customer of employer E1", "代发工资客户")   # the name is not known: the zh part goes
    assert reason_texts(PAYROLL, "r", {}) == ("Payroll customer", "代发工资客户")
    assert reason_texts(PAYROLL, "r") == ("Payroll customer", "代发工资客户")
    assert render("a [b {x}] c", {"x": ""}) == "a c"  # an empty value is not known; no double space


def test_parts_without_keys_and_several_parts():
    assert render("[plain] x[ {a}][ {b}] y[ {a}/{b}]", {"a": "1"}) == "plain x 1 y"


@pytest.mark.parametrize("text, values, expected", [
    ("a [b [c {x}] d] e", {"x": "X"}, "a b c X d] e".replace("]", "").replace("  ", " ")),
    ("a [b {x}", {"x": "X"}, "a b X"),            # unclosed: still optional
    ("a [b {x}", {}, "a"),
    ("a ] b", {}, "a b"),                          # stray closing bracket dropped
    ("a { b } c", {}, "a b c"),                    # stray braces dropped
    ("{x} a", {"x": "X"}, "X a"),                  # a bare key (refused on publish) is filled...
    ("{x} a", {}, "a"),                            # ...or dropped, never shown raw
    ("a {not a key!} b", {}, "a not a key! b"),
    ("[{x}{y}]", {"x": "1", "y": "2"}, "12"),
    ("", {}, ""),
])
def test_odd_brackets_and_braces_render_without_a_brace_or_bracket(text, values, expected):
    out = render(text, values)
    assert out == expected and not BRACES & set(out)


def test_hostile_values_stay_plain_text():
    values = clean_values({
        "payroll_employer_id": "E{tier}[1]\u202e\u200b\n\tX",   # placeholder-looking, bidi, zero-width, newline
        "merchant_market_id": "M" * 500,
        "blank": " \n\u200b ",
        "tier": "WEALTH",
    })
    assert values["payroll_employer_id"] == "Etier1 X"      # no second expansion, no control characters
    assert len(values["merchant_market_id"]) == MAX_VALUE_CHARS
    assert "blank" not in values                             # empty once cleaned: unknown, its part dropped
    en, zh = reason_texts(PAYROLL + "[ {blank}]", "r", values)
    assert en == "Payroll customer of employer Etier1 X"
    long = render("[{merchant_market_id}]" * 20, values)
    assert len(long) == MAX_TEXT_CHARS and long.endswith("…")


def test_publish_problems_name_each_fault():
    assert problems(PAYROLL) == []
    assert problems("plain words （全角括号） / plain") == []
    assert len(problems("payroll {payroll_employer_id}")) == 1
    assert "outside" in problems("payroll {payroll_employer_id}")[0]
    assert [p.split(":")[0].split(" ")[0] for p in problems("[a [b] ] c { d")] == ["nested", "']'", "stray"]
    assert problems("[a {x}") == ["'[' without its ']'"]


def _catalog_with(description: str, rule: int = 3) -> str:
    doc = yaml.safe_load(CATALOG.read_text(encoding="utf-8"))
    doc["rules"][rule]["description"] = description
    return yaml.safe_dump(doc, allow_unicode=True)


def test_the_kind_refuses_a_bare_placeholder_and_accepts_an_optional_one():
    registry, engine = KindRegistry(KINDS), default_engine()
    refused = validate_text(_catalog_with("代发 {payroll_employer_id} / payroll {payroll_employer_id}"), registry, engine)
    assert not refused.ok
    assert {p.path for p in refused.problems} == {"rules[3].description"} and len(refused.problems) == 2
    assert validate_text(_catalog_with(PAYROLL), registry, engine).ok


def test_shipped_payroll_and_merchant_texts_name_the_employer_and_market():
    rules = {r["id"]: r["description"] for r in yaml.safe_load(CATALOG.read_text(encoding="utf-8"))["rules"]}
    keys = {"payroll_employer_id": "EMP-9", "merchant_market_id": "MKT-7"}
    for rule_id, key in (("benefit.payday_coupon", "EMP-9"), ("benefit.scan_pay_gift", "EMP-9"),
                         ("benefit.merchant_fee_waiver", "MKT-7")):
        en, zh = reason_texts(rules[rule_id], rule_id, keys)
        assert key in en and key in zh, rule_id
        bare_en, bare_zh = reason_texts(rules[rule_id], rule_id, {})
        assert key not in bare_en + bare_zh and not BRACES & set(bare_en + bare_zh)
        assert bare_en.isascii() and not bare_zh.isascii()


def test_entitlements_fill_keys_from_the_profile_and_the_tier_the_rules_saw():
    catalog = {b: BenefitDefinition(b, b, "COUPON") for b in ("A", "B")}
    profile = Profile("C1", "AFFLUENT", ("PAYROLL",), next_tier="WEALTH", next_tier_gap_fen=5,
                      group_keys=(("payroll_employer_id", "E1"),))
    grant_a = Grant("A", "r1", PAYROLL)
    grant_b = Grant("B", "r2", "{tier} 级[（{tier}，{groups}）] / tier[ {tier}][ in {groups}]")
    now = datetime(2025, 3, 10, tzinfo=timezone.utc)
    shown = domain.build_entitlements(profile, {"A": grant_a}, {"B": grant_b}, catalog, {}, now, Calendar(),
                                      include_locked=True)
    assert [(e.reason_text, e.reason_text_zh) for e in shown] == [
        ("Payroll customer of employer E1", "代发工资客户"),
        ("unlocked at tier WEALTH: tier WEALTH in PAYROLL", "升至 WEALTH 级可享：WEALTH 级（WEALTH，PAYROLL）")]
    assert shown[0].reason == shown[0].reason_text


def test_the_profile_takes_the_keys_from_get_customer_tier():
    decision = tiering_pb2.TierDecision(customer_id="C1", tier="MASS",
                                        group_keys={"payroll_employer_id": "E1", "merchant_market_id": "M1"})
    profile = profile_from_decision(decision, datetime.now(timezone.utc))
    assert profile.group_keys == (("merchant_market_id", "M1"), ("payroll_employer_id", "E1"))
    assert profile.text_values()["payroll_employer_id"] == "E1"
