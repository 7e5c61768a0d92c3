"""Following tiering's WatchTierChanges feed.

`FeedFollower.consume(changes)` takes any iterator of TierChange-like records
(the gRPC stream, or a list in tests) and stores them in batches; each batch
and the feed cursor go in one transaction, so a restart resumes exactly after
the last stored change. `follow()` reconnects with backoff, resuming from the
stored cursor each time.
"""
from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone

from services.common import tracing

from .service import AssignmentService, CustomerChange

log = logging.getLogger(__name__)
_END = object()


def change_from_pb(m) -> CustomerChange:
    changed_at = m.changed_at.ToDatetime(tzinfo=timezone.utc) if m.HasField("changed_at") else None
    return CustomerChange(
        cursor=m.cursor, customer_id=m.customer_id, tier=m.to_tier, segments=tuple(m.segments),
        flags=tuple(m.flags), home_branch_id=m.home_branch_id, has_personal_loan=m.has_personal_loan,
        annual_card_spend_fen=m.annual_card_spend_fen, annual_avg_aum_fen=m.annual_avg_aum_fen,
        card_level=m.card_level, changed_at=changed_at, group_keys=dict(m.group_keys), from_tier=m.from_tier,
        previous_home_branch_id=m.previous_home_branch_id)


class FeedFollower:
    def __init__(self, service: AssignmentService, open_stream: Callable[[int], Iterator] | None = None,
                 stopping: threading.Event | None = None, batch_size: int = 500, flush_seconds: float = 0.2,
                 on_applied: Callable[[int], None] = lambda n: None, metrics=None,
                 convert: Callable = change_from_pb):
        self.service = service
        self.open_stream = open_stream
        self.stopping = stopping or threading.Event()
        self.batch_size = batch_size
        self.flush_seconds = flush_seconds
        self.on_applied = on_applied
        self.metrics = metrics
        self.convert = convert
        self.applied = 0

    def _flush(self, batch: list) -> None:
        if not batch:
            return
        changes = [self.convert(m) for m in batch]
        # One span per stored batch, linked to the evaluations that made its
        # changes (their trace context travels in TierChange.traceparent).
        # A nightly batch puts thousands of changes under a few contexts: one link each.
        links = [tracing.link_to(t) for t in dict.fromkeys(getattr(m, "traceparent", "") for m in batch)][:128] \
            if tracing.enabled() else ()
        with tracing.start_span("assignment.feed.apply", links=links, attributes={
                "kequn.feed.changes": len(changes), "kequn.feed.first_cursor": changes[0].cursor,
                "kequn.feed.last_cursor": changes[-1].cursor}):
            n = self.service.apply_changes(changes)
        self.applied += n
        last = changes[-1]
        if self.metrics is not None:
            self.metrics.feed_cursor.set(max(c.cursor for c in changes))
            if last.changed_at is not None:
                self.metrics.feed_lag.set(max(0.0, (datetime.now(timezone.utc) - last.changed_at).total_seconds()))
        if n:
            self.on_applied(n)
        batch.clear()

    def consume(self, changes: Iterable) -> int:
        """Stores everything `changes` yields, in batches; returns when it ends (or on stop)."""
        items: queue.Queue = queue.Queue(maxsize=self.batch_size * 4)
        failure: list[BaseException] = []

        def read() -> None:
            try:
                for m in changes:
                    items.put(m)
                    if self.stopping.is_set():
                        break
            except BaseException as exc:  # the stream broke: hand it to the consumer
                failure.append(exc)
            finally:
                items.put(_END)

        reader = threading.Thread(target=read, name="assignment-feed-reader", daemon=True)
        reader.start()
        before, batch = self.applied, []
        while True:
            try:
                m = items.get(timeout=self.flush_seconds)
            except queue.Empty:
                self._flush(batch)  # the stream is quiet: store what we have
                if self.metrics is not None:
                    self.metrics.feed_lag.set(0)
                if self.stopping.is_set():
                    break
                continue
            if m is _END:
                break
            batch.append(m)
            if len(batch) >= self.batch_size:
                self._flush(batch)
        self._flush(batch)
        if failure:
            raise failure[0]
        return self.applied - before

    def follow(self) -> None:
        """Until stopped: open the stream after the stored cursor, consume, reconnect with backoff."""
        delay = 0.5
        while not self.stopping.is_set():
            call = None
            try:
                call = self.open_stream(self.service.feed_cursor())
                cancel = getattr(call, "cancel", None)
                if cancel is not None:
                    self.stopping_hook = threading.Thread(
                        target=lambda: (self.stopping.wait(), cancel()), daemon=True)
                    self.stopping_hook.start()
                self.consume(call)
                delay = 0.5
                self.stopping.wait(delay)  # the server ended the stream: reconnect shortly
            except Exception as exc:  # noqa: BLE001 - any failure: wait and resume from the stored cursor
                if self.stopping.is_set():
                    break
                log.warning("tiering feed interrupted (%s); retrying in %.1fs", type(exc).__name__, delay)
                self.stopping.wait(delay)
                delay = min(delay * 2, 30.0)
