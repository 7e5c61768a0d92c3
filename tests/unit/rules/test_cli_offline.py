"""`kequn rules validate|test` work offline on files, with every service's kinds."""
from pathlib import Path

import pytest

from services.cli.main import main

ROOT = Path(__file__).resolve().parents[3]
SHIPPED = sorted(ROOT.glob("services/*/rulesets/*.yaml")) + sorted(ROOT.glob("services/*/rulesets/*/*.yaml"))


def test_every_service_ships_default_rulesets():
    owners = {path.parts[-3] if path.parent.name == "rulesets" else path.parts[-4] for path in SHIPPED}
    assert {"tiering", "assignment", "scoring", "benefits"} <= owners


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(ROOT)))
def test_shipped_rulesets_validate_and_their_examples_pass(path, capsys):
    assert main(["rules", "validate", str(path)]) == 0, capsys.readouterr().out
    assert main(["rules", "test", str(path)]) == 0, capsys.readouterr().out
    assert " 0 failed" in capsys.readouterr().out


def test_validate_reports_the_path_and_exits_1(tmp_path, capsys):
    broken = (ROOT / "services/tiering/rulesets/tiers.yaml").read_text().replace(
        "{value: AFFLUENT, from: 5000000,", "{value: AFFLUENT, from: 5000100,")
    (tmp_path / "t.yaml").write_text(broken)
    assert main(["rules", "validate", str(tmp_path / "t.yaml")]) == 1
    assert "bands[0].bands[2].from: gap: nothing covers 5000000 to 5000100" in capsys.readouterr().out


def test_test_reports_a_failing_example(tmp_path, capsys):
    text = (ROOT / "services/tiering/rulesets/tiers.yaml").read_text().replace(
        "input: {annual_avg_aum_fen: 999999}, expect: {tier: MASS}",
        "input: {annual_avg_aum_fen: 999999}, expect: {tier: LONG_TAIL}")
    (tmp_path / "t.yaml").write_text(text)
    assert main(["rules", "test", str(tmp_path / "t.yaml")]) == 1
    out = capsys.readouterr().out
    assert "FAIL one fen below long tail: tier: expected 'LONG_TAIL', got 'MASS'" in out
