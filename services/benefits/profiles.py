"""Where benefits learns a customer's tier, groups, flags and group keys
(employer, market: reason texts name them): the tiering service over gRPC
(GetCustomerTier), behind a small port so tests can pass a fake. Never
tiering's tables.

While tiering is down, the last profile fetched is used if it is no older than
the ruleset's `profile_max_staleness_seconds`; otherwise UNAVAILABLE.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from datetime import datetime, timedelta, timezone
from typing import Callable, Protocol

import grpc

from kequn.tiering.v1 import tiering_pb2, tiering_pb2_grpc
from services.common.errors import NotFound, Unavailable

from .domain import Profile

DOWN_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED)


class ProfileSource(Protocol):
    def get(self, customer_id: str, cache_seconds: int, max_staleness_seconds: int) -> Profile:
        """The customer's profile; NotFound if tiering does not know him,
        Unavailable if tiering is down and no recent enough profile is known."""


def profile_from_decision(decision: tiering_pb2.TierDecision, fetched_at: datetime) -> Profile:
    return Profile(
        customer_id=decision.customer_id, tier=decision.tier, segments=tuple(decision.segments),
        flags=tuple(decision.flags), next_tier=decision.next_tier.tier, next_tier_gap_fen=decision.next_tier.gap_fen,
        fetched_at=fetched_at, group_keys=tuple(sorted(decision.group_keys.items())))


class TieringProfiles:
    """GetCustomerTier with a bounded last-known-profile cache."""

    def __init__(self, channel: grpc.Channel, *, timeout_seconds: float = 2.0, max_entries: int = 200_000,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        self._stub = tiering_pb2_grpc.TieringServiceStub(channel)
        self._timeout = timeout_seconds
        self._max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, Profile] = OrderedDict()

    def _cached(self, customer_id: str) -> Profile | None:
        with self._lock:
            return self._cache.get(customer_id)

    def _remember(self, profile: Profile) -> None:
        with self._lock:
            self._cache[profile.customer_id] = profile
            self._cache.move_to_end(profile.customer_id)
            while len(self._cache) > self._max_entries:
                self._cache.popitem(last=False)

    def _forget(self, customer_id: str) -> None:
        with self._lock:
            self._cache.pop(customer_id, None)

    def get(self, customer_id: str, cache_seconds: int, max_staleness_seconds: int) -> Profile:
        now = self._clock()
        cached = self._cached(customer_id)
        if cached is not None and now - cached.fetched_at <= timedelta(seconds=cache_seconds):
            return cached
        try:
            decision = self._stub.GetCustomerTier(
                tiering_pb2.GetCustomerTierRequest(customer_id=customer_id), timeout=self._timeout)
        except grpc.RpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.NOT_FOUND:
                self._forget(customer_id)
                raise NotFound(f"customer {customer_id} is not known to tiering",
                               metadata={"customer_id": customer_id}) from None
            if cached is not None and code in DOWN_CODES and \
                    now - cached.fetched_at <= timedelta(seconds=max_staleness_seconds):
                return cached
            raise Unavailable(f"tiering cannot tell the profile of customer {customer_id} ({code.name}) and no "
                              f"profile younger than {max_staleness_seconds}s is known",
                              metadata={"dependency": "tiering"}) from None
        profile = profile_from_decision(decision, now)
        self._remember(profile)
        return profile


class StaticProfiles:
    """A fixed set of profiles (unit and integration tests, benchmarks' baseline)."""

    def __init__(self, profiles: dict[str, Profile] | None = None) -> None:
        self.profiles = dict(profiles or {})
        self.down = False

    def put(self, profile: Profile) -> None:
        self.profiles[profile.customer_id] = profile

    def get(self, customer_id: str, cache_seconds: int, max_staleness_seconds: int) -> Profile:
        if self.down:
            raise Unavailable("tiering is down", metadata={"dependency": "tiering"})
        if customer_id not in self.profiles:
            raise NotFound(f"customer {customer_id} is not known to tiering", metadata={"customer_id": customer_id})
        return self.profiles[customer_id]
