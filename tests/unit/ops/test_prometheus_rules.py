"""The Prometheus configuration and alerts pass promtool, and every alert has a
promtool unit test that makes it fire."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml


DEPLOY = Path(__file__).resolve().parents[3] / "deploy"
PROM = DEPLOY / "prometheus"
CONFIGS = ["prometheus.yml", "prometheus-k8s.yml"]
RULE_TESTS = sorted((PROM / "tests").glob("*.yml"))


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=PROM, capture_output=True, text=True, timeout=120)


def _alert_names() -> set[str]:
    doc = yaml.safe_load((PROM / "alerts.yml").read_text())
    return {r["alert"] for g in doc["groups"] for r in g["rules"] if "alert" in r}


@pytest.mark.parametrize("config", CONFIGS)
def test_promtool_check_config(config, require_tool):
    result = _run(require_tool("promtool"), "check", "config", config)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_rules(require_tool):
    result = _run(require_tool("promtool"), "check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass(require_tool):
    assert RULE_TESTS, "no promtool rule tests in deploy/prometheus/tests"
    result = _run(require_tool("promtool"), "test", "rules", *map(str, RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_test_that_fires_it_and_one_that_does_not():
    fired, quiet = set(), set()
    for path in RULE_TESTS:
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                (fired if case.get("exp_alerts") else quiet).add(case["alertname"])
    alerts = _alert_names()
    assert alerts - fired == set(), "alerts no test makes fire"
    assert alerts - quiet == set(), "alerts with no test that they stay quiet"


def test_every_alert_has_a_runbook_entry():
    runbook = (DEPLOY.parent / "docs" / "operations.md").read_text(encoding="utf-8")
    doc = yaml.safe_load((PROM / "alerts.yml").read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            if "alert" not in rule:
                continue
            anchor = f"runbook-{rule['alert'].lower()}"
            assert rule["annotations"]["runbook_url"].endswith("#" + anchor)
            assert f'<a id="{anchor}"></a>' in runbook, f"docs/operations.md lacks the runbook of {rule['alert']}"


def test_scrape_configs_cover_the_four_services():
    static = yaml.safe_load((PROM / "prometheus.yml").read_text())
    (job,) = [j for j in static["scrape_configs"] if j["job_name"] == "kequn"]
    services = {sc["labels"]["service"]: sc["targets"] for sc in job["static_configs"]}
    assert services == {"tiering": ["127.0.0.1:9101"], "assignment": ["127.0.0.1:9102"],
                        "scoring": ["127.0.0.1:9103"], "benefits": ["127.0.0.1:9104"]}
    k8s = yaml.safe_load((PROM / "prometheus-k8s.yml").read_text())
    (job,) = [j for j in k8s["scrape_configs"] if j["job_name"] == "kequn"]
    names = {n.split("-pods.")[0] for sd in job["dns_sd_configs"] for n in sd["names"]}
    assert names == set(services)


def test_the_console_is_scraped_as_its_own_job_on_its_web_port():
    static = yaml.safe_load((PROM / "prometheus.yml").read_text())
    (job,) = [j for j in static["scrape_configs"] if j["job_name"] == "kequn-console"]
    assert [sc["targets"] for sc in job["static_configs"]] == [["127.0.0.1:8080"]]
    k8s = yaml.safe_load((PROM / "prometheus-k8s.yml").read_text())
    (job,) = [j for j in k8s["scrape_configs"] if j["job_name"] == "kequn-console"]
    assert [(sd["names"], sd["port"]) for sd in job["dns_sd_configs"]] == [
        (["console-pods.kequn.svc.cluster.local"], 8080)]
