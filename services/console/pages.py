"""The pages: one handler per screen or action, each reading the request,
calling the backend as the signed-in person and rendering a template. The
plumbing they use (sessions, CSRF, rendering, access checks) is in web.py."""
from __future__ import annotations

import re
import uuid

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from kequn.assignment.v1 import assignment_pb2 as apb

from . import charts, i18n, views
from .backend import SERVICES, BackendError
from .context import Ctx, Refused, error_dict, urlquote

CHANGE_ACTIONS = ("TRANSFER", "ADD", "REMOVE")
SAFE_ID = re.compile(r"^[A-Za-z0-9_.:@-]{1,128}$")


class Pages:
    """Mixed into web.Console, which provides backend, access, render, redirect, _form, _need, _handle."""

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
            pending, next_token, error = [], "", error_dict(ctx, exc)
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
                    return None, error_dict(ctx, exc)
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
            return self.redirect(ctx, "/customers?customer_id=" + urlquote(customer_id))
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
                out["errors"][name] = error_dict(ctx, exc)
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
                    return {"error": error_dict(ctx, exc)}
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
                    return {"error": error_dict(ctx, exc)}
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
                                   message=i18n.reason_words(exc.reason, ctx.lang), error=error_dict(ctx, exc))
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
                errors[service] = error_dict(ctx, exc)
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
            return {"versions": [], "error": error_dict(ctx, exc)}

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
                    return {"error": error_dict(ctx, exc)}
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
                                   comment=comment, upload_error=error_dict(ctx, exc), **data)
            ctx.session.flash("ok", ctx.t("uploaded_msg", version=created.version))
            return self.redirect(ctx, f"/rules/{service}/{urlquote(name)}/v/{created.version}")
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
            out["error"] = error_dict(ctx, exc)
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
                    extra["op_error"] = error_dict(ctx, exc)
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
                    extra["op_error"] = error_dict(ctx, exc)
            else:
                comment = str(form.get("comment") or "")[:500]
                try:
                    await run_in_threadpool(self.backend.publish_ruleset, ctx.token, service, name, version,
                                            comment, uuid.uuid4().hex)
                    ctx.session.flash("ok", ctx.t("published_msg", version=version))
                    return self.redirect(ctx, f"/rules/{service}/{urlquote(name)}/v/{version}")
                except BackendError as exc:
                    extra["op_error"] = error_dict(ctx, exc)
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
                    out["audit_error"] = error_dict(ctx, exc)
                return out
            return self.render(ctx, "operations.html", actor=actor, action=action, **await run_in_threadpool(load))
        return await self._handle(request, body)
