"""Writes prometheus-rule.yaml: deploy/prometheus/alerts.yml as a PrometheusRule."""
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ALERTS = HERE.parents[2] / "prometheus" / "alerts.yml"


def render() -> str:
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "kequn", "labels": {"app.kubernetes.io/part-of": "kequn"}},
        "spec": yaml.safe_load(ALERTS.read_text(encoding="utf-8")),
    }
    return ("# Generated from deploy/prometheus/alerts.yml by gen_prometheus_rule.py: do not edit.\n"
            + yaml.safe_dump(rule, sort_keys=False, allow_unicode=True, width=120))


if __name__ == "__main__":
    (HERE / "prometheus-rule.yaml").write_text(render(), encoding="utf-8")
