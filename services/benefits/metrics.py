"""kequn_benefits_* metrics, in the registry the server owns."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)


class BenefitsMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        registry = registry or CollectorRegistry()
        self.claims = Counter("kequn_benefits_claims_total", "Claim attempts by benefit and outcome",
                              ["benefit_id", "outcome"], registry=registry)
        self.stock_left = Gauge("kequn_benefits_stock_left", "Units of a physical benefit still claimable",
                                ["benefit_id"], registry=registry)
        self.budget_left = Gauge("kequn_benefits_budget_left_fen", "Budget not yet spent, in fen",
                                 ["group", "period"], registry=registry)
        self.entitlements_seconds = Histogram("kequn_benefits_entitlements_seconds",
                                              "Time to answer ListEntitlements", buckets=LATENCY_BUCKETS,
                                              registry=registry)
        self.reconciliation_ok = Gauge("kequn_benefits_reconciliation_ok",
                                       "1 if the last reconciliation found balances equal to their ledgers",
                                       registry=registry)
