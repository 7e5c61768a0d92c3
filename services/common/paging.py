"""Opaque page tokens and page-size checks shared by every List RPC."""
from __future__ import annotations

import base64
import json
from typing import Any

from .errors import InvalidArgument

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


def page_size(requested: int, field: str = "page_size") -> int:
    """0 = the default; negative → INVALID_ARGUMENT; above the max → the max (AIP-158)."""
    if requested < 0:
        raise InvalidArgument(violations=[(field, "must not be negative")])
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def encode_token(position: Any) -> str:
    """A keyset position (e.g. the last key returned) as an opaque string."""
    return base64.urlsafe_b64encode(json.dumps(position, separators=(",", ":")).encode()).decode()


def decode_token(token: str, field: str = "page_token") -> Any:
    """Empty token = start; anything that is not one of ours → INVALID_ARGUMENT."""
    if not token:
        return None
    try:
        return json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, UnicodeDecodeError):
        raise InvalidArgument(violations=[(field, "not a page token returned by this service")]) from None
