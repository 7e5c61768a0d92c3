"""What every request handler shares: the person's request context, a
refusal, and small helpers. No routes here."""
from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from starlette.requests import Request

from services.common.auth import Principal

from . import i18n
from .backend import BackendError
from .sessions import Session


class Refused(Exception):
    """A page answer other than 200: forbidden, CSRF, not found."""

    def __init__(self, status: int, key: str):
        self.status, self.key = status, key


@dataclass
class Ctx:
    """What one request knows about its person."""
    request: Request
    session: Session
    new_cookie: bool

    @property
    def me(self) -> Principal | None:
        return self.session.principal

    @property
    def token(self) -> str:
        return self.session.token

    @property
    def lang(self) -> str:
        return i18n.lang_of(self.session.lang)

    def t(self, key: str, **values) -> str:
        return i18n.label(key, self.lang, **values)


def error_dict(ctx: Ctx, error: BackendError) -> dict:
    return {"kind": "error", "text": i18n.reason_words(error.reason, ctx.lang), "reason": error.reason,
            "detail": error.message, "violations": error.violations}


def urlquote(value: str) -> str:
    return quote(value, safe="")
