"""The pages: one handler per screen or action, each reading the request,
calling the backend as the signed-in person and rendering a template. The
plumbing they use (sessions, CSRF, rendering, access checks) is in web.py."""
from __future__ import annotations

import re
import uuid
from datetime import datetime, timezone

from google.protobuf.json_format import MessageToDict

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from kequn.assignment.v1 import assignment_pb2 as apb

from . import charts, i18n, views
from .backend import SERVICES, BackendError
from .context import Ctx, Refused, error_dict, urlquote

CHANGE_ACTIONS = ("TRANSFER", "ADD", "REMOVE")
# Group books are read per group code (GetGroupBook): these are tried when no group is asked for,
# the groups a local group book is claimed on (docs/assignment.md: by employer and by market).
GROUP_CODES = ("PAYROLL", "MERCHANT")
# Tiers in the order of the ladder (services/tiering/rulesets/tiers.yaml); others follow by name.
TIER_ORDER = ("PRIVATE_BANKING", "WEALTH", "AFFLUENT", "LONG_TAIL", "MASS")
MAX_OVERVIEW_STAFF = 2000  # book fill by role reads at most this many books per page view
# The downstream dry runs get every changed customer; past this many the console stops and says so
# (`kequn rules simulate --population --impact` has no such bound).
MAX_IMPACT_CHANGES = 200_000
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
        lock_periods = []
        if branch and self.access.can(me, "books.locks"):
            try:  # the periods that lock this branch's books: why these requests wait for a decision
                lock_periods = [p for p in self.backend.list_lock_periods(token, branch, 100).lock_periods
                                if p.in_force]
            except BackendError:
                lock_periods = []
        return {"rows": rows, "branch": branch, "my_branch": my_branch, "next_token": next_token, "error": error,
                "lock_periods": lock_periods}

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
            q = request.query_params
            staff_id = (q.get("staff_id") or ctx.me.name).strip()[:128]
            tokens = {k: q.get(k, "")[:512] for k in ("page_token", "unplaced_token", "staff_token")}
            group = (q.get("group") or "").strip().upper()[:64]
            data = await run_in_threadpool(self._books, ctx, staff_id, group, tokens)
            return self.render(ctx, "books.html", staff_id=staff_id, mine=staff_id == ctx.me.name, group=group,
                               group_codes=GROUP_CODES, **data)
        return await self._handle(request, body)

    def _books(self, ctx: Ctx, staff_id: str, group: str, tokens: dict[str, str]) -> dict:
        """The book of `staff_id` (default: me), their group books, and for the book's branch its lock
        periods, unplaced customers and the fill of every book there."""
        token, out = ctx.token, {"errors": {}}

        def section(name, action, call):
            if action and not self.access.can(ctx.me, action):
                return None
            try:
                out[name] = call()
            except BackendError as exc:
                out["errors"][name] = error_dict(ctx, exc)
            return out.get(name)
        book = section("book", None, lambda: self.backend.get_book(token, staff_id, 100, tokens["page_token"]))
        if book is None:
            return out
        groups = (group,) if group else GROUP_CODES
        section("group_books", "books.group", lambda: [
            gb for gb in (self.backend.get_group_book(token, staff_id, g, 100) for g in groups)
            if gb.claims])
        branch = book.branch_id
        out["branch"] = branch
        section("lock_periods", "books.locks",
                lambda: list(self.backend.list_lock_periods(token, branch, 100).lock_periods))
        unplaced = section("unplaced", "books.unplaced",
                           lambda: self.backend.list_unplaced(token, branch, 50, tokens["unplaced_token"]))
        if unplaced is not None:
            out["unplaced"], out["unplaced_next"] = list(unplaced.unplaced), unplaced.next_page_token

        def branch_books():
            page = self.backend.list_staff(token, branch, "", 50, tokens["staff_token"])
            rows = []
            for member in page.staff:
                try:
                    b = self.backend.get_book(token, member.staff_id, page_size=1)
                    rows.append((member, views.BookFill(member.staff_id, b.size, b.max_size), b.locked))
                except BackendError:
                    rows.append((member, None, False))
            return rows, page.next_page_token
        found = section("branch_books", "books.branch", branch_books)
        if found is not None:
            out["branch_books"], out["staff_next"] = found
        return out

    # --- overview --------------------------------------------------------------------------
    async def overview(self, request: Request) -> Response:
        async def body(ctx: Ctx):
            self._need(ctx, "overview")
            return self.render(ctx, "overview.html", **await run_in_threadpool(self._overview, ctx))
        return await self._handle(request, body)

    def _overview(self, ctx: Ctx) -> dict:
        """Charts of the base as the person may see it: tiers, book fill by role, stock and budget left."""
        token, me, out = ctx.token, ctx.me, {"errors": {}}
        can = lambda action: self.access.can(me, action)  # noqa: E731

        def section(name, call):
            try:
                out[name] = call()
            except BackendError as exc:
                out["errors"][name] = error_dict(ctx, exc)
        if can("overview.tiers"):
            def tiers():
                latest, complete = self.backend.latest_tiers(token)
                dist = views.tier_distribution(latest, TIER_ORDER)
                total = sum(n for _, n in dist)
                out["tiers_complete"], out["tiers_total"] = complete, total
                return dist, charts.bars([(tier, n, f"{n} ({n * 100 // total}%)") for tier, n in dist],
                                         ctx.t("tier_distribution"))
            section("tiers", tiers)
        if can("overview.books"):
            def fill():
                books, page_token = [], ""
                while len(books) < MAX_OVERVIEW_STAFF:
                    page = self.backend.list_staff(token, "", "", 200, page_token)
                    for member in page.staff:
                        if member.active:
                            books.append(self.backend.get_book(token, member.staff_id, page_size=1))
                    page_token = page.next_page_token
                    if not page_token:
                        break
                out["fill_partial"] = bool(page_token)
                roles = [r for r in views.fill_by_role(books) if r.capacity or r.customers]
                return roles, charts.shares(
                    [(r.role, r.customers_capped, r.capacity,
                      f"{r.customers_capped} / {r.capacity}" + (f" ({r.percent}%)" if r.percent is not None else ""))
                     for r in roles if r.capacity], ctx.t("fill_by_role"))
            section("fill", fill)
        benefits = None
        if can("overview.stock") or can("overview.budget"):
            section("benefits", lambda: self.backend.all_benefits(token))
            benefits = out.get("benefits")
        if benefits is not None and can("overview.stock"):
            def stock():
                rows = []
                for b in benefits:
                    if b.physical:
                        inv = self.backend.get_inventory(token, b.benefit_id)
                        rows.append(views.Stock(b.benefit_id, b.name, inv.on_hand, inv.reserved, inv.available))
                return rows, charts.shares([(s.name or s.benefit_id, s.available, s.on_hand,
                                             f"{s.available} / {s.on_hand}") for s in rows], ctx.t("stock_left"),
                                           left=True)
            section("stock", stock)
        if benefits is not None and can("overview.budget"):
            def budgets():
                rows = []
                for group in sorted({b.budget_group for b in benefits if b.budget_group}):
                    for period in views.budget_periods(views.today_shanghai()):
                        try:
                            b = self.backend.get_budget(token, group, period)
                        except BackendError as exc:
                            if exc.reason == "NOT_FOUND":
                                continue
                            raise
                        rows.append(views.BudgetLeft(group, period, b.amount_fen, b.spent_fen, b.remaining_fen))
                        break
                return rows, charts.shares([(f"{r.group} {r.period}", r.remaining_fen, r.amount_fen,
                                             f"{views.yuan(r.remaining_fen)} / {views.yuan(r.amount_fen)}")
                                            for r in rows], ctx.t("budget_left"), left=True)
            section("budgets", budgets)
        return out

    # --- benefits catalog ------------------------------------------------------------------
    async def benefits(self, request: Request) -> Response:
        async def body(ctx: Ctx):
            self._need(ctx, "benefits")
            q = request.query_params
            include_inactive, page_token = q.get("include_inactive") == "1", q.get("page_token", "")[:512]

            def load():
                try:
                    page = self.backend.list_benefits(ctx.token, include_inactive, 50, page_token)
                    return {"catalog": list(page.benefits), "next_token": page.next_page_token}
                except BackendError as exc:
                    return {"error": error_dict(ctx, exc)}
            return self.render(ctx, "benefits.html", include_inactive=include_inactive, **await run_in_threadpool(load))
        return await self._handle(request, body)

    async def benefit(self, request: Request) -> Response:
        async def body(ctx: Ctx):
            self._need(ctx, "benefits")
            benefit_id = request.path_params["benefit_id"][:128]

            def load():
                try:
                    return {"benefit": self.backend.get_benefit(ctx.token, benefit_id)}
                except BackendError as exc:
                    return {"error": error_dict(ctx, exc)}
            data = await run_in_threadpool(load)
            return self.render(ctx, "benefit.html", 200 if "benefit" in data else 404, benefit_id=benefit_id, **data)
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
            releases_token = request.query_params.get("releases_token", "")[:512]

            def load():
                return {**self._versions(ctx, service, name), **self._releases(ctx, service, name, releases_token)}
            return self.render(ctx, "ruleset.html", service=service, name=name, **await run_in_threadpool(load))
        return await self._handle(request, body)

    def _releases(self, ctx: Ctx, service: str, name: str, page_token: str = "", version: int | None = None) -> dict:
        """The ruleset's release policy and its releases (newest request first, paged; on a version's
        page only that version's), with what this person may do with each."""
        out: dict = {}
        try:
            summary = self.backend.ruleset_summary(ctx.token, service, name)
            out["four_eyes"] = bool(summary and summary.four_eyes)
        except BackendError as exc:
            out["policy_error"] = error_dict(ctx, exc)
        if not self.access.can(ctx.me, "rules.releases"):
            return out
        try:
            page = self.backend.list_releases(ctx.token, service, name, 100 if version else 20, page_token)
        except BackendError as exc:
            out["releases_error"] = error_dict(ctx, exc)
            return out
        found = [r for r in page.releases if version is None or r.version == version]
        out["releases"] = views.release_rows(found, ctx.me.name, self.access.can(ctx.me, "rules.approve_release"),
                                             self.access.can(ctx.me, "rules.reject_release"))
        out["releases_next"] = "" if version else page.next_page_token
        return out

    async def decide_release(self, request: Request) -> Response:
        """A second rule owner approves or rejects a PENDING release; an APPROVED one whose instant
        is ahead is cancelled (RejectRelease). The service says no with SELF_APPROVAL, WRONG_STATE,
        TOO_LATE_TO_CANCEL..., shown in words."""
        async def body(ctx: Ctx):
            form = await self._form(ctx)
            service, name = self._service(request), request.path_params["name"]
            release_id, decision = request.path_params["release_id"][:64], request.path_params["decision"]
            if decision not in ("approve", "reject", "cancel"):
                raise Refused(404, "page_not_found")
            approve = decision == "approve"
            self._need(ctx, "rules", "rules.approve_release" if approve else "rules.reject_release")
            comment = str(form.get("comment") or "").strip()[:500]
            try:
                await run_in_threadpool(self.backend.decide_release, ctx.token, service, release_id, approve, comment)
                ctx.session.flash("ok", ctx.t(f"release_{decision}_msg", id=release_id))
            except BackendError as exc:
                words = i18n.reason_words(exc.reason, ctx.lang)
                ctx.session.flash("error", f"{ctx.t('refused')} ({release_id}): {words} [{exc.reason}] {exc.message}")
            return self.redirect(ctx, f"/rules/{service}/{urlquote(name)}#releases")
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
        out = {"service": service, "name": name, "version": version, "min_effective":
               views.shanghai_local_input(datetime.now(timezone.utc)), **extra}
        try:
            out["rv"] = self.backend.get_ruleset(ctx.token, service, name, version)
        except BackendError as exc:
            out["error"] = error_dict(ctx, exc)
            return out
        out.update(self._releases(ctx, service, name, version=version))
        return out

    async def version_op(self, request: Request) -> Response:
        async def body(ctx: Ctx):
            form = await self._form(ctx)
            service, name = self._service(request), request.path_params["name"]
            version, op = request.path_params["version"], request.path_params["op"]
            if op not in ("test", "simulate", "publish", "population", "request_release"):
                raise Refused(404, "page_not_found")
            self._need(ctx, "rules", f"rules.{op}")
            extra: dict = {}
            if op == "request_release":
                comment = str(form.get("release_comment") or "").strip()[:500]
                when = str(form.get("effective_from") or "")[:32]
                extra.update(release_comment=comment, effective_from=when)
                try:
                    effective = views.shanghai_local_to_utc(when)
                    created = await run_in_threadpool(self.backend.request_release, ctx.token, service, name, version,
                                                      effective, comment, uuid.uuid4().hex)
                    ctx.session.flash("ok", ctx.t("release_requested_msg", id=created.release_id,
                                                  when=views.timestamp(created.effective_from) or ctx.t("on_approval")))
                    return self.redirect(ctx, f"/rules/{service}/{urlquote(name)}/v/{version}#releases")
                except views.LocalTimeError:
                    extra["op_error"] = {"kind": "error", "text": ctx.t("bad_effective_from"),
                                         "reason": "INVALID_INPUT", "detail": "", "violations": []}
                except BackendError as exc:
                    extra["op_error"] = error_dict(ctx, exc)
            elif op == "population":
                branch_id = str(form.get("branch_id") or "").strip()[:64]
                extra["branch_id"] = branch_id
                try:
                    extra.update(await run_in_threadpool(self._population, ctx, service, name, version, branch_id))
                except BackendError as exc:
                    extra["op_error"] = error_dict(ctx, exc)
            elif op == "test":
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

    def _population(self, ctx: Ctx, service: str, name: str, version: int, branch_id: str) -> dict:
        """SimulatePopulation, waited for here; for a tiering candidate (tier scheme, groups) also the
        downstream dry runs in assignment and benefits with the changed customers, as the CLI does."""
        timeout = self.config.simulation_timeout_seconds
        downstream = service == "tiering" and self.access.can(ctx.me, "rules.impact")
        result, changes, complete = self.backend.simulate_population(
            ctx.token, service, name, version, branch_id, include_changes=downstream, timeout=timeout,
            max_changes=MAX_IMPACT_CHANGES)
        mats = views.matrices(result.transitions)
        out = {"population": result, "pop_matrices": [(m, charts.heatmap(
            m, f"{m.key}: {ctx.t('population_migration', active=result.active_version or '-', candidate=version)}",
            f"v{result.active_version or '-'}", f"v{version}")) for m in mats],
            "pop_codes": views.code_rows(result.code_changes), "pop_branches": views.branch_rows(result.branches),
            "impact_errors": {}}
        if not downstream:
            return out
        if not complete:
            out["impact_partial"] = MAX_IMPACT_CHANGES
            return out
        outcomes = views.simulated_outcomes(changes)
        out["impact_customers"] = len(outcomes)
        for target in ("assignment", "benefits"):
            try:
                out["impact_" + target] = self.backend.simulate_downstream(ctx.token, target, outcomes, timeout)
            except BackendError as exc:
                out["impact_errors"][target] = error_dict(ctx, exc)
        books = out.get("impact_assignment")
        if books is not None:
            out["impact_unplaced"] = views.impact_rows(books.unplaced)
            out["impact_new_manager"] = views.impact_rows(books.new_manager)
        return out

    # --- a decision explained ----------------------------------------------------------------
    async def explain(self, request: Request) -> Response:
        async def body(ctx: Ctx):
            self._need(ctx, None, "customers.explain")
            decision_id = request.path_params["decision_id"][:128]

            def load():
                try:
                    found = self.backend.explain_decision(ctx.token, decision_id)
                except BackendError as exc:
                    return {"error": error_dict(ctx, exc)}
                return {"x": found, "snapshot": views.snapshot_fields(
                    MessageToDict(found.snapshot, preserving_proto_field_name=True))}
            data = await run_in_threadpool(load)
            return self.render(ctx, "explain.html", 200 if "x" in data else 404, decision_id=decision_id, **data)
        return await self._handle(request, body)

    # --- operations ----------------------------------------------------------------------
    async def operations(self, request: Request) -> Response:
        async def body(ctx: Ctx):
            self._need(ctx, "operations")
            q = request.query_params
            actor, action = (q.get("actor") or "").strip()[:128], (q.get("action") or "").strip()[:128]
            service = q.get("service") if q.get("service") in SERVICES else "assignment"
            page_token = q.get("page_token", "")
            verify = q.get("verify") == "1" and self.access.can(ctx.me, "operations.verify")

            def load():
                out = {"health": {s: self.backend.health(s) for s in SERVICES}, **self._rulesets(ctx)}
                try:
                    page = self.backend.list_service_audit(ctx.token, service, 50, page_token, actor=actor,
                                                           action=action)
                    out.update(events=list(page.audit_events), next_token=page.next_page_token)
                except BackendError as exc:
                    out["audit_error"] = error_dict(ctx, exc)
                if verify:  # read-only, bounded by the service: a plain GET
                    try:
                        out["verdict"] = views.chain_verdict(self.backend.verify_audit_chain(ctx.token, service))
                    except BackendError as exc:
                        out["verify_error"] = error_dict(ctx, exc)
                return out
            return self.render(ctx, "operations.html", actor=actor, action=action, service=service,
                               services=SERVICES, **await run_in_threadpool(load))
        return await self._handle(request, body)
