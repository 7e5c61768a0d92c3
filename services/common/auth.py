"""Bearer-token authentication and per-RPC role authorization.

Tokens live in a YAML file as SHA-256 hashes only; the file is re-read when it
changes, so tokens rotate without a restart. The role matrix (rbac.yaml) maps
full method names to roles; whatever it does not name is denied to all but
`admin`.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import logging
import os
import secrets
import tempfile
import threading
from dataclasses import dataclass
from typing import Any
from datetime import datetime, timezone
from pathlib import Path

import grpc
import yaml

from services.common.errors import Unauthenticated
from services.common.grpc_errors import abort_status
from services.common.rpc import CallContext, MethodInterceptor, metadata_value, reset_quietly, scoped, wrap_handler
from services.common.tls import peer_identities

log = logging.getLogger(__name__)

ADMIN_ROLE = "admin"
SERVICE_ROLE = "service"
ROLES = ("core_banking", "mobile_banking", "hr", "operations", "rule_admin",
         "branch_staff", "branch_approver", "admin")
DEFAULT_POLICY_PATH = Path(__file__).with_name("rbac.yaml")

# Health and reflection answer anyone: probes and grpcurl carry no token.
OPEN_PREFIXES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)


@dataclass(frozen=True)
class Principal:
    name: str
    roles: frozenset[str]

    def has_role(self, *roles: str) -> bool:
        return ADMIN_ROLE in self.roles or any(r in self.roles for r in roles)


_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("kequn_principal", default=None)


def current_principal() -> Principal:
    """The authenticated caller of the RPC being served."""
    p = _principal.get()
    if p is None:
        raise Unauthenticated("no authenticated principal")
    return p


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def bearer_metadata(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def _parse_expiry(value) -> datetime | None:
    if value in (None, ""):
        return None
    dt = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class _Entry:
    principal: Principal
    expires_at: datetime | None


def _load_tokens(path: Path) -> dict[str, _Entry]:
    return _parse_tokens(path, yaml.safe_load(path.read_text(encoding="utf-8")) or {})


def _parse_tokens(path: Path, doc: dict) -> dict[str, _Entry]:
    entries: dict[str, _Entry] = {}
    for i, item in enumerate(doc.get("tokens") or []):
        digest = str(item.get("sha256", "")).strip().lower()
        if len(digest) != 64 or not item.get("name"):
            raise ValueError(f"{path}: tokens[{i}] needs a name and a sha256 hex digest")
        entries[digest] = _Entry(
            Principal(str(item["name"]), frozenset(map(str, item.get("roles") or ()))),
            _parse_expiry(item.get("expires_at")),
        )
    return entries


def _parse_subjects(path: Path, doc: dict, tokens: dict[str, _Entry]) -> dict[str, _Entry]:
    """Client-certificate identity (CN or SAN) -> principal, for mTLS.

    `principals: [{name, subject (default: name), roles, expires_at}]`; a
    token entry's name also matches a certificate naming it, so one
    principal keeps one set of roles whether it shows a token or a cert."""
    subjects = {e.principal.name: e for e in tokens.values()}
    for i, item in enumerate(doc.get("principals") or []):
        if not isinstance(item, dict) or not item.get("name"):
            raise ValueError(f"{path}: principals[{i}] needs a name")
        entry = _Entry(Principal(str(item["name"]), frozenset(map(str, item.get("roles") or ()))),
                       _parse_expiry(item.get("expires_at")))
        subjects[str(item.get("subject") or item["name"])] = entry
    return subjects


class TokenStore:
    """Hashed tokens from a YAML file, re-read whenever the file changes."""

    def __init__(self, path: str | os.PathLike, clock=lambda: datetime.now(timezone.utc)) -> None:
        self.path = Path(path)
        self._clock = clock
        self._lock = threading.Lock()
        self._stamp: tuple | None = None
        self._entries: dict[str, _Entry] = {}
        self._subjects: dict[str, _Entry] = {}

    def _refresh(self) -> None:
        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            stamp = None
        with self._lock:
            if stamp == self._stamp:
                return
            if stamp is None:
                log.warning("tokens file %s missing: every call is unauthenticated", self.path)
                self._entries, self._subjects, self._stamp = {}, {}, None
                return
            try:
                doc = yaml.safe_load(self.path.read_text(encoding="utf-8")) or {}
                entries = _parse_tokens(self.path, doc)
                self._subjects = _parse_subjects(self.path, doc, entries)
                self._entries = entries
            except (OSError, ValueError, yaml.YAMLError) as exc:
                # A half-written rotation must not lock everyone out: keep the
                # previous tokens and try again on the next call.
                log.error("cannot load tokens file %s, keeping previous tokens: %s", self.path, exc)
                return
            self._stamp = stamp
            log.info("loaded %d tokens from %s", len(self._entries), self.path)

    def authenticate(self, token: str | None) -> Principal | None:
        """The principal for a valid, unexpired token; None otherwise."""
        if not token:
            return None
        self._refresh()
        digest = hash_token(token)
        entry = None
        for known, e in self._entries.items():  # constant-time compare, no early exit
            if hmac.compare_digest(known, digest):
                entry = e
        if entry is None or (entry.expires_at is not None and entry.expires_at <= self._clock()):
            return None
        return entry.principal

    def authenticate_certificate(self, identities) -> Principal | None:
        """The principal for the first known, unexpired identity of a verified client certificate."""
        if not identities:
            return None
        self._refresh()
        for name in identities:
            entry = self._subjects.get(name)
            if entry is not None and (entry.expires_at is None or entry.expires_at > self._clock()):
                return entry.principal
        return None


# Two rule owners, so four-eyes releases (one requests, the other approves)
# work out of the box in development (DOMAIN.md §7).
DEV_EXTRA_PRINCIPALS = {"rule_owner_1": ("rule_admin",), "rule_owner_2": ("rule_admin",)}


def generate_dev_tokens(path: str | os.PathLike) -> dict[str, str]:
    """Write a tokens file with one principal per role (plus `service` and
    the DEV_EXTRA_PRINCIPALS); return name -> plaintext token. The plaintext
    is never stored."""
    path = Path(path)
    names = (*ROLES, SERVICE_ROLE, *DEV_EXTRA_PRINCIPALS)
    tokens = {name: secrets.token_urlsafe(32) for name in names}
    doc = {"tokens": [
        {"name": name, "roles": list(DEV_EXTRA_PRINCIPALS.get(name, (name,))), "sha256": hash_token(tok),
         "expires_at": None}
        for name, tok in tokens.items()
    ]}
    _write_private(path, yaml.safe_dump(doc, sort_keys=False))
    return tokens


def _write_private(path: Path, text: str) -> None:
    """Atomic replace with mode 0600, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tokens-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Policy:
    """Full method name (or '/pkg.Service/*') -> roles allowed. Deny by default."""

    def __init__(self, methods: dict[str, frozenset[str]]) -> None:
        self.methods = methods

    @classmethod
    def load(cls, path: str | os.PathLike | None = None) -> "Policy":
        doc = yaml.safe_load(Path(path or DEFAULT_POLICY_PATH).read_text(encoding="utf-8")) or {}
        methods = {}
        for name, roles in (doc.get("methods") or {}).items():
            if not str(name).startswith("/") or str(name).count("/") != 2:
                raise ValueError(f"rbac: {name!r} is not '/package.Service/Method' or '/package.Service/*'")
            methods[str(name)] = frozenset(map(str, roles or ()))
        return cls(methods)

    def roles_for(self, method: str) -> frozenset[str]:
        # An exact entry wins over the service wildcard so one RPC can be
        # narrowed below the rest of its service.
        if method in self.methods:
            return self.methods[method]
        service = method.rsplit("/", 1)[0]
        return self.methods.get(service + "/*", frozenset())

    def allows(self, principal: Principal, method: str) -> bool:
        return ADMIN_ROLE in principal.roles or bool(principal.roles & self.roles_for(method))


def _bearer(ctx: grpc.ServicerContext) -> str | None:
    value = metadata_value(ctx, "authorization")
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


class AuthInterceptor(MethodInterceptor):
    """Authenticates the bearer token, checks the policy, sets current_principal()."""

    def __init__(self, token_store: TokenStore, policy: Policy) -> None:
        self.tokens = token_store
        self.policy = policy

    def wrap_method(self, method, handler):
        if method.startswith(OPEN_PREFIXES):
            return handler

        # Checked inside the behavior: it runs on the worker thread, where
        # the principal contextvar must be set.
        def admit(request, context) -> tuple[Any, CallContext, contextvars.Token]:
            ctx = CallContext.of(context)
            token = _bearer(ctx)
            if token is not None:  # a token shown must be valid: no fallback to the cert
                principal = self.tokens.authenticate(token)
            else:  # mTLS: the verified client certificate names the caller
                principal = self.tokens.authenticate_certificate(peer_identities(ctx))
            if principal is None:
                abort_status(ctx, grpc.StatusCode.UNAUTHENTICATED,
                             "missing, invalid or expired bearer token or client certificate", "UNAUTHENTICATED")
            ctx.fields["principal"] = principal.name
            if not self.policy.allows(principal, method):
                abort_status(ctx, grpc.StatusCode.PERMISSION_DENIED, f"{principal.name} may not call {method}",
                             "PERMISSION_DENIED", {"principal": principal.name, "method": method})
            return request, ctx, _principal.set(principal)

        return wrap_handler(handler, scoped(admit, lambda token: reset_quietly(_principal, token)))
