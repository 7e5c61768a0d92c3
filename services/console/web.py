"""The HTTP edge: routes, sign-in, sessions, CSRF, security headers, metrics.

Thin on purpose: each handler reads the request, calls the backend as the
signed-in person, hands plain values to views.py/charts.py and renders a
template (Jinja2 with autoescape on: everything a service or a person sent is
escaped). The blocking gRPC calls run in Starlette's thread pool.
"""
from __future__ import annotations

import hmac
import logging
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from kequn.assignment.v1 import assignment_pb2 as apb
from services.common.auth import Principal, TokenStore

from . import charts, i18n, views
from .access import Access
from .backend import SERVICES, Backend, BackendError
from .config import ConsoleConfig
from .sessions import Session, SessionStore

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
COOKIE_PLAIN, COOKIE_HOST = "kequn_console", "__Host-kequn_console"
CSP = ("default-src 'self'; script-src 'none'; style-src 'self'; img-src 'self'; object-src 'none'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
CHANGE_ACTIONS = ("TRANSFER", "ADD", "REMOVE")
SAFE_ID = re.compile(r"^[A-Za-z0-9_.:@-]{1,128}$")


class TooLarge(Exception):
    pass


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


class BackendCollector:
    """kequn_console_backend_calls_total / _seconds_total from the backend's counts."""

    def __init__(self, backend: Backend, sessions: SessionStore) -> None:
        self.backend, self.sessions = backend, sessions

    def collect(self):
        counts, seconds = self.backend.stats.snapshot()
        calls = CounterMetricFamily("kequn_console_backend_calls", "gRPC calls the console made as its users.",
                                    labels=("service", "method", "grpc_code"))
        for (service, method, code), n in sorted(counts.items()):
            calls.add_metric((service, method, code), n)
        spent = CounterMetricFamily("kequn_console_backend_call_seconds", "Time spent in those calls.",
                                    labels=("service", "method"))
        for (service, method), s in sorted(seconds.items()):
            spent.add_metric((service, method), s)
        sessions = GaugeMetricFamily("kequn_console_sessions", "Live console sessions.", labels=("state",))
        total, signed = len(self.sessions), self.sessions.signed_in()
        sessions.add_metric(("signed_in",), signed)
        sessions.add_metric(("anonymous",), total - signed)
        return [calls, spent, sessions]


def _safe_next(value: str | None) -> str:
    """A local path to go back to; never another site (open redirect)."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/"


def _error_dict(ctx: Ctx, error: BackendError) -> dict:
    return {"kind": "error", "text": i18n.reason_words(error.reason, ctx.lang), "reason": error.reason,
            "detail": error.message, "violations": error.violations}


class Console:
    def __init__(self, config: ConsoleConfig, backend: Backend, tokens: TokenStore, access: Access,
                 sessions: SessionStore | None = None, registry: CollectorRegistry | None = None) -> None:
        self.config, self.backend, self.tokens, self.access = config, backend, tokens, access
        self.sessions = sessions or SessionStore(config.session_idle_seconds, config.session_max_seconds)
        self.registry = registry or CollectorRegistry()
        self.http_requests = Counter("kequn_console_http_requests_total", "HTTP requests served by the console.",
                                     ("route", "method", "code"), registry=self.registry)
        self.http_seconds = Histogram("kequn_console_http_request_seconds", "Time to answer an HTTP request.",
                                      ("route",), registry=self.registry)
        self.registry.register(BackendCollector(backend, self.sessions))
        self.env = Environment(loader=FileSystemLoader(HERE / "templates"),
                               autoescape=select_autoescape(default=True, default_for_string=True),
                               trim_blocks=True, lstrip_blocks=True)
        self.env.globals.update(yuan=views.yuan, ts=views.timestamp, enum_name=views.enum_name, enum_of=views.enum_of,
                                fill_percent=views.fill_percent, fill_bar=charts.fill_bar)

    # --- plumbing ------------------------------------------------------------------------
    def app(self) -> Starlette:
        routes = [
            Route("/healthz", self.healthz), Route("/readyz", self.readyz), Route("/metrics", self.metrics),
            Route("/", self.home), Route("/favicon.ico", self.favicon),
            Route("/signin", self.signin_page), Route("/signin", self.signin, methods=["POST"]),
            Route("/signout", self.signout, methods=["POST"]), Route("/lang", self.switch_lang, methods=["POST"]),
            Route("/approvals", self.approvals),
            Route("/approvals/{change_request_id}/decide", self.decide, methods=["POST"]),
            Route("/books", self.books),
            Route("/customers", self.customers),
            Route("/customers/{customer_id}/change-requests", self.request_change, methods=["POST"]),
            Route("/scores", self.scores), Route("/scores/{period_id}/staff/{staff_id}", self.score),
            Route("/scores/{period_id}/csv", self.scores_csv),
            Route("/rules", self.rules),
            Route("/rules/{service}/{name}", self.ruleset),
            Route("/rules/{service}/{name}/diff", self.ruleset_diff),
            Route("/rules/{service}/{name}/versions", self.upload, methods=["POST"]),
            Route("/rules/{service}/{name}/v/{version:int}", self.version),
            Route("/rules/{service}/{name}/v/{version:int}/{op}", self.version_op, methods=["POST"]),
            Route("/operations", self.operations),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ]
        app = Starlette(routes=routes, exception_handlers={
            TooLarge: self._too_large, HTTPException: self._http_error})
        return self._middleware(app)

    def _middleware(self, inner):
        limit = self.config.max_body_bytes

        async def asgi(scope, receive, send):
            if scope["type"] != "http":
                return await inner(scope, receive, send)
            start = time.perf_counter()
            status = {"code": 500}
            headers = dict(scope.get("headers") or ())
            try:
                declared = int(headers.get(b"content-length", b"0") or 0)
            except ValueError:
                declared = limit + 1
            received = {"n": 0}

            async def counted_receive():
                message = await receive()
                received["n"] += len(message.get("body", b""))
                if received["n"] > limit:
                    raise TooLarge()
                return message

            async def wrapped_send(message):
                if message["type"] == "http.response.start":
                    status["code"] = message["status"]
                    extra = [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
                             (b"x-frame-options", b"DENY"), (b"referrer-policy", b"no-referrer")]
                    if not scope["path"].startswith("/static/"):
                        extra.append((b"cache-control", b"no-store"))
                    message = {**message, "headers": list(message.get("headers", [])) + extra}
                await send(message)

            try:
                if declared > limit:
                    response = PlainTextResponse("request too large", status_code=413)
                    await response(scope, receive, wrapped_send)
                else:
                    await inner(scope, counted_receive, wrapped_send)
            finally:
                endpoint = scope.get("endpoint")
                route = getattr(endpoint, "__name__", None) or ("static" if scope["path"].startswith("/static/")
                                                                else "not_found")
                self.http_requests.labels(route, scope.get("method", ""), str(status["code"])).inc()
                self.http_seconds.labels(route).observe(time.perf_counter() - start)
        return asgi

    def _secure(self, request: Request) -> bool:
        if self.config.cookie_secure == "auto":
            return request.url.scheme == "https"
        return self.config.cookie_secure == "true"

    def _cookie_name(self, request: Request) -> str:
        return COOKIE_HOST if self._secure(request) else COOKIE_PLAIN

    def _ctx(self, request: Request) -> Ctx:
        """The request's session: resumed, signed in by the gateway's header, or new."""
        session = self.sessions.get(request.cookies.get(self._cookie_name(request)))
        new = False
        if self.config.trusted_header:
            token = (request.headers.get(self.config.trusted_header) or "").strip()
            if token.lower().startswith("bearer "):
                token = token[7:].strip()
            if token and (session is None or not hmac.compare_digest(session.token, token)):
                # The gateway's word is final: a header naming someone else, or no one
                # valid, ends whatever session the cookie held.
                principal = self.tokens.authenticate(token)
                if principal is not None:
                    session, new = self.sessions.sign_in(session, token, principal), True
                elif session is not None:
                    self.sessions.drop(session)
                    session = None
        if session is None:
            session, new = self.sessions.new(i18n.pick_lang(request.headers.get("accept-language"))), True
        elif session.principal is not None:
            # Every request re-checks the token: a revoked, rotated or expired token ends the session.
            principal = self.tokens.authenticate(session.token)
            if principal is None:
                lang = session.lang
                self.sessions.drop(session)
                session, new = self.sessions.new(lang), True
                session.flash("info", i18n.label("session_ended", lang))
            else:
                session.principal = principal
        return Ctx(request, session, new)

    def _finish(self, ctx: Ctx, response: Response) -> Response:
        # Set on every answer (no Max-Age: gone with the browser); the server-side expiry is what counts.
        response.set_cookie(self._cookie_name(ctx.request), ctx.session.sid, httponly=True,
                            secure=self._secure(ctx.request), samesite="strict", path="/")
        return response

    def render(self, ctx: Ctx, template: str, status: int = 200, **values) -> Response:
        me = ctx.me
        allowed = self.access.allowed_actions(me) if me else frozenset()
        html = self.env.get_template(template).render(
            t=ctx.t, lang=ctx.lang, me=me, pages=self.access.pages(me) if me else [], can=allowed,
            csrf=ctx.session.csrf, flashes=ctx.session.take_flashes(), path=ctx.request.url.path,
            here=str(ctx.request.url.path) + (("?" + ctx.request.url.query) if ctx.request.url.query else ""),
            token_signin=self.config.token_signin, trusted_header=bool(self.config.trusted_header), **values)
        return self._finish(ctx, HTMLResponse(html, status_code=status))

    def redirect(self, ctx: Ctx, to: str) -> Response:
        return self._finish(ctx, RedirectResponse(to, status_code=303))

    async def _form(self, ctx: Ctx) -> FormData:
        """The posted form, after the CSRF check (a missing or wrong token is refused)."""
        form = await ctx.request.form(max_files=1, max_fields=50, max_part_size=self.config.max_body_bytes)
        sent = form.get("csrf_token")
        if not isinstance(sent, str) or not hmac.compare_digest(sent.encode(), ctx.session.csrf.encode()):
            raise Refused(403, "csrf")
        return form

    def _need(self, ctx: Ctx, page: str | None = None, action: str | None = None) -> None:
        if ctx.me is None:
            raise Refused(401, "signin")
        if page and not self.access.page(ctx.me, page):
            raise Refused(403, "forbidden")
        if action and not self.access.can(ctx.me, action):
            raise Refused(403, "forbidden")

    def _refusal(self, ctx: Ctx, refused: Refused) -> Response:
        if refused.key == "signin":
            return self.redirect(ctx, "/signin?next=" + _urlquote(ctx.request.url.path))
        return self.render(ctx, "error.html", refused.status, message=ctx.t(refused.key))

    async def _handle(self, request: Request, body) -> Response:
        ctx = self._ctx(request)
        try:
            return await body(ctx)
        except Refused as refused:
            return self._refusal(ctx, refused)
        except TooLarge:
            raise
        except Exception:  # noqa: BLE001 - a bug must not show a traceback; the log has it, under an id
            error_id = uuid.uuid4().hex[:12]
            log.exception("console error %s on %s %s", error_id, request.method, request.url.path)
            return self.render(ctx, "error.html", 500, message=f"{ctx.t('error')} ({error_id})")

    async def _too_large(self, request: Request, exc: TooLarge) -> Response:
        return PlainTextResponse("request too large", status_code=413)

    async def _http_error(self, request: Request, exc: HTTPException) -> Response:
        ctx = self._ctx(request)
        key = "page_not_found" if exc.status_code == 404 else "error"
        return self.render(ctx, "error.html", exc.status_code, message=ctx.t(key))

    # --- health, metrics -----------------------------------------------------------------
    async def healthz(self, request: Request) -> Response:
        return PlainTextResponse("ok")

    async def readyz(self, request: Request) -> Response:
        # Ready = able to serve pages. The services' state is reported, not gated on:
        # the Operations page is where people see a service that is down.
        backends = await run_in_threadpool(lambda: {s: self.backend.health(s) for s in SERVICES})
        return JSONResponse({"ready": True, "backends": backends})

    async def metrics(self, request: Request) -> Response:
        return Response(generate_latest(self.registry), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def favicon(self, request: Request) -> Response:
        return RedirectResponse("/static/favicon.svg", status_code=301)

    # --- sign-in -------------------------------------------------------------------------
    async def home(self, request: Request) -> Response:
        ctx = self._ctx(request)
        if ctx.me is None:
            return self.redirect(ctx, "/signin")
        return self.render(ctx, "home.html")

    async def signin_page(self, request: Request) -> Response:
        ctx = self._ctx(request)
        return self.render(ctx, "signin.html", next=_safe_next(request.query_params.get("next")))

    async def signin(self, request: Request) -> Response:
        async def body(ctx: Ctx):
            form = await self._form(ctx)
            if not self.config.token_signin:
                raise Refused(403, "forbidden")
            token = str(form.get("token") or "").strip()
            principal = self.tokens.authenticate(token) if 0 < len(token) <= 512 else None
            if principal is None:
                return self.render(ctx, "signin.html", 401, error=ctx.t("bad_token"),
                                   next=_safe_next(str(form.get("next") or "/")))
            ctx.session = self.sessions.sign_in(ctx.session, token, principal)
            log.info("console sign-in", extra={"principal": principal.name})
            return self.redirect(ctx, _safe_next(str(form.get("next") or "/")))
        return await self._handle(request, body)

    async def signout(self, request: Request) -> Response:
        async def body(ctx: Ctx):
            await self._form(ctx)
            lang = ctx.session.lang
            self.sessions.drop(ctx.session)
            ctx.session = self.sessions.new(lang)
            return self.redirect(ctx, "/signin")
        return await self._handle(request, body)

    async def switch_lang(self, request: Request) -> Response:
        async def body(ctx: Ctx):
            form = await self._form(ctx)
            ctx.session.lang = i18n.lang_of(str(form.get("lang") or ""))
            return self.redirect(ctx, _safe_next(str(form.get("next") or "/")))
        return await self._handle(request, body)

    # --- approvals -----------------------------------------------------------------------
    async def approvals(self, request: Request) -> Response:
        async def body(ctx: Ctx):
            self._need(ctx, "approvals")
            q = request.query_params
            return self.render(ctx, "approvals.html", **await run_in_threadpool(
                self._approvals, ctx, q.get("branch_id"), q.get("page_token", "")))
        return await self._handle(request, body)

    def _approvals(self, ctx: Ctx, branch_id: str | None, page_token: str) -> dict:
        token, me = ctx.token, ctx.me
        my_branch = ""
        if self.access.can(me, "books.view"):
            try:  # the approver is a staff member whose id is the sign-in name
                my_branch = self.backend.get_book(token, me.name, page_size=1).branch_id
            except BackendError:
                my_branch = ""
        branch = my_branch if branch_id is None else branch_id.strip()
        error = None
        try:
            page = self.backend.list_change_requests(token, apb.CHANGE_REQUEST_STATUS_PENDING, branch,
                                                     page_size=20, page_token=page_token)
            pending, next_token = list(page.change_requests), page.next_page_token
        except BackendError as exc:
            pending, next_token, error = [], "", _error_dict(ctx, exc)
        books: dict[str, views.BookFill | None] = {}

        def fill(staff_id: str) -> views.BookFill | None:
            if not staff_id or not self.access.can(me, "books.view"):
                return None
            if staff_id not in books:
                try:
                    b = self.backend.get_book(token, staff_id, page_size=1)
                    books[staff_id] = views.BookFill(staff_id, b.size, b.max_size)
                except BackendError:
                    books[staff_id] = None
            return books[staff_id]

        tiers: dict[str, str] = {}
        rows = []
        for r in pending:
            action = views.enum_name(apb.ChangeAction.Name(r.action), "CHANGE_ACTION_")
            if r.customer_id not in tiers and self.access.can(me, "customers.tier"):
                try:
                    tiers[r.customer_id] = self.backend.get_customer_tier(token, r.customer_id).tier
                except BackendError:
                    tiers[r.customer_id] = ""
            rows.append({"r": r, "action": action, "tier": tiers.get(r.customer_id, ""),
                         "effects": views.effects(action, fill(r.from_staff_id), fill(r.to_staff_id)),
                         "own": r.requested_by == me.name})
        return {"rows": rows, "branch": branch, "my_branch": my_branch, "next_token": next_token, "error": error}

    async def decide(self, request: Request) -> Response:
        async def body(ctx: Ctx):
            form = await self._form(ctx)
            approve = form.get("decision") == "approve"
            self._need(ctx, "approvals", "approvals.approve" if approve else "approvals.reject")
            cr_id = request.path_params["change_request_id"]
            comment = str(form.get("comment") or "")[:1000]
            try:
                await run_in_threadpool(self.backend.decide_change_request, ctx.token, cr_id, approve, comment,
                                        uuid.uuid4().hex)
                ctx.session.flash("ok", ctx.t("approved_msg" if approve else "rejected_msg", id=cr_id))
            except BackendError as exc:
                words = i18n.reason_words(exc.reason, ctx.lang)
                ctx.session.flash("error", f"{ctx.t('refused')} ({cr_id}): {words} [{exc.reason}] {exc.message}")
            return self.redirect(ctx, "/approvals")
        return await self._handle(request, body)

    # --- books ---------------------------------------------------------------------------
    async def books(self, request: Request) -> Response:
        async def body(ctx: Ctx):
            self._need(ctx, "books")
            staff_id = (request.query_params.get("staff_id") or ctx.me.name).strip()
            page_token = request.query_params.get("page_token", "")

            def load():
                try:
                    return self.backend.get_book(ctx.token, staff_id, page_size=100, page_token=page_token), None
                except BackendError as exc:
                    return None, _error_dict(ctx, exc)
            book, error = await run_in_threadpool(load)
            return self.render(ctx, "books.html", staff_id=staff_id, book=book, error=error,
                               mine=staff_id == ctx.me.name)
        return await self._handle(request, body)

    # --- customers -----------------------------------------------------------------------
    async def customers(self, request: Request) -> Response:
        async def body(ctx: Ctx):
            self._need(ctx, "customers")
            customer_id = (request.query_params.get("customer_id") or "").strip()[:128]
            data = await run_in_threadpool(self._customer, ctx, customer_id) if customer_id else {}
            return self.render(ctx, "customers.html", customer_id=customer_id, **data)
        return await self._handle(request, body)

    async def request_change(self, request: Request) -> Response:
        """A maker asks to add, remove or transfer a customer; an approver decides (maker–checker)."""
        async def body(ctx: Ctx):
            form = await self._form(ctx)
            self._need(ctx, "customers", "customers.request_change")
            customer_id = request.path_params["customer_id"]
            action = str(form.get("action") or "")
            if action not in CHANGE_ACTIONS:
                raise Refused(400, "error")
            fields = {k: str(form.get(k) or "").strip()[:128] for k in ("from_staff_id", "to_staff_id")}
            reason = str(form.get("reason") or "").strip()[:1000]
            try:
                created = await run_in_threadpool(self.backend.create_change_request, ctx.token, customer_id,
                                                  action, fields["from_staff_id"], fields["to_staff_id"], reason,
                                                  uuid.uuid4().hex)
                ctx.session.flash("ok", ctx.t("requested_msg", id=created.change_request_id))
            except BackendError as exc:
                words = i18n.reason_words(exc.reason, ctx.lang)
                ctx.session.flash("error", f"{ctx.t('refused')}: {words} [{exc.reason}] {exc.message}")
            return self.redirect(ctx, "/customers?customer_id=" + _urlquote(customer_id))
        return await self._handle(request, body)

    def _customer(self, ctx: Ctx, customer_id: str) -> dict:
        token, me = ctx.token, ctx.me
        out: dict = {"errors": {}}

        def section(name, action, call):
            if not self.access.can(me, action):
                return
            try:
                out[name] = call()
            except BackendError as exc:
                out["errors"][name] = _error_dict(ctx, exc)
        section("decision", "customers.tier", lambda: self.backend.get_customer_tier(token, customer_id))
        section("history", "customers.history",
                lambda: list(self.backend.list_tier_changes(token, customer_id, page_size=100).changes))
        section("managers", "customers.managers",
                lambda: list(self.backend.get_customer_managers(token, customer_id).assignments))
        section("entitlements", "customers.entitlements",
                lambda: list(self.backend.list_entitlements(token, customer_id).entitlements))
        return out

    # --- scores --------------------------------------------------------------------------
    async def scores(self, request: Request) -> Response:
        async def body(ctx: Ctx):
            self._need(ctx, "scores")
            q = request.query_params
            period_id = (q.get("period_id") or "").strip()[:64]
            role, branch_id = (q.get("role") or "").strip()[:64], (q.get("branch_id") or "").strip()[:64]
            finalized_only = q.get("finalized_only") == "1"
            page_token = q.get("page_token", "")

            def load():
                if not period_id:
                    return {}
                try:
                    page = self.backend.list_scores(ctx.token, period_id, role, branch_id, finalized_only,
                                                    page_size=100, page_token=page_token)
                    everyone = page.scores if not page.next_page_token and not page_token else \
                        self.backend.all_scores(ctx.token, period_id, finalized_only, role, branch_id)
                    return {"scores": list(page.scores), "next_token": page.next_page_token,
                            "summary": views.score_summary(everyone)}
                except BackendError as exc:
                    return {"error": _error_dict(ctx, exc)}
            return self.render(ctx, "scores.html", period_id=period_id, role=role, branch_id=branch_id,
                               finalized_only=finalized_only, **await run_in_threadpool(load))
        return await self._handle(request, body)

    async def score(self, request: Request) -> Response:
        async def body(ctx: Ctx):
            self._need(ctx, "scores")
            p = request.path_params

            def load():
                try:
                    return {"score": self.backend.get_score(ctx.token, p["staff_id"], p["period_id"])}
                except BackendError as exc:
                    return {"error": _error_dict(ctx, exc)}
            return self.render(ctx, "score.html", period_id=p["period_id"], staff_id=p["staff_id"],
                               **await run_in_threadpool(load))
        return await self._handle(request, body)

    async def scores_csv(self, request: Request) -> Response:
        async def body(ctx: Ctx):
            self._need(ctx, "scores")
            period_id = request.path_params["period_id"]
            if not SAFE_ID.match(period_id):
                raise Refused(404, "page_not_found")
            try:
                # Finalized results only: the CSV is what HR files, and it never changes after.
                scores = await run_in_threadpool(lambda: list(self.backend.all_scores(ctx.token, period_id, True)))
            except BackendError as exc:
                return self.render(ctx, "error.html", 409 if exc.code == "FAILED_PRECONDITION" else 400,
                                   message=i18n.reason_words(exc.reason, ctx.lang), error=_error_dict(ctx, exc))
            if not scores:
                return self.render(ctx, "error.html", 409, message=ctx.t("not_finalized"))
            response = Response(views.scores_csv(scores), media_type="text/csv; charset=utf-8", headers={
                "content-disposition": f'attachment; filename="scores-{period_id}.csv"'})
            return self._finish(ctx, response)
        return await self._handle(request, body)

    # --- rules ---------------------------------------------------------------------------
    def _service(self, request: Request) -> str:
        service = request.path_params["service"]
        if service not in SERVICES:
            raise Refused(404, "page_not_found")
        version = request.path_params.get("version")
        if version is not None and not 0 < version < 2**63:  # an int64 in the contract
            raise Refused(404, "page_not_found")
        return service

    async def rules(self, request: Request) -> Response:
        async def body(ctx: Ctx):
            self._need(ctx, "rules")
            return self.render(ctx, "rules.html", **await run_in_threadpool(self._rulesets, ctx))
        return await self._handle(request, body)

    def _rulesets(self, ctx: Ctx) -> dict:
        rows, errors = [], {}
        for service in SERVICES:
            try:
                rows += [(service, r) for r in self.backend.list_rulesets(ctx.token, service)]
            except BackendError as exc:
                errors[service] = _error_dict(ctx, exc)
        return {"rulesets": rows, "errors": errors}

    async def ruleset(self, request: Request) -> Response:
        async def body(ctx: Ctx):
            self._need(ctx, "rules")
            service, name = self._service(request), request.path_params["name"]
            return self.render(ctx, "ruleset.html", service=service, name=name,
                               **await run_in_threadpool(self._versions, ctx, service, name))
        return await self._handle(request, body)

    def _versions(self, ctx: Ctx, service: str, name: str) -> dict:
        try:
            page = self.backend.list_ruleset_versions(ctx.token, service, name, page_size=100)
            return {"versions": list(page.versions)}
        except BackendError as exc:
            return {"versions": [], "error": _error_dict(ctx, exc)}

    async def ruleset_diff(self, request: Request) -> Response:
        async def body(ctx: Ctx):
            self._need(ctx, "rules")
            service, name = self._service(request), request.path_params["name"]
            try:
                old_v, new_v = int(request.query_params.get("from", "")), int(request.query_params.get("to", ""))
            except ValueError:
                raise Refused(400, "error") from None
            if not (0 <= old_v < 2**63 and 0 <= new_v < 2**63):
                raise Refused(400, "error")

            def load():
                try:
                    old = self.backend.get_ruleset(ctx.token, service, name, old_v)
                    new = self.backend.get_ruleset(ctx.token, service, name, new_v)
                except BackendError as exc:
                    return {"error": _error_dict(ctx, exc)}
                return {"lines": views.diff_documents(old.document, new.document, f"{name} v{old.version}",
                                                      f"{name} v{new.version}"), "old": old, "new": new}
            data = await run_in_threadpool(load)
            data.update(await run_in_threadpool(self._versions, ctx, service, name))
            return self.render(ctx, "diff.html", service=service, name=name, from_v=old_v, to_v=new_v, **data)
        return await self._handle(request, body)

    async def upload(self, request: Request) -> Response:
        async def body(ctx: Ctx):
            form = await self._form(ctx)
            self._need(ctx, "rules", "rules.upload")
            service, name = self._service(request), request.path_params["name"]
            document = str(form.get("document") or "")
            upload = form.get("file")
            if hasattr(upload, "read") and getattr(upload, "filename", ""):
                raw = await upload.read()
                if raw:
                    document = raw.decode("utf-8", errors="replace")
            # Browsers send a textarea's lines with CRLF: store what the owner typed, with plain newlines.
            document = document.replace("\r\n", "\n")
            comment = str(form.get("comment") or "")[:500]
            try:
                created = await run_in_threadpool(self.backend.create_ruleset_version, ctx.token, service, name,
                                                  document, comment, uuid.uuid4().hex)
            except BackendError as exc:
                data = await run_in_threadpool(self._versions, ctx, service, name)
                return self.render(ctx, "ruleset.html", 400, service=service, name=name, document=document,
                                   comment=comment, upload_error=_error_dict(ctx, exc), **data)
            ctx.session.flash("ok", ctx.t("uploaded_msg", version=created.version))
            return self.redirect(ctx, f"/rules/{service}/{_urlquote(name)}/v/{created.version}")
        return await self._handle(request, body)

    async def version(self, request: Request) -> Response:
        async def body(ctx: Ctx):
            self._need(ctx, "rules")
            service, name, version = self._service(request), request.path_params["name"], \
                request.path_params["version"]
            return self.render(ctx, "version.html", **await run_in_threadpool(self._version, ctx, service, name,
                                                                             version))
        return await self._handle(request, body)

    def _version(self, ctx: Ctx, service: str, name: str, version: int, **extra) -> dict:
        out = {"service": service, "name": name, "version": version, **extra}
        try:
            out["rv"] = self.backend.get_ruleset(ctx.token, service, name, version)
        except BackendError as exc:
            out["error"] = _error_dict(ctx, exc)
        return out

    async def version_op(self, request: Request) -> Response:
        async def body(ctx: Ctx):
            form = await self._form(ctx)
            service, name = self._service(request), request.path_params["name"]
            version, op = request.path_params["version"], request.path_params["op"]
            if op not in ("test", "simulate", "publish"):
                raise Refused(404, "page_not_found")
            self._need(ctx, "rules", f"rules.{op}")
            extra: dict = {}
            if op == "test":
                try:
                    extra["test"] = await run_in_threadpool(self.backend.test_ruleset, ctx.token, service, name,
                                                            version)
                except BackendError as exc:
                    extra["op_error"] = _error_dict(ctx, exc)
            elif op == "simulate":
                text = str(form.get("sample") or "")
                extra["sample"] = text
                try:
                    sample = views.parse_sample(text)
                    result = await run_in_threadpool(self.backend.simulate_ruleset, ctx.token, service, name,
                                                     version, sample)
                    extra["simulation"] = result
                    extra["heatmaps"] = [(m, charts.heatmap(
                        m, f"{m.key}: {ctx.t('migration', active=result.active_version or '-')}",
                        f"v{result.active_version or '-'}", f"v{version}")) for m in views.matrices(result.transitions)]
                except views.SampleError as exc:
                    extra["op_error"] = {"kind": "error", "text": ctx.t("bad_sample", line=exc.line),
                                         "reason": "INVALID_INPUT", "detail": "", "violations": []}
                except BackendError as exc:
                    extra["op_error"] = _error_dict(ctx, exc)
            else:
                comment = str(form.get("comment") or "")[:500]
                try:
                    await run_in_threadpool(self.backend.publish_ruleset, ctx.token, service, name, version,
                                            comment, uuid.uuid4().hex)
                    ctx.session.flash("ok", ctx.t("published_msg", version=version))
                    return self.redirect(ctx, f"/rules/{service}/{_urlquote(name)}/v/{version}")
                except BackendError as exc:
                    extra["op_error"] = _error_dict(ctx, exc)
            status = 200 if "op_error" not in extra else 400
            return self.render(ctx, "version.html", status, **await run_in_threadpool(
                lambda: self._version(ctx, service, name, version, **extra)))
        return await self._handle(request, body)

    # --- operations ----------------------------------------------------------------------
    async def operations(self, request: Request) -> Response:
        async def body(ctx: Ctx):
            self._need(ctx, "operations")
            q = request.query_params
            actor, action = (q.get("actor") or "").strip()[:128], (q.get("action") or "").strip()[:128]
            page_token = q.get("page_token", "")

            def load():
                out = {"health": {s: self.backend.health(s) for s in SERVICES}, **self._rulesets(ctx)}
                try:
                    page = self.backend.list_audit_events(ctx.token, 50, page_token, actor=actor, action=action)
                    out.update(events=list(page.audit_events), next_token=page.next_page_token)
                except BackendError as exc:
                    out["audit_error"] = _error_dict(ctx, exc)
                return out
            return self.render(ctx, "operations.html", actor=actor, action=action, **await run_in_threadpool(load))
        return await self._handle(request, body)


def _urlquote(value: str) -> str:
    from urllib.parse import quote
    return quote(value, safe="")
