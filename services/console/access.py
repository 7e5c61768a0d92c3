"""Which pages and actions a person sees: the suite's own role matrix
(services/common/rbac.yaml) applied to the RPCs each page or action needs.
The services check again on every call; this only keeps people from seeing
buttons that would be refused. Pure."""
from __future__ import annotations

from dataclasses import dataclass

from services.common.auth import Policy, Principal

A = "/kequn.assignment.v1.AssignmentService/"
T = "/kequn.tiering.v1.TieringService/"
S = "/kequn.scoring.v1.ScoringService/"
B = "/kequn.benefits.v1.BenefitsService/"
R = "/kequn.rules.v1.RuleStoreService/"
C = "/kequn.common.v1.AuditService/"  # every service's own audit trail

# Actions: a name the HTTP edge and templates use -> the RPCs it calls.
ACTIONS: dict[str, tuple[str, ...]] = {
    "approvals.list": (A + "ListChangeRequests",),
    "approvals.approve": (A + "ApproveChangeRequest",),
    "approvals.reject": (A + "RejectChangeRequest",),
    "books.view": (A + "GetBook",),
    "books.locks": (A + "ListLockPeriods",),
    "books.group": (A + "GetGroupBook",),
    "books.unplaced": (A + "ListUnplaced",),
    "books.branch": (A + "ListStaff", A + "GetBook"),
    "customers.tier": (T + "GetCustomerTier",),
    "customers.history": (T + "ListTierChanges",),
    "customers.managers": (A + "GetCustomerManagers",),
    "customers.entitlements": (B + "ListEntitlements",),
    "customers.request_change": (A + "CreateChangeRequest", A + "GetCustomerManagers"),
    "customers.catalog": (B + "ListBenefits", B + "GetBenefit"),
    "overview.tiers": (T + "ListTierChanges",),
    "overview.books": (A + "ListStaff", A + "GetBook"),
    "overview.stock": (B + "ListBenefits", B + "GetInventory"),
    "overview.budget": (B + "ListBenefits", B + "GetBudget"),
    "scores.list": (S + "ListScores",),
    "scores.view": (S + "GetScore",),
    "rules.list": (R + "ListRulesets", R + "ListRulesetVersions", R + "GetRuleset"),
    "rules.upload": (R + "CreateRulesetVersion",),
    "rules.test": (R + "TestRuleset",),
    "rules.simulate": (R + "SimulateRuleset",),
    "rules.publish": (R + "PublishRuleset",),
    "rules.releases": (R + "ListReleases",),
    "rules.request_release": (R + "RequestRelease",),
    "rules.approve_release": (R + "ApproveRelease",),
    "rules.reject_release": (R + "RejectRelease",),   # also cancels a scheduled release
    "rules.population": (R + "SimulatePopulation",),
    "rules.impact": (R + "SimulatePopulation", A + "SimulateTierChanges", B + "SimulateTierChanges"),
    "customers.explain": (T + "ExplainDecision",),
    "operations.rulesets": (R + "ListRulesets",),
    "operations.audit": (C + "ListAuditEvents",),
    "operations.verify": (C + "VerifyAuditChain",),
}


@dataclass(frozen=True)
class Page:
    name: str     # also the label key and the path: /<name>
    needs: tuple[str, ...]  # every one of these actions
    any_of: tuple[str, ...] = ()  # and, if given, at least one of these


# In the order of the navigation. The release flow and population impact are
# actions of the Rules pages; a decision's explanation (/decisions/<id>) is an
# action of its own, linked from a customer's tier history.
PAGES: tuple[Page, ...] = (
    Page("overview", (), ("overview.tiers", "overview.books", "overview.stock", "overview.budget")),
    Page("approvals", ("approvals.list", "approvals.approve")),
    Page("books", ("books.view",)),
    Page("customers", ("customers.tier",)),
    Page("benefits", ("customers.catalog",)),
    Page("scores", ("scores.list", "scores.view")),
    Page("rules", ("rules.list",)),
    Page("operations", ("operations.rulesets", "operations.audit")),
)
PAGE_BY_NAME = {p.name: p for p in PAGES}


class Access:
    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    def can(self, principal: Principal, action: str) -> bool:
        return all(self.policy.allows(principal, rpc) for rpc in ACTIONS[action])

    def page(self, principal: Principal, name: str) -> bool:
        page = PAGE_BY_NAME[name]
        return all(self.can(principal, a) for a in page.needs) and (
            not page.any_of or any(self.can(principal, a) for a in page.any_of))

    def pages(self, principal: Principal) -> list[str]:
        return [p.name for p in PAGES if self.page(principal, p.name)]

    def allowed_actions(self, principal: Principal) -> frozenset[str]:
        return frozenset(a for a in ACTIONS if self.can(principal, a))
