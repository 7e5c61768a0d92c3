"""Labels in English and Chinese, and refusal reasons in words. Pure."""
from __future__ import annotations

LANGS = ("en", "zh")
DEFAULT_LANG = "zh"

# key -> (English, 中文)
LABELS: dict[str, tuple[str, str]] = {
    "app": ("kequn console", "客群经营控制台"),
    "nav": ("Pages", "页面"),
    "approvals": ("Approvals", "审批"),
    "books": ("Books", "管户包"),
    "customers": ("Customers", "客户"),
    "overview": ("Overview", "概览"),
    "benefits": ("Benefits", "权益目录"),
    "scores": ("Scores", "考核"),
    "rules": ("Rules", "规则"),
    "operations": ("Operations", "运维"),
    "sign_in": ("Sign in", "登录"),
    "sign_out": ("Sign out", "退出"),
    "signed_in_as": ("Signed in as", "当前用户"),
    "roles": ("Roles", "角色"),
    "token": ("Access token", "访问令牌"),
    "token_help": ("Paste your personal token (development: one that `kequn up` printed).",
                   "粘贴您的个人令牌（开发环境：`kequn up` 打印的令牌之一）。"),
    "sso_help": ("Sign-in goes through the bank's single sign-on gateway.", "请通过银行统一身份认证网关登录。"),
    "bad_token": ("That token is unknown or expired.", "令牌无效或已过期。"),
    "session_ended": ("Your session ended; please sign in again.", "会话已结束，请重新登录。"),
    "language": ("Language", "语言"),
    "switch_lang": ("中文", "English"),
    "welcome": ("Choose a page.", "请选择页面。"),
    "nothing_for_you": ("Your roles give you no page here.", "您的角色在此没有可用页面。"),
    # approvals
    "inbox": ("Change requests waiting for a decision", "待审批的管户调整申请"),
    "my_branch": ("My branch", "我的分行"),
    "branch": ("Branch", "机构"),
    "all_branches": ("all branches", "全部机构"),
    "customer": ("Customer", "客户"),
    "tier": ("Tier", "层级"),
    "action": ("Action", "动作"),
    "from_to": ("From → to", "调出 → 调入"),
    "reason": ("Reason", "原因"),
    "asked_by": ("Asked by", "申请人"),
    "suggested": ("suggested by the system", "系统建议"),
    "your_own": ("your own request: another approver decides it", "本人提交：须由其他审批人审批"),
    "effect": ("Effect on the books", "对管户包的影响"),
    "comment": ("Comment", "意见"),
    "approve": ("Approve", "批准"),
    "reject": ("Reject", "驳回"),
    "no_pending": ("Nothing is waiting for you.", "没有待审批的申请。"),
    "approved_msg": ("Approved: change request {id} is applied.", "已批准：申请 {id} 已生效。"),
    "rejected_msg": ("Rejected: change request {id}.", "已驳回：申请 {id}。"),
    "refused": ("Refused", "被拒绝"),
    "over_max": ("over the max: approving will be refused", "超过上限：批准将被拒绝"),
    "no_limit": ("no limit", "不限"),
    "period": ("Period", "期间"),
    "created": ("Created", "提交时间"),
    "expires": ("Expires", "到期"),
    "next_page": ("Next page", "下一页"),
    # books
    "my_book": ("My book", "我的管户包"),
    "book_of": ("Book of", "管户包："),
    "staff_id": ("Staff id", "员工编号"),
    "show": ("Show", "查看"),
    "role": ("Role", "角色"),
    "fill": ("Fill", "饱和度"),
    "size": ("Customers", "客户数"),
    "initial_size": ("Initial size", "初始规模"),
    "max_size": ("Max size", "上限"),
    "locked": ("Locked (lock period)", "锁包中"),
    "unlocked": ("Not locked", "未锁包"),
    "lock_status": ("Lock status", "锁包状态"),
    "customers_in_book": ("Customers in this book", "包内客户"),
    "no_book": ("No book for this staff id (the staff id is the name you sign in with).",
                "没有该员工的管户包（员工编号即登录名）。"),
    "group_books": ("Group books", "客群管户包"),
    "group": ("Group", "客群"),
    "claims": ("Claims", "认领"),
    "selector": ("Selector", "范围"),
    "scope_branch": ("Scope", "覆盖机构"),
    "claimed_at": ("Claimed", "认领时间"),
    "no_group_books": ("No group books on these groups.", "在这些客群上没有客群管户包。"),
    "lock_periods": ("Lock periods", "锁包期"),
    "starts_on": ("From", "开始"),
    "ends_on": ("To (inclusive)", "结束（含）"),
    "in_force_now": ("in force now", "当前生效"),
    "not_in_force": ("not in force", "未生效"),
    "OPEN": ("open", "开启"),
    "CLOSED": ("closed", "已关闭"),
    "no_lock_periods": ("No lock period on this branch.", "该机构没有锁包期。"),
    "unplaced": ("Unplaced customers of the branch", "本机构未分配的客户"),
    "unplaced_since": ("Unplaced since", "未分配起始"),
    "tried": ("Units tried", "已尝试机构"),
    "no_unplaced": ("Every customer of the branch is placed.", "本机构客户均已分配。"),
    "branch_books": ("Books of the branch", "本机构的管户包"),
    "active_staff": ("Active", "在岗"),
    "inactive": ("inactive", "已停用"),
    "cause": ("Why it exists", "产生原因"),
    # overview
    "tier_distribution": ("Customers by tier", "客户层级分布"),
    "fill_by_role": ("Book fill by role (customers / caps)", "各岗位管户包饱和度（客户数 / 上限）"),
    "stock_left": ("Gift stock left (available / on hand)", "礼品剩余库存（可用 / 在库）"),
    "budget_left": ("Budget left by customer group (left / amount)", "各客群剩余预算（剩余 / 总额）"),
    "partial": ("Partial: only the first part was read.", "部分数据：仅读取了前一部分。"),
    "customers_total": ("{n} customers", "共 {n} 位客户"),
    "no_data": ("Nothing to show yet.", "暂无数据。"),
    "books_full": ("Full books", "已满"),
    "uncapped": ("Without a max", "无上限"),
    "capacity": ("Caps", "上限合计"),
    "on_hand": ("On hand", "在库"),
    "reserved": ("Held by claims", "已占用"),
    "available": ("Available", "可用"),
    "amount": ("Amount", "总额"),
    "spent": ("Spent", "已支出"),
    "left": ("Left", "剩余"),
    # benefits catalog
    "catalog": ("Benefits catalog", "权益目录"),
    "include_inactive": ("Also inactive and out of window", "包括停用及不在有效期的"),
    "who_may_claim": ("Who may claim it", "领取条件"),
    "quota": ("Quota", "次数限制"),
    "channels": ("Channels", "渠道"),
    "all_channels": ("all channels", "全部渠道"),
    "valid_from": ("Valid from", "生效日"),
    "cooldown": ("Cool-down", "领取间隔"),
    "physical": ("Physical gift (stock)", "实物礼品（库存）"),
    "budget_group": ("Budget group", "预算客群"),
    "unit_cost": ("Cost per claim", "单次成本"),
    "description": ("Description", "说明"),
    "in_stock": ("In stock now", "当前有货"),
    "out_of_stock": ("out of stock", "无货"),
    "yes": ("yes", "是"),
    "no": ("no", "否"),
    "unlimited": ("unlimited", "不限"),
    "per_DAY": ("{n} a day", "每日 {n} 次"),
    "per_WEEK": ("{n} a week", "每周 {n} 次"),
    "per_MONTH": ("{n} a month", "每月 {n} 次"),
    "per_QUARTER": ("{n} a quarter", "每季 {n} 次"),
    "per_YEAR": ("{n} a year", "每年 {n} 次"),
    "left_DAY": ("{n} left today", "今日剩余 {n} 次"),
    "left_WEEK": ("{n} left this week", "本周剩余 {n} 次"),
    "left_MONTH": ("{n} left this month", "本月剩余 {n} 次"),
    "left_QUARTER": ("{n} left this quarter", "本季剩余 {n} 次"),
    "left_YEAR": ("{n} left this year", "本年剩余 {n} 次"),
    "next_claim_at": ("Claimable again", "下次可领"),
    "active_col": ("Active", "启用"),
    # customers
    "customer_id": ("Customer id", "客户号"),
    "look_up": ("Look up", "查询"),
    "groups": ("Groups", "客群"),
    "flags": ("Flags", "标签"),
    "home_branch": ("Home branch", "归属网点"),
    "next_tier": ("Next tier", "下一层级"),
    "gap": ("still needed (annual avg AUM)", "尚差（年日均资产）"),
    "top_tier": ("already in the top tier", "已是最高层级"),
    "decided_by_rules": ("Why: rules that fired", "依据：命中的规则"),
    "ruleset": ("Ruleset", "规则集"),
    "version": ("Version", "版本"),
    "decided_at": ("Decided at", "决策时间"),
    "downgrade_pending": ("Evaluations left before a downgrade", "降级前剩余评估次数"),
    "history": ("Tier changes", "层级变动历史"),
    "when": ("When", "时间"),
    "as_of": ("As of", "数据日期"),
    "change": ("Change", "变动"),
    "managers": ("Managers", "管户人"),
    "kind": ("Kind", "类型"),
    "request_change": ("Ask to change who manages this customer", "申请调整管户"),
    "request_help": ("During a lock period an approver of the branch decides it; you cannot decide your own.",
                     "锁包期内由分行审批人审批；不能审批自己的申请。"),
    "from_staff": ("From staff id (REMOVE, TRANSFER)", "调出员工（移出、转移）"),
    "to_staff": ("To staff id (ADD, TRANSFER)", "调入员工（新增、转移）"),
    "send_request": ("Send the request", "提交申请"),
    "requested_msg": ("Change request {id} is waiting for an approver.", "申请 {id} 已提交，等待审批。"),
    "TRANSFER": ("Transfer", "转移"),
    "ADD": ("Add", "新增"),
    "REMOVE": ("Remove", "移出"),
    "since": ("Since", "起始"),
    "entitlements": ("Entitlements", "权益"),
    "benefit": ("Benefit", "权益"),
    "remaining": ("Left this period", "本期剩余"),
    "valid_until": ("Valid until", "有效期至"),
    "points_cost": ("Points", "积分"),
    "none": ("none", "无"),
    "not_found": ("Not found.", "未找到。"),
    # scores
    "period_id": ("Period id", "考核期"),
    "all": ("all", "全部"),
    "finalized_only": ("Finalized only", "仅已定稿"),
    "total": ("Total", "总分"),
    "rank": ("Rank", "排名"),
    "status": ("Status", "状态"),
    "revision": ("Revision", "修订"),
    "scorecard": ("Scorecard", "考核表"),
    "by_role_branch": ("By role and branch", "按角色与机构"),
    "people_scores": ("Each person", "个人得分"),
    "people": ("People", "人数"),
    "mean": ("Mean", "平均"),
    "lowest": ("Lowest", "最低"),
    "highest": ("Highest", "最高"),
    "download_csv": ("Download CSV (finalized)", "下载 CSV（已定稿）"),
    "indicators": ("Indicators", "指标"),
    "indicator": ("Indicator", "指标"),
    "method": ("Method", "方法"),
    "raw_value": ("Value", "原始值"),
    "score": ("Score", "得分"),
    "full_marks": ("Full marks", "满分"),
    "peer_mean": ("Peer mean", "同组均值"),
    "peer_stddev": ("Peer σ", "同组标准差"),
    "peer_count": ("Peers", "同组人数"),
    "note": ("Note", "说明"),
    "no_scores": ("No scores for this selection.", "该条件下没有考核结果。"),
    "not_finalized": ("This period is not finalized yet: no download.", "该期间尚未定稿，不能下载。"),
    # rules
    "rulesets": ("Rulesets", "规则集"),
    "service": ("Service", "服务"),
    "name": ("Name", "名称"),
    "active_version": ("In force", "生效版本"),
    "latest_version": ("Latest", "最新版本"),
    "versions": ("Versions", "版本"),
    "created_by": ("Created by", "创建人"),
    "published_by": ("Published by", "发布人"),
    "active": ("in force", "生效中"),
    "diff": ("Compare versions", "版本比较"),
    "compare": ("Compare", "比较"),
    "from_version": ("From version", "原版本"),
    "to_version": ("To version", "新版本"),
    "no_difference": ("The two versions are the same.", "两个版本相同。"),
    "upload": ("Upload a new version", "上传新版本"),
    "document": ("Document (YAML)", "规则文档（YAML）"),
    "document_help": ("Starts as the latest version: edit it, then upload it as a new draft.",
                      "初始内容为最新版本：修改后作为新草稿上传。"),
    "document_file": ("…or a file", "……或选择文件"),
    "uploaded_msg": ("Stored as version {version} (draft).", "已保存为第 {version} 版（草稿）。"),
    "examples": ("Examples", "样例"),
    "run_examples": ("Run its examples", "运行样例"),
    "examples_passed": ("All {n} examples pass.", "全部 {n} 个样例通过。"),
    "examples_failed": ("{failed} of {n} examples fail.", "{n} 个样例中 {failed} 个未通过。"),
    "passed": ("pass", "通过"),
    "failed": ("fail", "未通过"),
    "simulate": ("Impact on a sample", "样本影响模拟"),
    "sample": ("Sample (one JSON object per line, e.g. customer snapshots)", "样本（每行一个 JSON 对象，如客户快照）"),
    "run_simulation": ("Simulate", "模拟"),
    "migration": ("Migration against version {active} in force", "相对生效版本 {active} 的迁移"),
    "changed_of": ("{changed} of {total} change", "{total} 个中 {changed} 个变化"),
    "publish": ("Publish", "发布"),
    "published_msg": ("Version {version} is now in force.", "第 {version} 版已生效。"),
    "publish_help": ("Makes this version the one in force (its examples run first).",
                     "使该版本生效（先运行样例）。"),
    "bad_sample": ("Line {line} of the sample is not a JSON object.", "样本第 {line} 行不是 JSON 对象。"),
    "problems": ("Problems", "问题"),
    "path": ("Path", "位置"),
    # operations
    "health": ("Service health", "服务健康"),
    "in_force": ("Ruleset versions in force", "生效的规则版本"),
    "audit": ("Audit trail", "审计记录"),
    "actor": ("Who", "操作人"),
    "subject": ("Subject", "对象"),
    "chain_note": ("Each service keeps its records in hash chains anchored at their heads: "
                   "'Verify chains' checks every record and where every chain ends.",
                   "每个服务的审计记录组成锚定链头的哈希链：“校验哈希链”逐条检查记录及每条链的末端。"),
    "serving": ("serving", "正常"),
    "not_serving": ("not serving", "不可用"),
    "unreachable": ("unreachable", "无法连接"),
    # errors
    "forbidden": ("Your roles do not allow this page or action.", "您的角色无权访问此页面或操作。"),
    "csrf": ("The form was out of date or not sent by this console (CSRF check). Reload the page and try again.",
             "表单已过期或并非来自本控制台（CSRF 校验）。请刷新页面后重试。"),
    "page_not_found": ("No such page.", "页面不存在。"),
    "too_large": ("What was sent is too large.", "提交内容过大。"),
    "error": ("Error", "错误"),
    # operations: the audit trail of each service and its chain verification
    "verify_chain": ("Verify chains", "校验哈希链"),
    "verify_result": ("Chain verification of {service}", "{service} 的哈希链校验"),
    "verify_ok": ("All {chains} chains are intact: {records} records checked, each chain ends at its anchored "
                  "head.", "全部 {chains} 条链完好：已检查 {records} 条记录，每条链都止于其锚定的链头。"),
    "verify_broken": ("BROKEN: {broken} of {chains} chains do not verify. Records were changed, removed or "
                      "added outside the service.", "已损坏：{chains} 条链中有 {broken} 条未通过校验，"
                      "有记录在服务之外被修改、删除或添加。"),
    "verify_partial": ("Not finished: {unchecked} chains were not checked in the time allowed; run "
                       "`kequn audit verify --service {service}` on its host.",
                       "未完成：{unchecked} 条链未能在限定时间内检查，请在服务主机上运行 "
                       "`kequn audit verify --service {service}`。"),
    "verified_at": ("Verified at {at}; {count} records in the log; heads digest {digest}",
                    "校验时间 {at}；日志共 {count} 条记录；链头摘要 {digest}"),
    "chain": ("Chain", "链"),
    "chain_legacy": ("legacy", "早期记录"),
    "chain_state": ("State", "状态"),
    "chain_ok": ("intact", "完好"),
    "chain_broken": ("BROKEN", "已损坏"),
    "chain_not_checked": ("not checked", "未检查"),
    "records_checked": ("Records checked / length", "已检查 / 链长"),
    "first_bad": ("First bad record", "首条异常记录"),
    "problem": ("What is wrong", "问题"),
    "event_id": ("Record", "记录"),
}

# google.rpc.ErrorInfo reasons (CONTRACT.md, second round) in words.
REASONS: dict[str, tuple[str, str]] = {
    "BOOK_FULL": ("The receiving book is already at its maximum size.", "接收方管户包已达上限。"),
    "BOOK_LOCKED": ("The book is locked for the lock period; the change needs an approved change request.",
                    "管户包处于锁包期，调整须经审批。"),
    "SELF_APPROVAL": ("You cannot decide a request you made yourself: another approver must do it.",
                      "不能审批自己提交的申请，须由其他审批人处理。"),
    "NOT_APPROVER": ("You are not an approver at the level this change needs (by default the branch, 分行) "
                     "above the customer's home outlet.",
                     "您不是该客户归属网点上级、所需层级（默认为分行）的审批人。"),
    "CONFLICT": ("It conflicts with a change already made; reload and look again.", "与已生效的调整冲突，请刷新后重试。"),
    "PERIOD_FINALIZED": ("The period is finalized: its results no longer change.", "考核期已定稿，结果不可更改。"),
    "RULESET_LOADING": ("The rules are still loading; try again in a moment.", "规则加载中，请稍后重试。"),
    "FOUR_EYES_REQUIRED": ("This ruleset needs a second person to release it.", "该规则集须由另一人审批发布（四眼原则）。"),
    "INVALID_INPUT": ("Something sent is not valid.", "提交内容无效。"),
    "NOT_FOUND": ("It does not exist (any more).", "对象不存在。"),
    "UNAUTHENTICATED": ("Your sign-in is no longer valid.", "登录已失效。"),
    "PERMISSION_DENIED": ("You are not allowed to do this.", "您无权执行此操作。"),
    "OVERLOADED": ("The service is busy; try again shortly.", "服务繁忙，请稍后重试。"),
    "DEPENDENCY_UNAVAILABLE": ("A service it needs is unavailable; try again later.", "所依赖的服务不可用，请稍后重试。"),
    "OUT_OF_STOCK": ("Out of stock.", "库存不足。"),
    "BUDGET_EXHAUSTED": ("The budget is used up.", "预算已用完。"),
    "QUOTA_USED": ("The quota for this period is used.", "本期次数已用完。"),
    "COOL_DOWN": ("Too soon after the last claim.", "距上次领取时间过短。"),
    "NOT_ELIGIBLE": ("Not eligible.", "不符合条件。"),
    "CHANNEL_NOT_ALLOWED": ("Not available through this channel.", "该渠道不可用。"),
    "FAILED_PRECONDITION": ("A business rule refuses it.", "业务规则不允许。"),
    "UNAVAILABLE": ("The service is unavailable; try again later.", "服务不可用，请稍后重试。"),
    "DEADLINE_EXCEEDED": ("The service did not answer in time.", "服务响应超时。"),
    "INTERNAL": ("The service failed (a bug); give operations the error id.", "服务内部错误，请将错误编号告知运维。"),
    # rule store
    "RULESET_NOT_PUBLISHED": ("The rules this needs have no published version yet.", "所需规则集尚无已发布版本。"),
    "RULESET_INVALID": ("This version no longer validates or its examples fail.", "该版本校验不通过或样例未通过。"),
    "WRONG_STATE": ("It is not in the state this needs (e.g. not a draft, or not claimed).",
                    "对象状态不允许此操作（如非草稿或未领取）。"),
    "KIND_MISMATCH": ("A ruleset of that name exists with another kind.", "同名规则集已存在且类型不同。"),
    "KIND_UNKNOWN": ("This service does not serve rules of that kind.", "本服务不支持该类型的规则。"),
    # tiering
    "NO_TIER": ("The tier rules in force give this customer no tier.", "现行分层规则未给该客户分配层级。"),
    # benefits
    "BENEFIT_INACTIVE": ("The benefit is switched off.", "该权益已停用。"),
    "OUTSIDE_VALIDITY": ("Today is outside the benefit's validity window.", "今天不在该权益的有效期内。"),
    "INSUFFICIENT_POINTS": ("Not enough points.", "积分不足。"),
    "NOT_PHYSICAL": ("The benefit has no inventory (not a physical gift).", "该权益无库存管理（非实物礼品）。"),
    "STOCK_HELD": ("That would take out units held by claims.", "出库数量超过未被领取占用的库存。"),
    "BUDGET_BELOW_SPENT": ("The new budget is below what is already spent.", "新预算低于已支出金额。"),
    # scoring
    "PERIOD_NOT_CALCULATED": ("Nothing is calculated yet for this period.", "该考核期尚未计算。"),
    "PERIOD_NOT_FINALIZED": ("Revisions are only for finalized periods.", "仅已定稿的考核期可修订。"),
    "RESULTS_STALE": ("Values changed since the last calculation; calculate again.", "上次计算后数据有变动，请重新计算。"),
    "MISSING_VALUES": ("Some results lack a required value.", "部分结果缺少必填指标值。"),
    # assignment (docs/assignment.md)
    "ROLE_MISMATCH": ("The staff member does not hold the role this book is for.", "该员工的岗位与管户包岗位不符。"),
    "ROLE_NOT_NEEDED": ("This customer does not need a manager of that role.", "该客户不需要该岗位的管户人。"),
    "STAFF_INACTIVE": ("The staff member is inactive and takes no new customers.", "该员工已停用，不接收新客户。"),
    "OUT_OF_SCOPE": ("The staff member is outside the units that may serve this customer.",
                     "该员工不在可服务该客户的机构范围内。"),
    # release governance and explanations (issue 15)
    "TOO_LATE_TO_CANCEL": ("It is too late to cancel: the release is in force.", "发布已生效，无法撤销。"),
    "EFFECTIVE_FROM_TOO_SOON": ("The effective date is too soon.", "生效日期过早。"),
    "NO_POPULATION": ("There is no customer base to measure the impact on.", "没有可用于影响分析的客户数据。"),
    "INPUT_NOT_STORED": ("This decision was made before inputs were kept, so it cannot be explained.",
                         "该决策早于输入留存，无法解释。"),
}

# Why a customer is unplaced (assignment's Unplaced.reason) and why a change request exists (cause).
UNPLACED_REASONS: dict[str, tuple[str, str]] = {
    "NO_STAFF_OF_ROLE": ("No staff of the needed role in reach.", "可及范围内没有该岗位的员工。"),
    "ALL_BOOKS_FULL": ("Every book in reach is full.", "可及范围内的管户包均已满。"),
    "NO_HOME_BRANCH": ("The customer has no home branch.", "客户没有归属网点。"),
}
CAUSES: dict[str, tuple[str, str]] = {
    "MANUAL": ("asked by a person", "人工申请"),
    "TIER_CHANGE": ("the customer's tier changed", "客户层级变动"),
    "GROUP_CHANGE": ("the customer's groups or flags changed", "客户客群或标签变动"),
    "HOME_BRANCH_CHANGE": ("the customer's home branch changed", "客户归属网点变动"),
    "STAFF_DEACTIVATED": ("the holder left the role", "原管户人离岗"),
    "BOOK_OVER_MAX": ("the book is over its max", "管户包超上限"),
    "PERIOD_END": ("a lock period ended", "锁包期结束"),
}


def lang_of(value: str | None) -> str:
    return value if value in LANGS else DEFAULT_LANG


def pick_lang(accept_language: str | None) -> str:
    """The first of en/zh named in an Accept-Language header, else the default."""
    for part in (accept_language or "").split(","):
        tag = part.split(";")[0].strip().lower()
        if tag.startswith("zh"):
            return "zh"
        if tag.startswith("en"):
            return "en"
    return DEFAULT_LANG


def label(key: str, lang: str, **values) -> str:
    pair = LABELS.get(key)
    text = key if pair is None else pair[LANGS.index(lang_of(lang))]
    return text.format(**values) if values else text


def reason_words(reason: str, lang: str) -> str:
    pair = REASONS.get(reason)
    if pair is None:
        return ("The service refused it." if lang_of(lang) == "en" else "服务拒绝了该操作。")
    return pair[LANGS.index(lang_of(lang))]


def _words(table: dict[str, tuple[str, str]], code: str, lang: str) -> str:
    pair = table.get(code)
    return code if pair is None else pair[LANGS.index(lang_of(lang))]


def unplaced_words(reason: str, lang: str) -> str:
    return _words(UNPLACED_REASONS, reason, lang)


def cause_words(cause: str, lang: str) -> str:
    return _words(CAUSES, cause, lang)
