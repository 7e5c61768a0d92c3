"""Every PromQL expression of the Grafana dashboard runs on a real Prometheus
and names only metrics that the running services export (checked against a
real scrape of their /metrics endpoints, not against a list in this test)."""
from __future__ import annotations

import json
import re
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.common.testing import REPO_ROOT

pytestmark = pytest.mark.e2e

DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "kequn.json"
# Series Prometheus itself makes for every target.
PROMETHEUS_OWN = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
            "offset", "inf", "nan"}
# What Grafana substitutes before a query reaches Prometheus.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "5m", "$__interval": "15s", "$service": ".*"}


def dashboard_expressions() -> list[str]:
    dash = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            exprs.append(re.fullmatch(r"label_values\((.*),\s*\w+\)", query).group(1))
    return exprs


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions,
    keywords, label names (inside {} or by/without/on(...)) or durations."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)                  # string literals
    text = re.sub(r"\{[^}]*\}", "", text)                            # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)                           # ranges
    text = re.sub(r"\b\d[\w.]*", "", text)                          # numbers, durations (5m)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        rest = text[m.end():].lstrip()
        if rest.startswith("(") or m.group(0).lower() in KEYWORDS:
            continue
        names.add(m.group(0))
    return names


def test_metric_names_are_parsed_out_of_promql():
    assert metric_names('histogram_quantile(0.99, sum by (service, le) (rate(x_bucket{a="b(c)"}[5m]))) > 0.25') \
        == {"x_bucket"}
    assert metric_names("max(a_total) - on (service) group_left max(b) and c offset 5m") == {"a_total", "b", "c"}


def scraped_names(port: int) -> set[str]:
    """Every sample name a service declares on /metrics (labelled metrics with
    no children yet still declare their family and type)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    names = set()
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created"),
                "summary": ("_count", "_sum", "_created"), "gauge": (), "untyped": (), "info": ("_info",)}
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(family.name + s for s in suffixes.get(family.type, ()))
        names.update(sample.name for sample in family.samples)
    return names


@pytest.fixture(scope="module")
def exported(kequn_suite):
    return {name: scraped_names(s.metrics_port) for name, s in kequn_suite.services.items()}


def test_every_dashboard_metric_is_exported_by_a_running_service(exported):
    everything = set().union(*exported.values()) | PROMETHEUS_OWN
    used = set().union(*map(metric_names, dashboard_expressions()))
    assert used - everything == set(), "dashboard names metrics no service exports"
    # and the dashboard covers every service's own metrics, not only the shared gRPC ones
    for service in exported:
        assert any(n.startswith(f"kequn_{service}_") for n in used), f"no {service} panel"


def test_every_service_exports_the_go_grpc_prometheus_names(exported):
    for service, names in exported.items():
        assert {"grpc_server_started_total", "grpc_server_handled_total", "grpc_server_handling_seconds_bucket",
                "grpc_server_msg_received_total", "grpc_server_msg_sent_total"} <= names, service


def test_every_alert_metric_is_exported_by_a_running_service(exported):
    import yaml
    doc = yaml.safe_load((REPO_ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())
    recorded = {r["record"] for g in doc["groups"] for r in g["rules"] if "record" in r}
    used = set().union(*(metric_names(r["expr"]) for g in doc["groups"] for r in g["rules"]))
    everything = set().union(*exported.values()) | PROMETHEUS_OWN | recorded
    assert used - everything == set(), "alerts name metrics no service exports"


@pytest.mark.parametrize("expr", dashboard_expressions())
def test_every_dashboard_expression_runs_on_prometheus(prometheus, expr):
    query = expr
    for var, value in GRAFANA_VARIABLES.items():
        query = query.replace(var, value)
    prometheus.query(query)  # raises unless Prometheus answers "success"
