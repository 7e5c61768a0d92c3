"""Tiering's own kequn_* metrics, in the registry the server owns.
(kequn_ruleset_active_version{ruleset} comes from the rule runtime.)"""
from __future__ import annotations

from collections import Counter as Tally
from typing import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from .domain import Decision

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


class TieringMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        registry = registry or CollectorRegistry()
        self.decisions = Counter("kequn_tiering_decisions_total", "Stored tier decisions by tier and change kind",
                                 ["tier", "change"], registry=registry)
        self.rules_fired = Counter("kequn_tiering_rules_fired_total", "Rules fired in stored decisions",
                                   ["ruleset", "rule_id"], registry=registry)
        self.evaluation = Histogram("kequn_tiering_evaluation_seconds",
                                    "Time to evaluate and store one request (unary) or one chunk (batch)",
                                    ["mode"], buckets=LATENCY_BUCKETS, registry=registry)
        self.batch_customers = Counter("kequn_tiering_batch_customers_total",
                                       "Customers answered by EvaluateCustomers (errors included)",
                                       registry=registry)
        self.feed_cursor = Gauge("kequn_tiering_feed_cursor", "Last cursor appended to the change feed",
                                 registry=registry)

    def stored(self, decisions: Iterable[Decision]) -> None:
        by_tier: Tally = Tally()
        by_rule: Tally = Tally()
        for d in decisions:
            by_tier[(d.tier, d.change)] += 1
            for rule_id, ruleset, _version in d.fired:
                by_rule[(ruleset, rule_id)] += 1
        for labels, n in by_tier.items():
            self.decisions.labels(*labels).inc(n)
        for labels, n in by_rule.items():
            self.rules_fired.labels(*labels).inc(n)
