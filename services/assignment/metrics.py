"""kequn_assignment_* metrics, in the registry the server owns."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class AssignmentMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.fill = Gauge("kequn_assignment_book_fill_ratio", "Customers in books / total max book size, by role",
                          ["role"], registry=registry)
        self.unplaced = Gauge("kequn_assignment_unplaced_customers", "Customer roles nobody holds, by reason",
                              ["reason"], registry=registry)
        self.pending = Gauge("kequn_assignment_change_requests_pending", "Change requests waiting for a decision",
                             registry=registry)
        self.overdue = Gauge("kequn_assignment_change_requests_overdue", "Pending change requests past expiry",
                             registry=registry)
        self.decisions = Counter("kequn_assignment_decisions_total", "Assignment decisions by action and outcome",
                                 ["action", "outcome"], registry=registry)
        self.locks = Gauge("kequn_assignment_lock_periods_open", "Lock periods open now", registry=registry)
        self.feed_lag = Gauge("kequn_assignment_feed_lag_seconds",
                              "Age of the last tier change applied when it was applied (0 = caught up)",
                              registry=registry)
        self.feed_cursor = Gauge("kequn_assignment_feed_cursor", "Last tiering feed cursor stored",
                                 registry=registry)
        self._reasons: set[str] = set()

    def decision(self, action: str, outcome: str) -> None:
        self.decisions.labels(action, outcome).inc()

    def update(self, snapshot: dict) -> None:
        for role, (size, capacity) in snapshot["fill"].items():
            self.fill.labels(role).set(size / capacity if capacity else 0)
        self._reasons |= set(snapshot["unplaced"])
        for reason in self._reasons:  # a reason that went away reads 0, not its last value
            self.unplaced.labels(reason).set(snapshot["unplaced"].get(reason, 0))
        self.pending.set(snapshot["pending"])
        self.overdue.set(snapshot["overdue"])
        self.locks.set(snapshot["locks"])
        self.feed_cursor.set(snapshot["cursor"])
