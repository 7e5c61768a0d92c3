"""The shipped catalog ruleset: valid, its examples pass, and the kind refuses
a rule granting a benefit the catalog does not define."""
from __future__ import annotations

from pathlib import Path

import yaml

from services.benefits.domain import reason_texts
from services.benefits.rules_kind import KINDS
from services.rules.engine import default_engine
from services.rules.kinds import KindRegistry
from services.rules.validation import validate_text

CATALOG = Path(__file__).resolve().parents[3] / "services" / "benefits" / "rulesets" / "catalog.yaml"


def validate(text: str):
    return validate_text(text, KindRegistry(KINDS), default_engine())


def test_shipped_catalog_is_valid_and_its_examples_pass():
    result = validate(CATALOG.read_text(encoding="utf-8"))
    assert result.ok, result.problems


def test_a_rule_granting_an_unknown_benefit_is_refused():
    doc = yaml.safe_load(CATALOG.read_text(encoding="utf-8"))
    doc["rules"][1]["then"]["benefits"] = ["NOT_IN_CATALOG"]
    doc["examples"] = []
    problems = validate(yaml.safe_dump(doc, allow_unicode=True)).problems
    assert any("NOT_IN_CATALOG" in p.message for p in problems)


def test_a_bad_catalog_entry_is_refused_with_its_path():
    doc = yaml.safe_load(CATALOG.read_text(encoding="utf-8"))
    doc["parameters"]["catalog"]["LOBBY_GIFT"]["quota_period"] = "FORTNIGHT"
    doc["parameters"]["timezone"] = "Mars/Olympus"
    paths = {p.path for p in validate(yaml.safe_dump(doc, allow_unicode=True)).problems}
    assert {"parameters.catalog.LOBBY_GIFT.quota_period", "parameters.timezone"} <= paths


def test_every_shipped_benefit_says_who_it_is_for_in_chinese_and_english():
    doc = yaml.safe_load(CATALOG.read_text(encoding="utf-8"))
    granted: set[str] = set()
    for rule in doc["rules"]:
        en, zh = reason_texts(rule.get("description", ""), rule["id"])
        assert en != rule["id"] and zh != rule["id"], f"{rule['id']} has no description"
        assert en != zh and en.isascii() and not zh.isascii(), f"{rule['id']}: want '中文 / English'"
        granted |= set(rule["then"]["benefits"])
    assert granted == set(doc["parameters"]["catalog"]) and len(doc["rules"]) == 13


def test_campaigns_of_the_seeds_have_an_end_date():
    catalog = yaml.safe_load(CATALOG.read_text(encoding="utf-8"))["parameters"]["catalog"]
    for campaign in ("PAYDAY_COUPON", "CAR_OWNER_DAY", "SCAN_PAY_GIFT", "WECHAT_COUPON"):
        assert catalog[campaign]["valid_until"], campaign
