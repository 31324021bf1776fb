"""Lake tables of the metrics stage: portfolio figures for headquarters risk and BI (DOMAIN.md section 5).

Seven tables, each partitioned by as_of_date and recomputed whole for every business date from that
date's loan_snapshot, the snapshots at earlier period ends and the landing tables (docs/metrics.md
gives every formula). Ratios are balance-weighted unless the column name says count, and a ratio
whose denominator is zero is null.

Grouped tables (portfolio_metrics, migration_rates, roll_rates, kpi_breaches) carry the same group
columns: `grouping` names the dimension (GROUPINGS), `group_key` the value, and `branch_path` lets
a branch user's row-level security keep the rows of their own subtree.
"""

from __future__ import annotations

from pyspark.sql import types as T

from schemas.base import BOOL, DATE, INT, LONG, MONEY, STRING, STRINGS, Column, Table
from schemas.lake import BUCKETS
from schemas.landing import CHANNEL_STATUSES, RISK_CLASSES, SIGNAL_SEVERITIES

# Ratios: six decimals; wide enough for a migration rate above 100% (possible when loans that moved
# down also repaid much of their balance).
RATIO = T.DecimalType(18, 6)
SCORE = T.DecimalType(5, 2)

# The GraphQL API's GroupBy enum uses the first seven; BRANCH_PRODUCT is the branch x product cross.
GROUPINGS: tuple[str, ...] = (
    "HQ",
    "TIER1_BRANCH",
    "TIER2_BRANCH",
    "BRANCH",
    "PRODUCT",
    "CHANNEL",
    "OFFICER",
    "BRANCH_PRODUCT",
)
BRANCH_GROUPINGS: tuple[str, ...] = ("HQ", "TIER1_BRANCH", "TIER2_BRANCH", "BRANCH", "BRANCH_PRODUCT")
# group_key of the HQ row, and of the group of loans without a value (no channel, no tier-2 branch).
HQ_KEY = "HQ"
NONE_KEY = "NONE"

PERIOD_TYPES: tuple[str, ...] = ("MONTH", "QUARTER", "YEAR")
# Where a loan on the book at the period start is at the period end: a class (or bucket) if still on
# the book, else how it left.
EXIT_STATES: tuple[str, ...] = ("SETTLED", "WRITTEN_OFF", "OFF_BOOK")
NORMAL_LOANS = "NORMAL_LOANS"  # 正常貸款 = NORMAL + SPECIAL_MENTION (正常貸款遷徙率)
MIGRATION_FROM: tuple[str, ...] = (*RISK_CLASSES, NORMAL_LOANS)
KPI_METRICS: tuple[str, ...] = ("OVERDUE_RATIO", "NPL_RATIO", "M1_CURE_RATE")
WARNING_TYPES: tuple[str, ...] = ("NEW_SIGNAL", "DOWNGRADE", "FIRST_PAYMENT_DEFAULT")


def state_column(state: str) -> str:
    """Column-name stem of a class, bucket or exit state: SPECIAL_MENTION -> special_mention, M7+ -> m7plus."""
    return state.lower().replace("+", "plus")


_AS_OF = Column("as_of_date", DATE, "Business date (數據日期) the row describes", nullable=False)


def _group_columns(what: str) -> tuple[Column, ...]:
    return (
        Column("grouping", STRING, f"Dimension {what} is grouped by (filter on it)", nullable=False, allowed=GROUPINGS),
        Column(
            "group_key",
            STRING,
            "Value of the dimension: branch id, product code, channel id, officer id, 'branch|product' for "
            f"BRANCH_PRODUCT, '{HQ_KEY}' for HQ, '{NONE_KEY}' for loans without one (no channel, no tier-2 branch)",
            nullable=False,
        ),
        Column("group_label", STRING, "Name of the group (branch, product, channel or officer name), where known"),
        Column("branch_id", STRING, "Branch of the group (branch groupings; HQ: the head office)"),
        Column("product_code", STRING, "Product of the group (PRODUCT and BRANCH_PRODUCT)"),
        Column(
            "tier1_branch_id",
            STRING,
            "Tier-1 branch (一級分行) all the group's loans belong to; null when they span several or none",
        ),
        Column(
            "branch_path",
            STRINGS,
            "Row-level security: head office down to the group's branch (branch groupings); for product, "
            "channel and officer groups the longest common branch path of their loans",
            nullable=False,
        ),
    )


def _count_balance(prefix: str, states: tuple[str, ...], count_doc: str, balance_doc: str) -> tuple[Column, ...]:
    columns: list[Column] = []
    for state in states:
        stem = f"{prefix}{state_column(state)}"
        columns.append(Column(f"{stem}_count", LONG, count_doc.format(state=state), nullable=False, non_negative=True))
        columns.append(
            Column(f"{stem}_balance", MONEY, balance_doc.format(state=state), nullable=False, non_negative=True)
        )
    return tuple(columns)


PORTFOLIO_METRICS = Table(
    name="portfolio_metrics",
    comment=(
        "Portfolio figures per business date and group (HQ, tier-1 branch, tier-2 branch, branch, product, "
        "channel, customer manager, branch x product): loans, balance, overdue and NPL balances and ratios, "
        "and the class and bucket mix. One row per group value; sums of loan_snapshot (docs/metrics.md)."
    ),
    key=("as_of_date", "grouping", "group_key"),
    partition_by=("as_of_date",),
    columns=(
        _AS_OF,
        *_group_columns("the row"),
        Column("loan_count", LONG, "Loans on the book (count)", nullable=False, non_negative=True),
        Column(
            "outstanding_balance",
            MONEY,
            "Outstanding principal (貸款餘額) of the loans on the book",
            nullable=False,
            non_negative=True,
        ),
        Column("overdue_count", LONG, "Loans with dpd > 0 (count)", nullable=False, non_negative=True),
        Column(
            "overdue_balance",
            MONEY,
            "逾期貸款餘額: whole outstanding principal of the loans with dpd > 0 (not only their overdue instalments)",
            nullable=False,
            non_negative=True,
        ),
        Column("overdue_ratio", RATIO, "逾期率 = overdue_balance / outstanding_balance; null when the balance is 0"),
        Column(
            "overdue_principal",
            MONEY,
            "Principal of the overdue instalments only (sum of loan_snapshot.overdue_principal)",
            nullable=False,
            non_negative=True,
        ),
        Column("npl_count", LONG, "Non-performing loans (SUBSTANDARD, DOUBTFUL, LOSS), count", nullable=False),
        Column(
            "npl_balance",
            MONEY,
            "不良貸款餘額: outstanding principal of SUBSTANDARD, DOUBTFUL and LOSS loans",
            nullable=False,
            non_negative=True,
        ),
        Column("npl_ratio", RATIO, "不良率 = npl_balance / outstanding_balance; null when the balance is 0"),
        *_count_balance(
            "",
            RISK_CLASSES,
            "Loans classified {state} (count)",
            "Outstanding principal of the loans classified {state}",
        ),
        *_count_balance(
            "",
            BUCKETS,
            "Loans in delinquency bucket {state} (count)",
            "Outstanding principal of the loans in delinquency bucket {state}",
        ),
    ),
)

_PERIOD_START = Column(
    "period_start_date",
    DATE,
    "Business date of the period-start snapshot compared with: the last successful run on or before the "
    "previous period end, within metrics.period_start_lookback_days",
    nullable=False,
)

MIGRATION_RATES = Table(
    name="migration_rates",
    comment=(
        "Regulatory migration rates (遷徙率) between the period-start snapshot (previous month-, quarter- "
        "or year-end) and the business date, per group and period-start class, balance-weighted, with the "
        "class-to-class matrix in counts and period-start balances. No rows for a period whose start "
        "snapshot is missing. Formulas in docs/metrics.md."
    ),
    key=("as_of_date", "period_type", "grouping", "group_key", "from_class"),
    partition_by=("as_of_date",),
    columns=(
        _AS_OF,
        Column("period_type", STRING, "MONTH, QUARTER or YEAR", nullable=False, allowed=PERIOD_TYPES),
        _PERIOD_START,
        Column(
            "is_period_end",
            BOOL,
            "True when the business date is the last calendar day of its period (a complete period); "
            "otherwise the figures are period-to-date",
            nullable=False,
        ),
        *_group_columns("the row (by the loans' attributes at the period start)"),
        Column(
            "from_class",
            STRING,
            f"Class at the period start; {NORMAL_LOANS} = NORMAL and SPECIAL_MENTION together (正常貸款遷徙率)",
            nullable=False,
            allowed=MIGRATION_FROM,
        ),
        Column("loan_count", LONG, "Loans of the class at the period start (count)", nullable=False),
        Column("start_balance", MONEY, "Period-start outstanding principal of those loans", nullable=False),
        Column(
            "exited_count",
            LONG,
            "Of them, loans that left the book during the period (settled, written off, otherwise gone)",
            nullable=False,
        ),
        Column("exited_balance", MONEY, "Period-start balance of the loans that left the book", nullable=False),
        Column(
            "repaid_balance",
            MONEY,
            "Reduction of balance of the loans still on the book: sum of max(start balance - end balance, 0)",
            nullable=False,
        ),
        Column(
            "decrease_balance",
            MONEY,
            "期間減少金額 = exited_balance + repaid_balance (repayment, settlement, disposal, write-off)",
            nullable=False,
        ),
        Column(
            "denominator_balance",
            MONEY,
            "start_balance - decrease_balance (= sum over loans still on the book of min(start, end balance))",
            nullable=False,
        ),
        Column(
            "moved_down_count",
            LONG,
            "Loans still on the book whose end class is worse than the start class (for NORMAL_LOANS: now "
            "SUBSTANDARD, DOUBTFUL or LOSS); loans that left the book never count here",
            nullable=False,
        ),
        Column(
            "moved_down_balance",
            MONEY,
            "向下遷徙金額: period-START balance of the loans that moved down",
            nullable=False,
        ),
        Column("moved_down_end_balance", MONEY, "Period-END balance of the loans that moved down", nullable=False),
        Column(
            "migration_rate",
            RATIO,
            "遷徙率 = moved-down balance / denominator_balance; the numerator is moved_down_balance (default) or "
            "moved_down_end_balance per metrics.migration_numerator; null for LOSS and when the denominator is 0",
        ),
        *_count_balance(
            "to_",
            (*RISK_CLASSES, *EXIT_STATES),
            "Matrix: loans of the start class whose state at the period end is {state} (count)",
            "Matrix: period-start balance of the loans of the start class whose state at the period end is {state}",
        ),
    ),
)

ROLL_RATES = Table(
    name="roll_rates",
    comment=(
        "Roll rates: where the balance in each delinquency bucket at the previous month-end stands on the "
        "business date (bucket, or settled / written off / off the book), per group, and the cure rate; the "
        "M1 row's cure_rate is the M1 conversion rate (M1轉化率). Balances are period-start balances."
    ),
    key=("as_of_date", "grouping", "group_key", "from_bucket"),
    partition_by=("as_of_date",),
    columns=(
        _AS_OF,
        _PERIOD_START,
        Column(
            "is_period_end",
            BOOL,
            "True when the business date is a calendar month-end (a complete month); otherwise month-to-date",
            nullable=False,
        ),
        *_group_columns("the row (by the loans' attributes at the previous month-end)"),
        Column("from_bucket", STRING, "Delinquency bucket at the previous month-end", nullable=False, allowed=BUCKETS),
        Column("from_count", LONG, "Loans in the bucket at the previous month-end (count)", nullable=False),
        Column("from_balance", MONEY, "Their outstanding principal at the previous month-end", nullable=False),
        *_count_balance(
            "to_",
            (*BUCKETS, *EXIT_STATES),
            "Loans of the from-bucket now in state {state} (count)",
            "Previous-month-end balance of the loans of the from-bucket now in state {state}",
        ),
        Column(
            "cure_balance",
            MONEY,
            "Previous-month-end balance of the loans now current (M0) or settled",
            nullable=False,
        ),
        Column(
            "cure_rate",
            RATIO,
            "cure_balance / from_balance; on the M1 row, the M1 conversion rate (target metrics); null when 0",
        ),
        Column(
            "roll_forward_balance",
            MONEY,
            "Previous-month-end balance of the loans now in a worse bucket",
            nullable=False,
        ),
        Column("roll_forward_rate", RATIO, "roll_forward_balance / from_balance; null when from_balance is 0"),
    ),
)

VINTAGE = Table(
    name="vintage",
    comment=(
        "Vintage curves: for each product, disbursement month and month on book (MOB), the share of the "
        "amount disbursed that month that was ever 30+ and ever 90+ days past due by that MOB. Recomputed "
        "from schedules and repayments up to the business date; closed loans included."
    ),
    key=("as_of_date", "product_code", "disbursement_month", "mob"),
    partition_by=("as_of_date",),
    columns=(
        _AS_OF,
        Column("product_code", STRING, "Loan product", nullable=False),
        Column("product_name", STRING, "Product name"),
        Column("disbursement_month", DATE, "First day of the disbursement month (the cohort)", nullable=False),
        Column(
            "mob",
            INT,
            "Months on book: whole months since disbursement, as loan_snapshot.mob (0 = first month)",
            nullable=False,
        ),
        Column("loan_count", LONG, "Loans disbursed in the month (count), whatever their status now", nullable=False),
        Column("disbursed_amount", MONEY, "Contract principal disbursed in the month", nullable=False),
        Column(
            "ever_dpd30_count",
            LONG,
            "Loans that reached dpd >= metrics.vintage_dpd30_days (30) at a MOB <= mob (count)",
            nullable=False,
        ),
        Column("ever_dpd30_amount", MONEY, "Disbursed principal of those loans", nullable=False),
        Column("ever_dpd30_rate", RATIO, "ever_dpd30_amount / disbursed_amount"),
        Column(
            "ever_dpd90_count",
            LONG,
            "Loans that reached dpd >= metrics.vintage_dpd90_days (90) at a MOB <= mob (count)",
            nullable=False,
        ),
        Column("ever_dpd90_amount", MONEY, "Disbursed principal of those loans", nullable=False),
        Column("ever_dpd90_rate", RATIO, "ever_dpd90_amount / disbursed_amount"),
        Column(
            "is_complete",
            BOOL,
            "True when every loan of the cohort has passed this MOB (the point will not change any more)",
            nullable=False,
        ),
    ),
)

KPI_BREACHES = Table(
    name="kpi_breaches",
    comment=(
        "Customer managers, branches and products breaching the configured targets on the business date "
        "(逾期率 at most 3%, 不良率 at most 1%, M1 conversion at least 92%: seed part 4, section 1(3)(4)), "
        "with the figure and the target. One row per group and metric breached."
    ),
    key=("as_of_date", "metric", "grouping", "group_key"),
    partition_by=("as_of_date",),
    columns=(
        _AS_OF,
        Column("metric", STRING, "OVERDUE_RATIO, NPL_RATIO or M1_CURE_RATE", nullable=False, allowed=KPI_METRICS),
        *_group_columns("the target applies to"),
        Column(
            "value",
            RATIO,
            "The group's figure (portfolio_metrics ratio, or roll_rates cure_rate of M1)",
            nullable=False,
        ),
        Column("target", RATIO, "The configured target", nullable=False),
        Column(
            "comparison",
            STRING,
            "AT_MOST: breached when value > target (ratios); AT_LEAST: breached when value < target (cure rate)",
            nullable=False,
            allowed=("AT_MOST", "AT_LEAST"),
        ),
        Column("gap", RATIO, "value - target", nullable=False),
        Column(
            "base_balance",
            MONEY,
            "Denominator of the figure: outstanding balance, or the M1 balance at the previous month-end",
            nullable=False,
        ),
        Column("period_start_date", DATE, "M1_CURE_RATE: the previous month-end snapshot; null for ratios"),
        Column("target_tier1_branch_id", STRING, "Tier-1 branch whose own target applied; null = bank-wide target"),
    ),
)

CHANNEL_SCORECARD = Table(
    name="channel_scorecard",
    comment=(
        "Cooperation channels (合作渠道) scored and rated (seed part 4, section 2): loans originated in the "
        "month to date, first-payment default, overdue and NPL ratios of the channel's loans, a weighted "
        "score, a rating from the configured bands and the exit flag. One row per channel."
    ),
    key=("as_of_date", "channel_id"),
    partition_by=("as_of_date",),
    columns=(
        _AS_OF,
        Column(
            "month_start",
            DATE,
            "First day of the business date's month (originations are month-to-date)",
            nullable=False,
        ),
        Column("channel_id", STRING, "Channel id", nullable=False),
        Column("channel_name", STRING, "Channel name"),
        Column("channel_status", STRING, "Cooperation status from the channels extract", allowed=CHANNEL_STATUSES),
        Column("branch_id", STRING, "Branch that manages the channel"),
        Column("manager_officer_id", STRING, "Channel manager"),
        Column(
            "branch_path",
            STRINGS,
            "Row-level security: head office down to the managing branch (the loans' common path if unknown)",
            nullable=False,
        ),
        Column(
            "originated_count", LONG, "Loans disbursed through the channel this month up to the date", nullable=False
        ),
        Column(
            "originated_amount",
            MONEY,
            "Principal disbursed through the channel this month up to the date",
            nullable=False,
        ),
        Column("loan_count", LONG, "The channel's loans on the book", nullable=False),
        Column("outstanding_balance", MONEY, "Their outstanding principal", nullable=False),
        Column("overdue_balance", MONEY, "Outstanding principal of those with dpd > 0", nullable=False),
        Column("overdue_ratio", RATIO, "overdue_balance / outstanding_balance"),
        Column("npl_balance", MONEY, "Outstanding principal of those classified SUBSTANDARD or worse", nullable=False),
        Column("npl_ratio", RATIO, "npl_balance / outstanding_balance"),
        Column(
            "fpd_observed_count",
            LONG,
            "Loans disbursed in the last metrics.channel_fpd_lookback_months months whose first instalment is "
            "more than delinquency.fpd_days past its due date (so FPD is known), closed loans included",
            nullable=False,
        ),
        Column("fpd_observed_amount", MONEY, "Their disbursed principal", nullable=False),
        Column("fpd_count", LONG, "Of them, first-payment defaults (count)", nullable=False),
        Column("fpd_amount", MONEY, "Disbursed principal of the first-payment defaults", nullable=False),
        Column("fpd_rate", RATIO, "fpd_amount / fpd_observed_amount"),
        Column(
            "score",
            SCORE,
            "0-100: weighted mean of the component scores of metrics.channel_score_components present; "
            "null when no component can be computed",
        ),
        Column("rating", STRING, "Band of metrics.channel_rating_bands the score falls in; null when unscored"),
        Column("flagged_for_exit", BOOL, "Rating is one of metrics.channel_exit_ratings (退出)", nullable=False),
    ),
)

EARLY_WARNINGS = Table(
    name="early_warnings",
    comment=(
        "Early-warning list (每日預警, seed part 1 art. 47): loans on the book with a risk signal raised, a "
        "downgrade of class, or a first-payment default since the previous successful run (the day before "
        "on a first run). One row per loan, warning type and signal."
    ),
    key=("as_of_date", "loan_id", "warning_type", "signal_id"),
    partition_by=("as_of_date",),
    columns=(
        _AS_OF,
        Column("loan_id", STRING, "Loan", nullable=False),
        Column(
            "warning_type",
            STRING,
            "NEW_SIGNAL, DOWNGRADE or FIRST_PAYMENT_DEFAULT",
            nullable=False,
            allowed=WARNING_TYPES,
        ),
        Column("signal_id", STRING, "NEW_SIGNAL: the risk signal (a borrower-level signal lists every loan)"),
        Column(
            "detail",
            STRING,
            "NEW_SIGNAL: the signal type; DOWNGRADE: 'FROM->TO'; FIRST_PAYMENT_DEFAULT: the first due date",
            nullable=False,
        ),
        Column(
            "severity",
            STRING,
            "NEW_SIGNAL: the signal's; DOWNGRADE: MAJOR into NPL, else MINOR; FIRST_PAYMENT_DEFAULT: MAJOR",
            nullable=False,
            allowed=SIGNAL_SEVERITIES,
        ),
        Column(
            "event_date", DATE, "Signal date, date of the first-payment default, or the business date", nullable=False
        ),
        Column("borrower_id", STRING, "Borrower", nullable=False),
        Column("branch_id", STRING, "Managing branch", nullable=False),
        Column("branch_path", STRINGS, "Branch ids from head office down (row-level security)", nullable=False),
        Column("officer_id", STRING, "Customer manager who must act on it", nullable=False),
        Column("product_code", STRING, "Loan product", nullable=False),
        Column("channel_id", STRING, "Cooperation channel, if any"),
        Column("risk_class", STRING, "Class on the business date", nullable=False, allowed=RISK_CLASSES),
        Column("previous_risk_class", STRING, "Class in the previous successful run"),
        Column("dpd", INT, "Days past due on the business date", nullable=False),
        Column("outstanding_principal", MONEY, "Balance on the business date", nullable=False),
        Column("previous_as_of_date", DATE, "Previous successful run's date (start of the window, exclusive)"),
    ),
)

METRICS_TABLES: tuple[Table, ...] = (
    PORTFOLIO_METRICS,
    MIGRATION_RATES,
    ROLL_RATES,
    VINTAGE,
    KPI_BREACHES,
    CHANNEL_SCORECARD,
    EARLY_WARNINGS,
)
