"""The service's own background work: follow the feed, place changed customers,
expire overdue change requests, handle the end of lock periods, refresh the
gauges."""
from __future__ import annotations

import logging
import threading
import time

from .feed import FeedFollower
from .service import INCREMENTAL_BATCH, AssignmentService

log = logging.getLogger(__name__)


class Housekeeper:
    def __init__(self, service: AssignmentService, metrics, stopping: threading.Event, tick: float = 1.0,
                 sweep_every: float = 30.0, metrics_every: float = 5.0):
        self.service, self.metrics, self.stopping = service, metrics, stopping
        self.tick, self.sweep_every, self.metrics_every = tick, sweep_every, metrics_every
        self.changed = threading.Event()
        self.changed.set()  # place whatever a previous process stored but did not place

    def run(self) -> None:
        last_sweep = last_metrics = 0.0
        while not self.stopping.wait(self.tick):
            try:
                if self.changed.is_set():
                    self.changed.clear()
                    self.service.run_assignment("system", only_changed=True)
                    while self._more_to_place():  # a big backlog is placed in batches
                        self.service.run_assignment("system", only_changed=True)
                now = time.monotonic()
                if now - last_sweep >= self.sweep_every:
                    self.service.expire_due()
                    # Books whose lock period ended, customers of deactivated or moved staff: place them.
                    if self.service.end_periods() or self.service.pending_changes(limit=1):
                        self.changed.set()
                    last_sweep = now
                if self.metrics is not None and now - last_metrics >= self.metrics_every:
                    self.metrics.update(self.service.snapshot())
                    last_metrics = now
            except Exception:  # noqa: BLE001 - keep going; the next tick retries
                log.exception("assignment housekeeping failed")
                self.changed.set()

    def _more_to_place(self) -> bool:
        return self.service.pending_changes(limit=INCREMENTAL_BATCH) >= INCREMENTAL_BATCH


def start(ctx, service: AssignmentService, metrics, open_stream) -> Housekeeper:
    keeper = Housekeeper(service, metrics, ctx.stopping)
    if open_stream is not None:
        follower = FeedFollower(service, open_stream, ctx.stopping, on_applied=lambda n: keeper.changed.set(),
                                metrics=metrics)
        ctx.start_background(follower.follow, "assignment-feed")
    ctx.start_background(keeper.run, "assignment-housekeeping")
    return keeper
