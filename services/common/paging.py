"""Opaque, signed page tokens and page-size checks shared by every List RPC.

A token is `base64url(JSON position) "." base64url(HMAC-SHA256(key, scope, position))`,
the MAC cut to 128 bits. `scope` names the list it belongs to (e.g.
"tiering.ListTierChanges", plus any filter a caller must not change between
pages), so a token of one list is refused by another. Only positions this
service wrote can come back: forged, truncated, tampered or foreign tokens
are INVALID_ARGUMENT (reason INVALID_INPUT) before anything reaches SQL.

The key: KEQUN_PAGE_TOKEN_KEY (any string of at least 16 characters, the
same on every replica of a deployment). Without it, a random key is generated
once into $KEQUN_DATA_DIR/page-token.key (development; replicas sharing the
data directory share it). Changing the key invalidates tokens in flight:
clients restart their listing.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
from pathlib import Path
from typing import Any

from .errors import InvalidArgument

log = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
KEY_ENV = "KEQUN_PAGE_TOKEN_KEY"
KEY_FILE = "page-token.key"
MAC_BYTES = 16
MAX_TOKEN_LENGTH = 512

_key_lock = threading.Lock()
_keys: dict[tuple[str | None, str | None], bytes] = {}


def page_size(requested: int, field: str = "page_size") -> int:
    """0 = the default; negative → INVALID_ARGUMENT; above the max → the max (AIP-158)."""
    if requested < 0:
        raise InvalidArgument(violations=[(field, "must not be negative")])
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def _load_key() -> bytes:
    configured = os.environ.get(KEY_ENV)
    data_dir = os.environ.get("KEQUN_DATA_DIR") or "./.kequn"
    cache_key = (configured, data_dir)
    with _key_lock:
        key = _keys.get(cache_key)
        if key is not None:
            return key
        if configured:
            if len(configured) < 16:
                raise RuntimeError(f"{KEY_ENV} must have at least 16 characters")
            key = hashlib.sha256(b"kequn page tokens\0" + configured.encode()).digest()
        else:
            key = _key_from_file(Path(data_dir).expanduser() / KEY_FILE)
        _keys[cache_key] = key
        return key


def _key_from_file(path: Path) -> bytes:
    try:
        return bytes.fromhex(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        pass
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
        try:
            os.link(tmp, path)  # first writer wins; the others read its key
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
        return bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError) as exc:
        log.warning("no %s and cannot keep a page-token key in %s (%s): using a per-process key; "
                    "page tokens will not survive a restart", KEY_ENV, path, exc)
        return secrets.token_bytes(32)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(scope: str, payload: bytes) -> bytes:
    return hmac.new(_load_key(), scope.encode() + b"\0" + payload, hashlib.sha256).digest()[:MAC_BYTES]


def encode_token(position: Any, scope: str) -> str:
    """A keyset position (e.g. the last key returned) of the list `scope`, signed."""
    payload = json.dumps(position, separators=(",", ":")).encode()
    return f"{_b64(payload)}.{_b64(_mac(scope, payload))}"


def decode_token(token: str, scope: str, expect: type | tuple[type, ...] | None = None,
                 field: str = "page_token") -> Any:
    """Empty token = start (None). A token this service signed for `scope` →
    its position (checked to be an `expect` instance, when given). Anything
    else → INVALID_ARGUMENT, never echoing the token."""
    if not token:
        return None
    refused = InvalidArgument(violations=[(field, "not a page token this list returned")])
    if len(token) > MAX_TOKEN_LENGTH or token.count(".") != 1:
        raise refused
    body, mac = token.split(".")
    try:
        payload, given = _unb64(body), _unb64(mac)
    except (ValueError, UnicodeEncodeError):
        raise refused from None
    if not hmac.compare_digest(given, _mac(scope, payload)):
        raise refused
    try:
        position = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise refused from None
    if expect is not None and (not isinstance(position, expect) or isinstance(position, bool)
                               and bool not in (expect if isinstance(expect, tuple) else (expect,))):
        raise refused
    return position


def scope(list_name: str, *filters: Any) -> str:
    """The scope of a list's tokens: its name and the filters that must stay
    the same from page to page (a token of other filters is refused)."""
    return json.dumps([list_name, *filters], separators=(",", ":"), default=str)
