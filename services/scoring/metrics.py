"""kequn_scoring_* metrics, in the registry the server owns."""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.scoring.service import Observer

log = logging.getLogger(__name__)
RUN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class ScoringMetrics(Observer):
    def __init__(self, registry: CollectorRegistry):
        self.runs = Counter("kequn_scoring_runs_total", "Period calculations by role (* = every role) and outcome",
                            ["role", "outcome"], registry=registry)
        self.run_seconds = Histogram("kequn_scoring_run_seconds", "Duration of a period calculation",
                                     buckets=RUN_BUCKETS, registry=registry)
        self.people = Gauge("kequn_scoring_people_scored", "People scored by the latest calculation of each role",
                            ["role"], registry=registry)
        self.finalized_total = Counter("kequn_scoring_periods_finalized_total", "Periods finalized",
                                       registry=registry)
        self.rejected_total = Counter("kequn_scoring_rejected_submissions_total",
                                      "Metric/rating submissions refused, by reason", ["reason"], registry=registry)
        self.overdue = Gauge("kequn_scoring_periods_overdue", "Periods past their due date and not finalized",
                             registry=registry)

    def run(self, role: str, outcome: str, seconds: float) -> None:
        self.runs.labels(role, outcome).inc()
        self.run_seconds.observe(seconds)

    def scored(self, role: str, people: int) -> None:
        self.people.labels(role).set(people)

    def finalized(self) -> None:
        self.finalized_total.inc()

    def rejected(self, reason: str) -> None:
        self.rejected_total.labels(reason).inc()

    def watch_overdue(self, count: Callable[[], int], max_age: float = 30.0) -> None:
        """The overdue gauge reads the database at scrape time, at most every `max_age` s;
        if the database is down the last value stays."""
        lock, cache = threading.Lock(), {"at": float("-inf"), "value": 0}

        def current() -> float:
            with lock:
                if time.monotonic() - cache["at"] >= max_age:
                    try:
                        cache["value"] = count()
                    except Exception as exc:  # never fail a scrape
                        log.warning("counting overdue periods failed: %s", exc)
                    cache["at"] = time.monotonic()
                return cache["value"]
        self.overdue.set_function(current)
