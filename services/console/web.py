"""The HTTP edge: routes, sign-in, sessions, CSRF, security headers, metrics.

Thin on purpose: each handler reads the request, calls the backend as the
signed-in person, hands plain values to views.py/charts.py and renders a
template (Jinja2 with autoescape on: everything a service or a person sent is
escaped). The blocking gRPC calls run in Starlette's thread pool.
"""
from __future__ import annotations

import hmac
import logging
import time
import uuid
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

from services.common.auth import TokenStore

from . import charts, i18n, views
from .access import Access
from .backend import SERVICES, Backend
from .config import ConsoleConfig
from .context import Ctx, Refused, urlquote
from .pages import Pages
from .sessions import SessionStore

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
COOKIE_PLAIN, COOKIE_HOST = "kequn_console", "__Host-kequn_console"
CSP = ("default-src 'self'; script-src 'none'; style-src 'self'; img-src 'self'; object-src 'none'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


class TooLarge(Exception):
    pass


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


class Console(Pages):
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
                                fill_percent=views.fill_percent, fill_bar=charts.fill_bar, duration=views.duration,
                                unplaced_words=i18n.unplaced_words, cause_words=i18n.cause_words)

    # --- plumbing ------------------------------------------------------------------------
    def app(self) -> Starlette:
        routes = [
            Route("/healthz", self.healthz), Route("/readyz", self.readyz), Route("/metrics", self.metrics),
            Route("/", self.home), Route("/favicon.ico", self.favicon),
            Route("/signin", self.signin_page), Route("/signin", self.signin, methods=["POST"]),
            Route("/signout", self.signout, methods=["POST"]), Route("/lang", self.switch_lang, methods=["POST"]),
            Route("/approvals", self.approvals),
            Route("/approvals/{change_request_id}/decide", self.decide, methods=["POST"]),
            Route("/overview", self.overview),
            Route("/books", self.books),
            Route("/benefits", self.benefits), Route("/benefits/{benefit_id}", self.benefit),
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
            Route("/rules/{service}/{name}/releases/{release_id}/{decision}", self.decide_release, methods=["POST"]),
            Route("/decisions/{decision_id}", self.explain),
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
            return self.redirect(ctx, "/signin?next=" + urlquote(ctx.request.url.path))
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
