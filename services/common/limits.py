"""The bounds of every request field, declared once (enforced by
services/common/bounds.py before any use case runs).

One entry per field of every request message (nested messages included),
grouped by message full name. Pick a named bound below (they match the
database columns) or write one inline. tests/unit/test_bounds.py fails when a
string, bytes, number, repeated or map field of any RPC's request has no
entry, and prints the lines to paste.

    Str(n)              at most n characters, an identifier: no control or
                        invisible format characters (NUL, \\n, U+202E ...)
    Str(n, TEXT)        free text: tab and newlines allowed, other controls not
    Int(lo, hi)         lo <= value <= hi
    Float(lo, hi)       finite, lo <= value <= hi
    Many(n, each)       at most n elements (each: the bound of an element;
                        None for messages, which have their own entries)
    Many(n, per_item=True)  elements are refused one by one by the API (the
                        contract answers a bad item in place, the rest go on)
    Map(n, key, value)  at most n entries

Ranges are chosen so that no sum or ledger can overflow a BIGINT: the caps
of balances the services keep are here too.
"""
from __future__ import annotations

from dataclasses import dataclass

ID_CHARS = "id"
TEXT = "text"

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1


@dataclass(frozen=True)
class Str:
    max_len: int
    chars: str = ID_CHARS


@dataclass(frozen=True)
class Int:
    lo: int
    hi: int


@dataclass(frozen=True)
class Float:
    lo: float
    hi: float


@dataclass(frozen=True)
class Many:
    max_items: int
    each: "Str | Int | Float | None" = None
    per_item: bool = False


@dataclass(frozen=True)
class Map:
    max_items: int
    key: "Str | Int"
    value: "Str | Int | Float | None" = None


Bound = Str | Int | Float | Many | Map

# --- money, points, stock: no single value and no sum of them can overflow int64 -------------
# 10^15 fen = 10 trillion CNY: above any customer's or branch's assets, and 9,000 of them still
# fit in a BIGINT (a customer's holdings are at most MAX_HOLDINGS).
MAX_FEN = 10**15
MAX_POINTS_PER_CALL = 10**12
# Caps of the ledgers benefits keeps: a credit or stock-in that would pass them is refused
# (FAILED_PRECONDITION, reason LIMIT_EXCEEDED) instead of overflowing the column.
MAX_POINTS_BALANCE = 10**15
MAX_STOCK = 10**12
MAX_HOLDINGS = 1000

# --- named bounds (lengths are the database columns') -----------------------------------------
ID = Str(64)                     # customer, staff, branch, benefit, period ids: String(64)
REQUEST_ID = Str(128)            # idempotency keys: benefits' String(128), the narrowest
CODE = Str(64)                   # tier / role / group / channel / kind codes
DATE = Str(10)                   # "YYYY-MM-DD"
PERIOD = Str(16)                 # "2025-03", "2025-Q1", "2025"
DECIMAL = Str(40)                # decimal text: scoring's String(40)
NAME = Str(200, TEXT)            # display names: String(200)
REASON = Str(1000, TEXT)         # reasons and comments (Text columns, audit records)
RULESET_NAME = Str(100)          # rule store: String(100)
DOCUMENT = Str(1_000_000, TEXT)  # a rule document (the rule store also refuses > 1 MB of UTF-8)
PAGE_TOKEN = Str(512)            # our signed tokens are far shorter
PAGE_SIZE = Int(0, INT32_MAX)    # above the maximum = the maximum (AIP-158)
MONEY = Int(-MAX_FEN, MAX_FEN)   # signs are the use cases' business
VERSION = Int(0, INT32_MAX)      # versions and revisions are INTEGER columns
CURSOR = Int(0, INT64_MAX)
AUDIT_FILTER = Str(200)

FIELDS: dict[str, dict[str, Bound]] = {
    # --- tiering ---------------------------------------------------------------------------
    "kequn.tiering.v1.CustomerSnapshot": {
        "customer_id": ID, "as_of": DATE, "annual_avg_aum_fen": MONEY, "monthly_avg_aum_fen": MONEY,
        "point_in_time_aum_fen": MONEY, "previous_annual_avg_aum_fen": MONEY,
        "holdings": Many(MAX_HOLDINGS), "age": Int(0, 200), "card_level": CODE,
        "annual_card_spend_fen": MONEY, "payroll_employer_id": ID, "last_customer_txn_date": DATE,
        # the engine's 255 properties per fact: the use case refuses more than 50 attributes
        "attributes": Map(255, Str(64), Str(200, TEXT)),
    },
    "kequn.tiering.v1.BranchHolding": {"branch_id": ID, "aum_fen": MONEY},
    "kequn.tiering.v1.EvaluateCustomerRequest": {"request_id": REQUEST_ID},
    # Each request is checked on its own by the API: a bad one answers its error in place.
    "kequn.tiering.v1.EvaluateCustomerBatchesRequest": {"requests": Many(5000, per_item=True)},
    "kequn.tiering.v1.GetCustomerTierRequest": {"customer_id": ID},
    "kequn.tiering.v1.ListTierChangesRequest": {
        "customer_id": ID, "after_cursor": CURSOR, "page_size": PAGE_SIZE, "page_token": PAGE_TOKEN},
    "kequn.tiering.v1.WatchTierChangesRequest": {"after_cursor": CURSOR},
    "kequn.tiering.v1.ExplainDecisionRequest": {"decision_id": Str(32)},  # uuid4 hex

    # --- assignment ------------------------------------------------------------------------
    "kequn.assignment.v1.Branch": {"branch_id": ID, "parent_branch_id": ID, "name": NAME},
    "kequn.assignment.v1.Staff": {"staff_id": ID, "branch_id": ID, "role": CODE, "name": NAME},
    "kequn.assignment.v1.RunAssignmentRequest": {"branch_id": ID, "request_id": REQUEST_ID},
    "kequn.assignment.v1.GetBookRequest": {"staff_id": ID, "page_size": PAGE_SIZE, "page_token": PAGE_TOKEN},
    "kequn.assignment.v1.GetCustomerManagersRequest": {"customer_id": ID},
    "kequn.assignment.v1.GroupClaim": {
        "staff_id": ID, "group": CODE, "selector": Map(50, Str(64), Str(200, TEXT)), "request_id": REQUEST_ID,
        "claim_id": Str(40), "scope_branch_id": ID},
    "kequn.assignment.v1.ListBranchesRequest": {"branch_id": ID, "page_size": PAGE_SIZE, "page_token": PAGE_TOKEN},
    "kequn.assignment.v1.ListStaffRequest": {
        "branch_id": ID, "role": CODE, "page_size": PAGE_SIZE, "page_token": PAGE_TOKEN},
    "kequn.assignment.v1.ListLockPeriodsRequest": {"branch_id": ID, "page_size": PAGE_SIZE, "page_token": PAGE_TOKEN},
    "kequn.assignment.v1.GetGroupBookRequest": {
        "staff_id": ID, "group": CODE, "page_size": PAGE_SIZE, "page_token": PAGE_TOKEN},
    "kequn.assignment.v1.ListUnplacedRequest": {"branch_id": ID, "page_size": PAGE_SIZE, "page_token": PAGE_TOKEN},
    "kequn.assignment.v1.LockPeriod": {"period_id": ID, "branch_id": ID, "starts_on": DATE, "ends_on": DATE},
    "kequn.assignment.v1.CloseLockPeriodRequest": {"period_id": ID, "branch_id": ID},
    "kequn.assignment.v1.CreateChangeRequestRequest": {
        "customer_id": ID, "from_staff_id": ID, "to_staff_id": ID, "reason": REASON, "request_id": REQUEST_ID},
    "kequn.assignment.v1.DecideChangeRequestRequest": {
        "change_request_id": Str(40), "comment": REASON, "request_id": REQUEST_ID},
    "kequn.assignment.v1.ListChangeRequestsRequest": {
        "branch_id": ID, "customer_id": ID, "page_size": PAGE_SIZE, "page_token": PAGE_TOKEN},
    # Downstream impact (issue 15): a client stream of batches of simulated outcomes.
    "kequn.assignment.v1.SimulateTierChangesRequest": {"outcomes": Many(1000)},
    "kequn.assignment.v1.ListAuditEventsRequest": {
        "page_size": PAGE_SIZE, "page_token": PAGE_TOKEN, "subject": AUDIT_FILTER, "actor": AUDIT_FILTER,
        "action": CODE},

    # --- scoring ---------------------------------------------------------------------------
    "kequn.scoring.v1.CreatePeriodRequest": {
        "period_id": ID, "starts_on": DATE, "ends_on": DATE, "due_on": DATE, "request_id": REQUEST_ID},
    "kequn.scoring.v1.GetPeriodRequest": {"period_id": ID},
    "kequn.scoring.v1.SubmitMetricsRequest": {
        "period_id": ID, "values": Many(100_000), "request_id": REQUEST_ID},
    "kequn.scoring.v1.MetricValue": {
        "staff_id": ID, "role": CODE, "branch_id": ID, "indicator_id": ID, "value": DECIMAL},
    "kequn.scoring.v1.SubmitRatingsRequest": {
        "period_id": ID, "values": Many(100_000), "request_id": REQUEST_ID},
    "kequn.scoring.v1.RatingValue": {
        "staff_id": ID, "role": CODE, "branch_id": ID, "indicator_id": ID, "value": DECIMAL, "comment": REASON},
    "kequn.scoring.v1.CalculatePeriodRequest": {
        "period_id": ID, "role": CODE, "branch_id": ID, "request_id": REQUEST_ID},
    "kequn.scoring.v1.FinalizePeriodRequest": {"period_id": ID, "request_id": REQUEST_ID},
    "kequn.scoring.v1.GetScoreRequest": {"staff_id": ID, "period_id": ID, "revision": VERSION},
    "kequn.scoring.v1.ListScoresRequest": {
        "period_id": ID, "role": CODE, "branch_id": ID, "page_size": PAGE_SIZE, "page_token": PAGE_TOKEN},
    "kequn.scoring.v1.ReviseScoreRequest": {
        "staff_id": ID, "period_id": ID, "reason": REASON, "corrections": Many(10_000), "request_id": REQUEST_ID},

    # --- benefits --------------------------------------------------------------------------
    "kequn.benefits.v1.ListEntitlementsRequest": {"customer_id": ID},
    "kequn.benefits.v1.ClaimBenefitRequest": {
        "customer_id": ID, "benefit_id": ID, "channel": CODE, "request_id": REQUEST_ID},
    "kequn.benefits.v1.CancelClaimRequest": {"claim_id": Str(40), "reason": REASON, "request_id": REQUEST_ID},
    "kequn.benefits.v1.FulfillClaimRequest": {"claim_id": Str(40), "request_id": REQUEST_ID},
    "kequn.benefits.v1.ListClaimsRequest": {"customer_id": ID, "page_size": PAGE_SIZE, "page_token": PAGE_TOKEN},
    "kequn.benefits.v1.ListBenefitsRequest": {"page_size": PAGE_SIZE, "page_token": PAGE_TOKEN},
    "kequn.benefits.v1.GetBenefitRequest": {"benefit_id": ID},
    "kequn.benefits.v1.Benefit": {
        "eligibility_text": REASON, "eligibility_text_zh": REASON,
        "benefit_id": ID, "name": NAME, "kind": CODE, "eligibility_rule": Str(200), "valid_from": DATE,
        "valid_until": DATE, "quota_per_period": Int(-INT32_MAX, INT32_MAX),
        "cooldown_seconds": Int(-10**10, 10**10), "channels": Many(32, CODE),
        "points_cost": Int(-MAX_POINTS_PER_CALL, MAX_POINTS_PER_CALL), "budget_group": CODE,
        "unit_cost_fen": MONEY, "description": Str(2000, TEXT)},
    "kequn.benefits.v1.UpsertBenefitRequest": {"request_id": REQUEST_ID},
    "kequn.benefits.v1.AdjustInventoryRequest": {
        "benefit_id": ID, "delta": Int(-MAX_STOCK, MAX_STOCK), "reason": REASON, "request_id": REQUEST_ID},
    "kequn.benefits.v1.GetInventoryRequest": {"benefit_id": ID},
    "kequn.benefits.v1.SetBudgetRequest": {
        "group": CODE, "period": PERIOD, "amount_fen": MONEY, "request_id": REQUEST_ID},
    "kequn.benefits.v1.GetBudgetRequest": {"group": CODE, "period": PERIOD},
    "kequn.benefits.v1.CreditPointsRequest": {
        "customer_id": ID, "points": Int(-MAX_POINTS_PER_CALL, MAX_POINTS_PER_CALL), "reason": REASON,
        "request_id": REQUEST_ID},
    "kequn.benefits.v1.DebitPointsRequest": {
        "customer_id": ID, "points": Int(-MAX_POINTS_PER_CALL, MAX_POINTS_PER_CALL), "reason": REASON,
        "request_id": REQUEST_ID},
    "kequn.benefits.v1.GetPointsBalanceRequest": {"customer_id": ID},
    "kequn.benefits.v1.SimulateTierChangesRequest": {"outcomes": Many(1000)},

    # --- common ----------------------------------------------------------------------------
    "kequn.common.v1.SimulatedOutcome": {
        "customer_id": ID, "tier": CODE, "segments": Many(100, CODE), "flags": Many(100, CODE)},
    # The audit trail on every service's port (AuditService): filters are the columns' widths.
    "kequn.common.v1.ListAuditEventsRequest": {
        "page_size": PAGE_SIZE, "page_token": PAGE_TOKEN, "subject": Str(300), "actor": AUDIT_FILTER,
        "action": Str(100)},
    # 0 = the server's limit; above it = the limit (services/common/audit_api.py).
    "kequn.common.v1.VerifyAuditChainRequest": {"max_records": Int(0, INT64_MAX)},

    # --- rules (every service's rule store) ------------------------------------------------
    "kequn.rules.v1.ValidateRulesetRequest": {"document": DOCUMENT, "kind": RULESET_NAME},
    "kequn.rules.v1.CreateRulesetVersionRequest": {
        "name": RULESET_NAME, "document": DOCUMENT, "comment": REASON, "request_id": REQUEST_ID},
    "kequn.rules.v1.TestRulesetRequest": {"name": RULESET_NAME, "version": VERSION},
    "kequn.rules.v1.SimulateRulesetRequest": {"name": RULESET_NAME, "version": VERSION, "sample": Many(10_000)},
    "kequn.rules.v1.PublishRulesetRequest": {
        "name": RULESET_NAME, "version": VERSION, "comment": REASON, "request_id": REQUEST_ID},
    "kequn.rules.v1.RollbackRulesetRequest": {
        "name": RULESET_NAME, "to_version": VERSION, "comment": REASON, "request_id": REQUEST_ID},
    "kequn.rules.v1.GetRulesetRequest": {"name": RULESET_NAME, "version": VERSION},
    "kequn.rules.v1.ListRulesetVersionsRequest": {
        "name": RULESET_NAME, "page_size": PAGE_SIZE, "page_token": PAGE_TOKEN},
    "kequn.rules.v1.ListRulesetsRequest": {"kind": RULESET_NAME, "page_size": PAGE_SIZE, "page_token": PAGE_TOKEN},
    "kequn.rules.v1.SimulatePopulationRequest": {"name": RULESET_NAME, "version": VERSION, "branch_id": ID},
    "kequn.rules.v1.RequestReleaseRequest": {
        "name": RULESET_NAME, "version": VERSION, "comment": REASON, "request_id": REQUEST_ID},
    "kequn.rules.v1.DecideReleaseRequest": {"release_id": Str(32), "comment": REASON},  # uuid4 hex
    "kequn.rules.v1.ListReleasesRequest": {"name": RULESET_NAME, "page_size": PAGE_SIZE, "page_token": PAGE_TOKEN},
    "kequn.rules.v1.SetReleasePolicyRequest": {"name": RULESET_NAME, "comment": REASON},

    # --- well-known types -------------------------------------------------------------------
    # 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59Z, as google/protobuf/timestamp.proto says
    "google.protobuf.Timestamp": {"seconds": Int(-62_135_596_800, 253_402_300_799), "nanos": Int(0, 999_999_999)},
    # Simulation samples: the engine wrapper enforces its own per-fact limits on top.
    "google.protobuf.Struct": {"fields": Map(250, Str(200))},  # the engine: 255 properties per object
    "google.protobuf.Value": {"number_value": Float(-1e18, 1e18), "string_value": Str(10_000, TEXT)},
    "google.protobuf.ListValue": {"values": Many(1000)},
}

# Client streams whose items the API checks one by one (a bad item answers its own error and the
# stream goes on), with services.common.bounds.item_error. Every other stream item is checked here.
PER_ITEM_STREAMS = frozenset({
    "/kequn.tiering.v1.TieringService/EvaluateCustomers",
})
