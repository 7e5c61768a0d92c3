"""The Grafana dashboard and its provisioning fit together (the expressions
themselves are checked against a real scrape in tests/e2e/ops)."""
from __future__ import annotations

import json
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"
DASHBOARD = json.loads((DEPLOY / "grafana" / "kequn.json").read_text(encoding="utf-8"))
PANELS = [p for p in DASHBOARD["panels"] if p["type"] != "row"]


def test_panels_have_unique_ids_non_overlapping_places_and_queries():
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    cells = set()
    for p in DASHBOARD["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24
        area = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & area, f"panel {p['title']!r} overlaps another"
        cells |= area
    for p in PANELS:
        assert p["targets"] and all(t["expr"].strip() for t in p["targets"]), p["title"]
        assert p["datasource"]["uid"] == "${datasource}"


def test_dashboard_covers_what_operations_asked_for():
    titles = " | ".join(p["title"].lower() for p in DASHBOARD["panels"])
    for wanted in ("requests per second by service and method", "error ratio", "p99 latency",
                   "tier distribution", "book fill", "pending approvals", "claims", "stock left",
                   "calculation runs"):
        assert wanted in titles, wanted


def test_provisioning_points_at_the_dashboard_and_prometheus():
    (provider,) = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards" / "kequn.yml").read_text())[
        "providers"]
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./grafana/kequn.json:{provider['options']['path']}/kequn.json:ro" in mounts
    (source,) = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())[
        "datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    assert "prometheus" in compose["services"]
