"""Server-side sessions: the cookie holds only a random id; the person's
token stays in this process's memory and never reaches the browser.

A session expires after `idle` seconds without a request and, in any case,
`absolute` seconds after sign-in. Every visitor gets one (anonymous until
signed in) so the sign-in form has a CSRF token too; signing in replaces the
id (no fixation). The store is bounded: the least recently used sessions go
first, so a flood of anonymous visitors cannot exhaust memory.
"""
from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from services.common.auth import Principal


@dataclass
class Session:
    sid: str
    csrf: str
    created: float
    seen: float
    lang: str = ""
    token: str = field(default="", repr=False)
    principal: Principal | None = None
    signed_in_at: float = 0.0
    flashes: list[tuple[str, str]] = field(default_factory=list)

    def flash(self, kind: str, text: str) -> None:
        self.flashes.append((kind, text))

    def take_flashes(self) -> list[tuple[str, str]]:
        out, self.flashes = self.flashes, []
        return out


class SessionStore:
    def __init__(self, idle: float = 1800, absolute: float = 8 * 3600, capacity: int = 10_000,
                 clock=time.monotonic) -> None:
        self.idle, self.absolute, self.capacity, self.clock = idle, absolute, capacity, clock
        self._lock = threading.Lock()
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def signed_in(self) -> int:
        with self._lock:
            return sum(1 for s in self._sessions.values() if s.principal is not None)

    def _expired(self, s: Session, now: float) -> bool:
        if now - s.seen >= self.idle:
            return True
        return s.principal is not None and now - s.signed_in_at >= self.absolute

    def get(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        now = self.clock()
        with self._lock:
            s = self._sessions.get(sid)
            if s is None:
                return None
            if self._expired(s, now):
                del self._sessions[sid]
                return None
            s.seen = now
            self._sessions.move_to_end(sid)
            return s

    def new(self, lang: str = "") -> Session:
        now = self.clock()
        s = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), now, now, lang)
        with self._lock:
            self._sessions[s.sid] = s
            while len(self._sessions) > self.capacity:
                self._sessions.popitem(last=False)
        return s

    def sign_in(self, old: Session | None, token: str, principal: Principal) -> Session:
        """A fresh session (new id, new CSRF token) for the person; the old one is dropped."""
        if old is not None:
            self.drop(old)
        s = self.new(old.lang if old else "")
        s.token, s.principal, s.signed_in_at = token, principal, s.created
        return s

    def drop(self, s: Session) -> None:
        with self._lock:
            self._sessions.pop(s.sid, None)
