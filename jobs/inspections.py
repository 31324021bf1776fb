"""Post-loan inspection scheduling (貸後檢查, DOMAIN.md section 3, docs/inspections.md).

Every night, for the whole book: which checks are due, for which loan (or channel), by when, owned
by whom, and which are late. Each rule turns its inputs into *obligations* (one per task type,
subject and obligation key, with the window from which a completion counts and the due date);
`reconcile` matches them with the completed inspections staff recorded; `with_status` sets OPEN,
DONE or OVERDUE; `retained` keeps what belongs on tonight's list.

The rules on a loan of the book are Column expressions that give an array of obligation structs
(`obligation`, `periodic`); they are concatenated and exploded in one pass over the book
(`loan_obligations`). The rules on signals, on all contracts (monthly sample, collateral release)
and on channels give frames of their own; the stage unions them.

The table is rebuilt in full from the inputs each night (the landing tables, the snapshot and the
configuration), not carried over from the previous night, so a rerun of a date gives the same rows
and a task_id names the same obligation on every run.

Pure, set-based transformations: nothing here reads or writes a table, loops over loans in Python
or calls a UDF, and the business date is always passed in. Per-loan thresholds are read from the
resolved parameter columns (`jobs.params.param("inspections", ...)`), so tier-1 branch and product
overrides take effect. Business days come from a small calendar frame built from the configured
holidays (`business_calendar`), broadcast-joined once to the obligations (`with_due_dates`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from jobs.delinquency import with_branch_hierarchy
from jobs.params import TIER1, param, param_name, with_params
from jobs.sections.inspections import DEFAULT_PRIORITIES, InspectionsConfig
from jobs.spark import local_frame
from jobs.stages import StageContext
from schemas.base import Table
from schemas.inspections import (
    CHANNEL_CHECK,
    COLLATERAL_RELEASE,
    FIRST_CALLBACK,
    INSPECTION_TASKS,
    LOW_RISK_CHECK,
    MATURITY_NOTICE,
    MONTHLY_SAMPLE,
    PERIODIC_CHECK,
    PURPOSE_CHECK,
    RISK_EXIT_VISIT,
    SETTLED_LOANS,
    SIGNAL_VERIFICATION,
    TASK_STATUSES,
    TASK_TYPES,
)
from schemas.landing import (
    CHANNELS,
    COLLATERAL,
    COMPLETED_INSPECTIONS,
    GUARANTORS,
    OFFICERS,
    PRODUCTS,
    RISK_SIGNALS,
)

Transform = Callable[[DataFrame], DataFrame]

OPEN, DONE, OVERDUE = TASK_STATUSES
CUSTOMER_MANAGER, RISK_MANAGER, CHANNEL_MANAGER = "CUSTOMER_MANAGER", "RISK_MANAGER", "CHANNEL_MANAGER"
AUTONOMOUS = "AUTONOMOUS"
RISK_EXIT_LIST, LITIGATION, MATERIAL_CHANGE, MAJOR = "RISK_EXIT_LIST", "LITIGATION", "MATERIAL_CHANGE", "MAJOR"

# How a raw date becomes a due date (`with_due_dates`); PREVIOUS and NEXT are also the values
# of the `holiday_roll` setting.
EXACT, PREVIOUS, NEXT, BUSINESS_DAYS_BEFORE = "EXACT", "PREVIOUS", "NEXT", "BUSINESS_DAYS_BEFORE"
# The business-day calendar spans this many years either side of the business date.
CALENDAR_YEARS = 10

# What each rule produces, before due dates and reconciliation: `_due_raw` becomes `due_date` by
# `_due_rule` (`with_due_dates`); a null window_start opens `_open_days` before the due date.
# `_drop_if_open`: the obligation lapses unless already done (a cleared signal). The branch
# hierarchy is joined to the final tasks by branch_id, not carried: every obligation row passes
# through the reconciliation's shuffle and sort, and the path and tier-1 id were about 100 of the
# ~600 bytes of such a row in Spark's row format.
OBLIGATION_COLUMNS: tuple[str, ...] = (
    "task_type",
    "loan_id",
    "channel_id",
    "borrower_id",
    "product_code",
    "obligation_key",
    "reason",
    "window_start",
    "_due_raw",
    "_due_rule",
    "_due_n",
    "_open_days",
    "officer_id",
    "owner_role",
    "branch_id",
    "_retention_months",
    "_horizon_months",
    "_drop_if_open",
)

# Snapshot columns the rules read (plus the `inspections__*` parameters joined here).
SNAPSHOT_COLUMNS: tuple[str, ...] = (
    "loan_id",
    "borrower_id",
    "branch_id",
    "tier1_branch_id",
    "branch_path",
    "product_code",
    "officer_id",
    "repayment_method",
    "payment_mode",
    "collateral_type",
    "disbursement_date",
    "maturity_date",
    "is_npl",
)


def _p(name: str) -> Column:
    return param("inspections", name)


def _day(day: Column) -> Column:
    """A date as yyyy-MM-dd text (format_string would print a date's internal day number)."""
    return F.date_format(day, "yyyy-MM-dd")


# --------------------------------------------------------------------------------------------
# Business days: a small calendar frame built from the configured holidays, joined (broadcast)


def business_calendar(
    spark: SparkSession, holidays: Sequence[dt.date], as_of: dt.date, years: int = CALENDAR_YEARS
) -> DataFrame:
    """One row per day from `years` before to `years` after the business date (about 7,700 rows).

    Columns: `day`; `business_day` (Monday to Friday and not a configured holiday; make-up working
    weekends, 調休, are not modelled); `previous_business_day` (the day itself or the last business
    day before it); `next_business_day` (the day itself or the first after it);
    `business_days_before` (business days in the calendar strictly before the day). Outside the
    calendar a due date is not moved (and a maturity notice has no due date).
    """
    start = dt.date(as_of.year - years, 1, 1)
    end = dt.date(as_of.year + years, 12, 31)
    days_off = [F.lit(day) for day in sorted(set(holidays)) if start <= day <= end]
    off = F.array(*days_off) if days_off else F.array().cast("array<date>")
    day = F.col("day")
    # The calendar is small: one ordered window over all of it.
    ordered = Window.orderBy("day")
    return (
        spark.range((end - start).days + 1)
        .select(F.date_add(F.lit(start), F.col("id").cast("int")).alias("day"))
        .withColumn("business_day", ~F.dayofweek(day).isin(1, 7) & ~F.array_contains(off, day))
        .withColumns(
            {
                "previous_business_day": F.max(F.when(F.col("business_day"), day)).over(
                    ordered.rowsBetween(Window.unboundedPreceding, Window.currentRow)
                ),
                # Backwards, so that the frame grows (an unbounded-following frame is quadratic).
                "next_business_day": F.min(F.when(F.col("business_day"), day)).over(
                    Window.orderBy(day.desc()).rowsBetween(Window.unboundedPreceding, Window.currentRow)
                ),
                "business_days_before": F.coalesce(
                    F.sum(F.col("business_day").cast("int")).over(ordered.rowsBetween(Window.unboundedPreceding, -1)),
                    F.lit(0),
                ).cast("int"),
            }
        )
    )


def with_due_dates(calendar: DataFrame) -> Transform:
    """Turn each obligation's raw date into its due date by its rule (`_due_rule`):
    EXACT (as is), PREVIOUS or NEXT (moved off a weekend or holiday), BUSINESS_DAYS_BEFORE
    (the `_due_n`-th business day before the raw date; the raw date for 0). An obligation without
    a window start opens `_open_days` calendar days before its due date."""

    def transform(rows: DataFrame) -> DataFrame:
        days = calendar.select(
            F.col("day").alias("_due_raw"),
            F.col("previous_business_day").alias("_previous"),
            F.col("next_business_day").alias("_next"),
            F.col("business_days_before").alias("_before"),
        )
        numbered = calendar.where(F.col("business_day")).select(
            (F.col("business_days_before") + 1).alias("_target"), F.col("day").alias("_nth")
        )
        rule, raw, n = F.col("_due_rule"), F.col("_due_raw"), F.col("_due_n")
        counted = (rule == BUSINESS_DAYS_BEFORE) & (n > 0)
        due = (
            F.when(rule == PREVIOUS, F.coalesce(F.col("_previous"), raw))
            .when(rule == NEXT, F.coalesce(F.col("_next"), raw))
            .when(counted, F.col("_nth"))
            .otherwise(raw)
        )
        return (
            rows.join(F.broadcast(days), "_due_raw", "left")
            .withColumn("_target", F.when(counted, F.col("_before") - n + 1))
            .join(F.broadcast(numbered), "_target", "left")
            .withColumn("due_date", due)
            .withColumn("window_start", F.coalesce(F.col("window_start"), F.date_sub("due_date", F.col("_open_days"))))
            .drop("_previous", "_next", "_before", "_target", "_nth", "_due_raw", "_due_rule", "_due_n", "_open_days")
        )

    return transform


# --------------------------------------------------------------------------------------------
# Calendar periods (quarterly, half-yearly, monthly ...), aligned on calendar years


def month_index(day: Column) -> Column:
    """Months since year 0: year * 12 + month - 1."""
    return F.year(day) * 12 + F.month(day) - 1


def month_start(index: Column) -> Column:
    """First day of the month with the given `month_index`."""
    return F.make_date(F.floor(index / 12).cast("int"), (F.pmod(index, F.lit(12)) + 1).cast("int"), F.lit(1))


def _horizon_start(as_of: dt.date, months: Column) -> Column:
    return F.add_months(F.lit(as_of.replace(day=1)), -months)


def period_starts(
    anchor: Column, months: Column, as_of: dt.date, horizon_months: Column, include_anchor_period: bool
) -> Column:
    """Month indexes of the `months`-long calendar periods a recurring check is due in.

    From the period after the anchor's (or the anchor's own), to the period holding the business
    date, no earlier than the period holding the horizon start. Empty when `months` is 0.
    """
    m = F.greatest(months, F.lit(1))

    def period_of(index: Column) -> Column:
        return index - F.pmod(index, m)

    first = period_of(month_index(anchor)) + (F.lit(0) if include_anchor_period else m)
    last = period_of(F.lit(as_of.year * 12 + as_of.month - 1))
    low = F.greatest(first, period_of(month_index(_horizon_start(as_of, horizon_months))))
    return F.when((months > 0) & (low <= last), F.sequence(low, last, m)).otherwise(F.array().cast("array<int>"))


def obligation(
    task_type: str,
    key: Column,
    reason: Column,
    window_start: Column | None,
    due: Column,
    *,
    rule: Column | None = None,
    count: Column | None = None,
    open_days: Column | None = None,
    owner_role: str = CUSTOMER_MANAGER,
    officer: Column | None = None,
    drop_if_open: Column | None = None,
) -> Column:
    """One obligation as a struct: what a rule emits for a loan or channel. `due` is the raw date
    that `rule` (EXACT by default, PREVIOUS, NEXT, BUSINESS_DAYS_BEFORE `count`) makes the due
    date; without a window start, the task opens `open_days` before its due date."""
    return F.struct(
        F.lit(task_type).alias("task_type"),
        key.cast("string").alias("obligation_key"),
        reason.cast("string").alias("reason"),
        (F.lit(None) if window_start is None else window_start).cast("date").alias("window_start"),
        due.cast("date").alias("_due_raw"),
        (F.lit(EXACT) if rule is None else rule).cast("string").alias("_due_rule"),
        (F.lit(0) if count is None else count).cast("int").alias("_due_n"),
        (F.lit(0) if open_days is None else open_days).cast("int").alias("_open_days"),
        (F.col("officer_id") if officer is None else officer).cast("string").alias("officer_id"),
        F.lit(owner_role).alias("owner_role"),
        (F.lit(False) if drop_if_open is None else drop_if_open).alias("_drop_if_open"),
    )


def only_if(condition: Column, item: Column) -> Column:
    """[item] when the condition holds, else an empty array of the same type."""
    return F.filter(F.array(item), lambda _: F.coalesce(condition, F.lit(False)))


def periodic(
    task_type: str,
    anchor: Column,
    months: Column,
    as_of: dt.date,
    reason: Callable[[Column], Column],
    *,
    horizon_months: Column | None = None,
    roll: Column | None = None,
    include_anchor_period: bool = False,
    owner_role: str = CUSTOMER_MANAGER,
    officer: Column | None = None,
) -> Column:
    """One obligation per calendar period due (see `period_starts`): key yyyy-MM of the period
    start, window from the period start, due on the period's last day moved to a business day."""
    horizon = _p("horizon_months") if horizon_months is None else horizon_months
    direction = _p("holiday_roll") if roll is None else roll
    length = F.greatest(months, F.lit(1))

    def item(index: Column) -> Column:
        start = month_start(index)
        end = F.last_day(F.add_months(start, length - 1))
        return obligation(
            task_type,
            F.date_format(start, "yyyy-MM"),
            reason(start),
            start,
            end,
            rule=direction,
            owner_role=owner_role,
            officer=officer,
        )

    return F.transform(period_starts(anchor, months, as_of, horizon, include_anchor_period), item)


def sample(group: Sequence[str], ratio: Column) -> Transform:
    """Keep ceil(ratio x n) rows of each group (never below the ratio), chosen reproducibly.

    Rows are ranked by SHA-256 of loan_id|obligation_key (the month or period): the same inputs
    give the same sample on every run. When the loans of a group carry different ratios (product
    overrides), the highest applies. Adds `_population` and `_sampled` (n and the sample size).
    """

    def transform(rows: DataFrame) -> DataFrame:
        group_window = Window.partitionBy(*group)
        ordered = group_window.orderBy(F.sha2(F.concat_ws("|", "loan_id", "obligation_key"), 256), "loan_id")
        share = F.least(F.greatest(ratio, F.lit(0.0)), F.lit(1.0)).cast("decimal(9,6)")
        return (
            rows.withColumn("_population", F.count(F.lit(1)).over(group_window))
            .withColumn("_share", F.max(share).over(group_window))
            .withColumn("_sampled", F.ceil(F.col("_share") * F.col("_population")).cast("int"))
            .withColumn("_rank", F.row_number().over(ordered))
            .where(F.col("_rank") <= F.col("_sampled"))
            .drop("_share", "_rank")
        )

    return transform


def _loan_columns() -> list[Column]:
    """The loan-level columns of an obligation row (task columns come from the struct)."""
    return [
        F.col("loan_id"),
        F.lit(None).cast("string").alias("channel_id"),
        F.col("borrower_id"),
        F.col("product_code"),
        F.col("branch_id"),
        _p("done_retention_months").alias("_retention_months"),
        _p("horizon_months").alias("_horizon_months"),
    ]


def _rows(frame: DataFrame, items: Column, *extra: Column) -> DataFrame:
    """Explode an array of obligation structs into obligation rows (OBLIGATION_COLUMNS + extra)."""
    exploded = frame.select(*_loan_columns(), *extra, F.explode(items).alias("_o"))
    return exploded.select(*[c for c in exploded.columns if c != "_o"], "_o.*")


# --------------------------------------------------------------------------------------------
# Loan facts the rules read


def signals_in_force(as_of: dt.date, signals: DataFrame, loans: DataFrame) -> DataFrame:
    """Signals in force on the date, one row per (signal, loan): a signal without a loan id applies
    to every loan of the borrower. Columns: loan_id, signal_id, signal_type, severity, signal_date."""
    day = F.lit(as_of)
    live = signals.where(F.col("cleared_date").isNull() | (F.col("cleared_date") > day))
    return raised_signals(as_of, live, loans).drop("cleared_date")


def raised_signals(as_of: dt.date, signals: DataFrame, loans: DataFrame) -> DataFrame:
    """Signals raised on or before the date (cleared or not), one row per (signal, loan)."""
    raised = signals.where(F.col("signal_date") <= F.lit(as_of)).select(
        "signal_id", "loan_id", "borrower_id", "signal_type", "severity", "signal_date", "cleared_date"
    )
    keys = loans.select("loan_id", "borrower_id")
    # Two equi-joins rather than one OR-join, which Spark could only run as a nested loop.
    by_loan = keys.join(raised.where(F.col("loan_id").isNotNull()).drop("borrower_id"), "loan_id")
    by_borrower = keys.join(raised.where(F.col("loan_id").isNull()).drop("loan_id"), "borrower_id")
    return by_loan.unionByName(by_borrower).drop("borrower_id")


def new_loan_npl_rates(as_of: dt.date, contracts: DataFrame, snapshot: DataFrame) -> DataFrame:
    """New-loan NPL rate per (managing branch, product) and per product, bank-wide.

    Loans disbursed in the lookback (default 36 months) up to the date: the share of their contract
    principal in loans that are non-performing today (snapshot) or were written off by the date.
    Input: contracts with the parameters. Columns: branch_id, product_code, npl_rate_branch,
    npl_rate_product.
    """
    day = F.lit(as_of)
    npl_today = snapshot.select("loan_id", F.col("is_npl").alias("_npl_today"))
    written_off = (F.col("status") == "WRITTEN_OFF") & (F.col("closed_date") <= day)
    npl = F.coalesce(F.col("_npl_today"), F.lit(False)) | F.coalesce(written_off, F.lit(False))
    by_branch = (
        contracts.where(F.col("disbursement_date") > F.add_months(day, -_p("npl_rate_lookback_months")))
        .join(npl_today, "loan_id", "left")
        .groupBy("branch_id", "product_code")
        .agg(
            F.sum(F.when(npl, F.col("principal")).otherwise(F.lit(0).cast("decimal(18,2)"))).alias("_npl"),
            F.sum("principal").alias("_all"),
        )
    )
    product = Window.partitionBy("product_code")
    return by_branch.select(
        "branch_id",
        "product_code",
        F.try_divide(F.col("_npl"), F.col("_all")).alias("npl_rate_branch"),
        F.try_divide(F.sum("_npl").over(product), F.sum("_all").over(product)).alias("npl_rate_product"),
    )


def with_loan_facts(
    as_of: dt.date,
    signals: DataFrame,
    products: DataFrame,
    npl_rates: DataFrame,
    guarantors: DataFrame,
    instalment_methods: Sequence[str],
    exit_signal_types: Sequence[str],
) -> Transform:
    """Add what the per-loan rules read, to loans carrying the parameters:

    `_instalment` (repaid in instalments); `_litigation_exempt` (an NPL with a LITIGATION signal in
    force and no MATERIAL_CHANGE signal raised on or after it, art. 45); `_listed_since` and
    `_listed_for` (on the risk-exit list: a RISK_EXIT_LIST signal, or a MAJOR signal of a configured
    type, in force); `_low_risk` (low-credit-risk product); `_npl_rate` (the product's new-loan NPL
    rate, per managing branch or bank-wide as configured); `_guarantors` (how many).
    """

    def transform(loans: DataFrame) -> DataFrame:
        kind = F.col("signal_type")
        listing = (kind == RISK_EXIT_LIST) | (kind.isin(*exit_signal_types) & (F.col("severity") == MAJOR))
        signal_facts = (
            signals_in_force(as_of, signals, loans)
            .groupBy("loan_id")
            .agg(
                F.max(F.when(kind == LITIGATION, F.col("signal_date"))).alias("_litigation_date"),
                F.max(F.when(kind == MATERIAL_CHANGE, F.col("signal_date"))).alias("_change_date"),
                F.min(F.when(listing, F.col("signal_date"))).alias("_listed_since"),
                F.array_join(F.array_sort(F.collect_set(F.when(listing, kind))), ", ").alias("_listed_for"),
            )
        )
        low_risk = products.select("product_code", F.coalesce(F.col("low_risk"), F.lit(False)).alias("_low_risk"))
        counts = guarantors.groupBy("loan_id").agg(F.count(F.lit(1)).alias("_guarantors"))
        exempt = (
            F.col("is_npl")
            & F.col("_litigation_date").isNotNull()
            & (F.col("_change_date").isNull() | (F.col("_change_date") < F.col("_litigation_date")))
        )
        rate = F.when(_p("npl_rate_by_branch"), F.col("npl_rate_branch")).otherwise(F.col("npl_rate_product"))
        return (
            loans.join(signal_facts, "loan_id", "left")
            .join(F.broadcast(low_risk), "product_code", "left")
            .join(F.broadcast(npl_rates), ["branch_id", "product_code"], "left")
            .join(counts, "loan_id", "left")
            .withColumns(
                {
                    "_instalment": F.col("repayment_method").isin(*instalment_methods),
                    "_litigation_exempt": F.coalesce(exempt, F.lit(False)),
                    "_low_risk": F.coalesce(F.col("_low_risk"), F.lit(False)),
                    "_npl_rate": rate,
                    "_guarantors": F.coalesce(F.col("_guarantors"), F.lit(0)),
                }
            )
            .drop("_litigation_date", "_change_date", "npl_rate_branch", "npl_rate_product")
        )

    return transform


# --------------------------------------------------------------------------------------------
# Rules on the loans of the book: each returns an array of obligation structs per loan


def first_callback() -> Column:
    """FIRST_CALLBACK: every loan, N calendar days after disbursement (fewer for autonomous payment)."""
    autonomous = F.col("payment_mode") == AUTONOMOUS
    days = F.when(autonomous, _p("callback_days_autonomous")).otherwise(_p("callback_days"))
    reason = F.format_string(
        "First call-back %d days after disbursement on %s (%s payment)",
        days,
        _day(F.col("disbursement_date")),
        F.when(autonomous, F.lit("autonomous")).otherwise(F.lit("entrusted")),
    )
    item = obligation(
        FIRST_CALLBACK,
        F.date_format("disbursement_date", "yyyy-MM-dd"),
        reason,
        F.col("disbursement_date"),
        F.date_add("disbursement_date", days),
    )
    return F.array(item)


def purpose_checks(as_of: dt.date) -> Column:
    """PURPOSE_CHECK: autonomous-payment loans, loan-purpose check every N months from the period
    after disbursement (sampled afterwards when the configured share is below 1)."""
    applies = (F.col("payment_mode") == AUTONOMOUS) & ~F.col("_litigation_exempt")
    months = F.when(applies, _p("purpose_check_months")).otherwise(F.lit(0))
    return periodic(
        PURPOSE_CHECK,
        F.col("disbursement_date"),
        months,
        as_of,
        lambda start: F.format_string(
            "Autonomous payment: loan-purpose check (vouchers, account analysis) for the %d months from %s",
            _p("purpose_check_months"),
            _day(start),
        ),
    )


def frequency_checks(as_of: dt.date) -> Column:
    """Art. 45 fixed frequencies, for loans not repaid in instalments and not NPLs in litigation:
    LOW_RISK_CHECK for low-credit-risk products (frequency set per tier-1 branch, collateral first);
    otherwise PERIODIC_CHECK when the product's new-loan NPL rate exceeds the ratio."""
    eligible = ~F.col("_instalment") & ~F.col("_litigation_exempt")
    low_risk = eligible & F.col("_low_risk")
    high_npl = eligible & ~F.col("_low_risk") & (F.col("_npl_rate") > _p("high_npl_ratio").cast("decimal(9,6)"))
    low = periodic(
        LOW_RISK_CHECK,
        F.col("disbursement_date"),
        F.when(low_risk, _p("low_risk_check_months")).otherwise(F.lit(0)),
        as_of,
        lambda _start: F.format_string(
            "Low-credit-risk product %s: check every %d months, collateral first (%s)",
            F.col("product_code"),
            _p("low_risk_check_months"),
            F.col("collateral_type"),
        ),
    )
    high = periodic(
        PERIODIC_CHECK,
        F.col("disbursement_date"),
        F.when(F.coalesce(high_npl, F.lit(False)), _p("high_npl_check_months")).otherwise(F.lit(0)),
        as_of,
        lambda _start: F.format_string(
            "Product %s: new-loan NPL rate %.2f%% over %d months above %.2f%%: check every %d months",
            F.col("product_code"),
            (F.col("_npl_rate") * 100).cast("double"),
            _p("npl_rate_lookback_months"),
            _p("high_npl_ratio") * 100,
            _p("high_npl_check_months"),
        ),
    )
    return F.concat(low, high)


def risk_exit_visits(as_of: dt.date) -> Column:
    """RISK_EXIT_VISIT: clients on the risk-exit list, an on-site visit every N months from the month
    of listing (not for NPLs in litigation)."""
    listed = F.col("_listed_since").isNotNull() & ~F.col("_litigation_exempt")
    return periodic(
        RISK_EXIT_VISIT,
        F.col("_listed_since"),
        F.when(listed, _p("risk_exit_visit_months")).otherwise(F.lit(0)),
        as_of,
        lambda _start: F.format_string(
            "On the risk-exit list since %s (%s): on-site visit every %d month(s)",
            _day(F.col("_listed_since")),
            F.col("_listed_for"),
            _p("risk_exit_visit_months"),
        ),
        include_anchor_period=True,
    )


def maturity_notice(methods: Sequence[str]) -> Column:
    """MATURITY_NOTICE: loans repaying principal at maturity: notify the borrower and guarantors N
    business days before maturity; listed from M calendar days before its due date."""
    reason = F.format_string(
        "Matures on %s: notify the borrower and %d guarantor(s) %d business days before",
        _day(F.col("maturity_date")),
        F.col("_guarantors"),
        _p("maturity_notice_business_days"),
    )
    item = obligation(
        MATURITY_NOTICE,
        F.date_format("maturity_date", "yyyy-MM-dd"),
        reason,
        None,
        F.col("maturity_date"),
        rule=F.lit(BUSINESS_DAYS_BEFORE),
        count=_p("maturity_notice_business_days"),
        open_days=_p("maturity_notice_open_days"),
    )
    return only_if(F.col("repayment_method").isin(*methods), item)


def loan_obligations(as_of: dt.date, maturity_methods: Sequence[str]) -> Transform:
    """Every per-loan rule in one pass over the book (loans with parameters and `with_loan_facts`),
    then the configured share of purpose checks per customer manager and period."""

    def transform(book: DataFrame) -> DataFrame:
        items = F.concat(
            first_callback(),
            purpose_checks(as_of),
            frequency_checks(as_of),
            risk_exit_visits(as_of),
            maturity_notice(maturity_methods),
        )
        rows = _rows(book, items, _p("purpose_check_ratio").alias("_purpose_ratio"))
        purpose = F.col("task_type") == PURPOSE_CHECK
        # Sampling only where a share below 1 is configured (the window sorts what it sees).
        to_sample = purpose & (F.col("_purpose_ratio") < 1.0)
        sampled = rows.where(to_sample).transform(sample(["officer_id", "obligation_key"], F.col("_purpose_ratio")))
        return rows.where(~to_sample).unionByName(sampled.drop("_population", "_sampled")).drop("_purpose_ratio")

    return transform


# --------------------------------------------------------------------------------------------
# Rules on signals, contracts and channels


def risk_managers(officers: DataFrame) -> Transform:
    """Add `_risk_manager`: an active risk manager of the deepest branch on the loan's branch path
    that has one (the lowest staff id when several)."""

    def transform(loans: DataFrame) -> DataFrame:
        managers = (
            officers.where((F.col("role") == RISK_MANAGER) & F.col("active"))
            .groupBy(F.col("branch_id").alias("_rm_branch"))
            .agg(F.min("officer_id").alias("_rm"))
        )
        path = loans.select("loan_id", F.posexplode("branch_path").alias("_depth", "_rm_branch"))
        nearest = (
            path.join(F.broadcast(managers), "_rm_branch")
            .groupBy("loan_id")
            .agg(F.max_by("_rm", "_depth").alias("_risk_manager"))
        )
        return loans.join(nearest, "loan_id", "left")

    return transform


def signal_verifications(as_of: dt.date, signals: DataFrame, officers: DataFrame) -> Transform:
    """SIGNAL_VERIFICATION: each MAJOR signal, on-site verification by the risk manager within N
    days of the signal. Once the signal is cleared, an undone verification lapses."""

    def transform(book: DataFrame) -> DataFrame:
        major = raised_signals(as_of, signals.where(F.col("severity") == MAJOR), book)
        cleared = F.coalesce(F.col("cleared_date") <= F.lit(as_of), F.lit(False))
        reason = F.format_string(
            "Major risk signal %s (%s) raised %s: on-site verification by the risk manager within %d days",
            F.col("signal_id"),
            F.col("signal_type"),
            _day(F.col("signal_date")),
            _p("signal_verification_days"),
        )
        item = obligation(
            SIGNAL_VERIFICATION,
            F.col("signal_id"),
            reason,
            F.col("signal_date"),
            F.date_add("signal_date", _p("signal_verification_days")),
            owner_role=RISK_MANAGER,
            officer=F.col("_risk_manager"),
            drop_if_open=cleared,
        )
        loans = book.join(major, "loan_id").transform(risk_managers(officers))
        return _rows(loans, F.array(item))

    return transform


def monthly_samples(as_of: dt.date) -> Transform:
    """MONTHLY_SAMPLE: per customer manager, ceil(ratio x last month's new loans), on-site, ledger
    due on the configured day of the month (moved to a business day).

    Input: every loan contract (settled ones too, so that the sample of a month never changes).
    """

    def transform(contracts: DataFrame) -> DataFrame:
        month = F.col("_sample_month")
        day_of_month = F.least(_p("sample_due_day"), F.dayofmonth(F.last_day(month)))
        due = F.make_date(F.year(month), F.month(month), day_of_month)
        reason = F.format_string(
            "Monthly on-site sample for %s: %d of the customer manager's %d new loans of %s (at least %.0f%%)",
            F.date_format(month, "yyyy-MM"),
            F.col("_sampled"),
            F.col("_population"),
            F.date_format(F.add_months(month, -1), "yyyy-MM"),
            _p("sample_ratio") * 100,
        )
        item = obligation(
            MONTHLY_SAMPLE,
            F.date_format(month, "yyyy-MM"),
            reason,
            month,
            due,
            rule=_p("holiday_roll"),
        )
        candidates = (
            contracts.withColumn("_sample_month", F.add_months(F.trunc("disbursement_date", "month"), 1))
            .where(month <= F.lit(as_of))
            .where(month >= _horizon_start(as_of, _p("horizon_months")))
            .withColumn("obligation_key", F.date_format(month, "yyyy-MM"))
        )
        chosen = candidates.transform(sample(["officer_id", "obligation_key"], _p("sample_ratio")))
        return _rows(chosen.drop("obligation_key"), F.array(item))

    return transform


def with_collateral(collateral: DataFrame, released_types: Sequence[str]) -> Transform:
    """Add `_collateral_count` and `_release_required` (secured by a releasable collateral type,
    by the contract or by a collateral record)."""

    def transform(contracts: DataFrame) -> DataFrame:
        items = collateral.groupBy("loan_id").agg(
            F.count(F.lit(1)).alias("_collateral_count"),
            F.max(F.col("collateral_type").isin(*released_types)).alias("_releasable_item"),
        )
        return (
            contracts.join(items, "loan_id", "left")
            .withColumn("_collateral_count", F.coalesce(F.col("_collateral_count"), F.lit(0)))
            .withColumn(
                "_release_required",
                F.col("collateral_type").isin(*released_types) | F.coalesce(F.col("_releasable_item"), F.lit(False)),
            )
            .drop("_releasable_item")
        )

    return transform


def collateral_releases(as_of: dt.date) -> Transform:
    """COLLATERAL_RELEASE: secured loans repaid in full: release the collateral within N days."""

    def transform(contracts: DataFrame) -> DataFrame:
        reason = F.format_string(
            "Repaid in full on %s: release the collateral (抵押權證出庫, 注銷抵押登記) within %d days "
            "(contract security %s, %d collateral item(s) on file)",
            _day(F.col("closed_date")),
            _p("collateral_release_days"),
            F.col("collateral_type"),
            F.col("_collateral_count"),
        )
        item = obligation(
            COLLATERAL_RELEASE,
            F.date_format("closed_date", "yyyy-MM-dd"),
            reason,
            F.col("closed_date"),
            F.date_add("closed_date", _p("collateral_release_days")),
        )
        settled = contracts.where(
            (F.col("status") == "SETTLED") & (F.col("closed_date") <= F.lit(as_of)) & F.col("_release_required")
        )
        return _rows(settled, F.array(item))

    return transform


def channel_params(params: DataFrame) -> DataFrame:
    """The settings of channel checks per tier-1 branch (a channel has no product): the shortest
    positive check period, the longest horizon and retention among the branch's product rows."""
    months = _p("channel_check_months")
    return params.groupBy(F.col(TIER1).alias("_ch_tier1")).agg(
        F.coalesce(F.min(F.when(months > 0, months)), F.lit(0)).alias(
            param_name("inspections", "channel_check_months")
        ),
        F.max(_p("horizon_months")).alias(param_name("inspections", "horizon_months")),
        F.max(_p("done_retention_months")).alias(param_name("inspections", "done_retention_months")),
        F.min(_p("holiday_roll")).alias(param_name("inspections", "holiday_roll")),
    )


def channel_checks(as_of: dt.date, params: DataFrame, config: InspectionsConfig) -> Transform:
    """CHANNEL_CHECK: every active cooperation channel, an on-site check each period (quarterly),
    from the period after admission, owned by its channel manager. Input: channels with their
    branch hierarchy. Settings follow the channel's tier-1 branch (`channel_params`), else the base."""

    def setting(name: str) -> Column:
        return F.coalesce(_p(name), F.lit(getattr(config, name)))

    def transform(channels: DataFrame) -> DataFrame:
        settings = channel_params(params)
        joined = channels.join(F.broadcast(settings), channels[TIER1].eqNullSafe(settings["_ch_tier1"]), "left").drop(
            "_ch_tier1"
        )
        months = setting("channel_check_months")
        items = periodic(
            CHANNEL_CHECK,
            F.col("onboarded_date"),
            months,
            as_of,
            lambda start: F.format_string(
                "Cooperation channel %s: on-site check every %d months, from %s",
                F.col("channel_id"),
                months,
                _day(start),
            ),
            horizon_months=setting("horizon_months"),
            roll=setting("holiday_roll"),
            owner_role=CHANNEL_MANAGER,
            officer=F.col("manager_officer_id"),
        )
        exploded = joined.where(F.col("status") == "ACTIVE").select(
            F.lit(None).cast("string").alias("loan_id"),
            F.col("channel_id"),
            F.lit(None).cast("string").alias("borrower_id"),
            F.lit(None).cast("string").alias("product_code"),
            F.col("branch_id"),
            setting("done_retention_months").alias("_retention_months"),
            setting("horizon_months").alias("_horizon_months"),
            F.explode(items).alias("_o"),
        )
        return exploded.select(*[c for c in exploded.columns if c != "_o"], "_o.*")

    return transform


# --------------------------------------------------------------------------------------------
# Reconciliation, status, retention


def _subject(task_type: Column, loan_id: Column, channel_id: Column) -> Column:
    """What a task is about: the channel for channel checks, else the loan."""
    return F.when(task_type == F.lit(CHANNEL_CHECK), channel_id).otherwise(loan_id)


def task_id() -> Column:
    """SHA-256 of task_type|subject|obligation_key: the same obligation has the same id every run."""
    subject = _subject(F.col("task_type"), F.col("loan_id"), F.col("channel_id"))
    return F.sha2(F.concat_ws("|", F.col("task_type"), subject, F.col("obligation_key")), 256)


def within_horizon(as_of: dt.date) -> Transform:
    """Obligations that have begun (window started) and are not due before the horizon start."""

    def transform(obligations: DataFrame) -> DataFrame:
        return obligations.where(
            (F.col("window_start") <= F.lit(as_of))
            & (F.col("due_date") >= _horizon_start(as_of, F.col("_horizon_months")))
        )

    return transform


def reconcile(as_of: dt.date, completions: DataFrame, task_types: Sequence[str] = TASK_TYPES) -> Transform:
    """Add `task_id` (`task_id()`), then `done_date` and `inspection_id` from the completed
    inspections recorded by the date.

    A completion closes a task when it names the task_id, or when it has the task's type and
    subject (loan, or channel for channel checks) and its date is on or after the task's
    window_start. The earliest matching completion wins. Completions dated after the business
    date are not seen (a rerun of an earlier date gives what that night gave). `task_types` are
    the types the obligations can have: completions of other types can close them by id only.
    """

    def transform(obligations: DataFrame) -> DataFrame:
        done = completions.where(F.col("completed_date") <= F.lit(as_of))
        record = F.struct(F.col("completed_date").alias("d"), F.col("inspection_id").alias("i"))
        subject = _subject(F.col("task_type"), F.col("loan_id"), F.col("channel_id"))
        # Each task and each completion of its type and subject in one window, the latest date
        # first and on one date the completions before the task (and the lowest inspection_id
        # last): the last completion a task's row has seen is the earliest on or after its window
        # start. The task rides as one struct, so a completion row carries no empty task columns;
        # its id is computed after the sort, which it would widen by 64 characters a row.
        tasks = obligations.select(
            "task_type",
            subject.alias("_subject"),
            F.col("window_start").alias("_on"),
            F.lit(None).cast(done.select(record).schema[0].dataType).alias("_record"),
            F.struct(*obligations.columns).alias("_task"),
        )
        events = done.select(
            "task_type",
            subject.alias("_subject"),
            F.col("completed_date").alias("_on"),
            record.alias("_record"),
            F.lit(None).cast(tasks.schema["_task"].dataType).alias("_task"),
        ).where(F.col("_subject").isNotNull() & F.col("task_type").isin(*task_types))
        seen = Window.partitionBy("task_type", "_subject").orderBy(
            F.col("_on").desc(), F.col("_task").isNotNull(), F.col("_record").getField("i").desc()
        )
        first_in_window = F.last("_record", ignorenulls=True).over(
            seen.rowsBetween(Window.unboundedPreceding, Window.currentRow)
        )
        by_id = done.where(F.col("task_id").isNotNull()).groupBy("task_id").agg(F.min(record).alias("_by_id"))
        closing = F.least(F.col("_by_id"), F.col("_first"))
        return (
            tasks.unionByName(events)
            .withColumn("_first", first_in_window)
            .where(F.col("_task").isNotNull())
            .select("_task.*", "_first")
            .withColumn("task_id", task_id())
            .join(by_id, "task_id", "left")
            .select(
                *obligations.columns,
                "task_id",
                closing.getField("d").alias("done_date"),
                closing.getField("i").alias("inspection_id"),
            )
        )

    return transform


def with_status(as_of: dt.date, priorities: Mapping[str, int]) -> Transform:
    """status (DONE, else OVERDUE after the due date, else OPEN), days_overdue and priority (an
    overdue task moves up one level)."""

    def transform(tasks: DataFrame) -> DataFrame:
        day = F.lit(as_of)
        merged = {**DEFAULT_PRIORITIES, **priorities}
        table = F.create_map(*[F.lit(x) for kind in TASK_TYPES for x in (kind, merged[kind])])
        base = F.coalesce(F.try_element_at(table, F.col("task_type")), F.lit(3))
        status = (
            F.when(F.col("done_date").isNotNull(), F.lit(DONE))
            .when(day > F.col("due_date"), F.lit(OVERDUE))
            .otherwise(F.lit(OPEN))
        )
        late = (
            F.when(F.col("status") == DONE, F.greatest(F.datediff("done_date", "due_date"), F.lit(0)))
            .when(F.col("status") == OVERDUE, F.datediff(day, "due_date"))
            .otherwise(F.lit(0))
        )
        return (
            tasks.withColumn("status", status)
            .withColumn("days_overdue", late.cast("int"))
            .withColumn(
                "priority",
                F.when(F.col("status") == OVERDUE, F.greatest(base - 1, F.lit(1))).otherwise(base).cast("int"),
            )
        )

    return transform


def retained(as_of: dt.date) -> Transform:
    """Tonight's list: open and overdue tasks, and DONE ones until the end of the N-th month after
    completion (and at least until their due date). An open task whose obligation lapsed is dropped."""

    def transform(tasks: DataFrame) -> DataFrame:
        keep_done_until = F.greatest(
            F.col("due_date"), F.last_day(F.add_months(F.col("done_date"), F.col("_retention_months")))
        )
        done = F.col("status") == DONE
        return tasks.where((done & (F.lit(as_of) <= keep_done_until)) | (~done & ~F.col("_drop_if_open")))

    return transform


# --------------------------------------------------------------------------------------------
# Settled-loans list


def settled_list(as_of: dt.date) -> Callable[[DataFrame, DataFrame], DataFrame]:
    """settled_loans rows: loans repaid in full in the current month up to the date, or in the
    months before it that the list keeps, with their collateral-release task (from `releases`)."""

    def build(contracts: DataFrame, releases: DataFrame) -> DataFrame:
        first_month = F.add_months(F.lit(as_of.replace(day=1)), -(_p("settled_list_months") - 1))
        release = releases.where(F.col("task_type") == COLLATERAL_RELEASE).select(
            "loan_id",
            F.col("task_id").alias("release_task_id"),
            F.col("due_date").alias("release_due_date"),
            F.col("status").alias("release_status"),
            F.col("done_date").alias("release_done_date"),
        )
        return (
            contracts.where(
                (F.col("status") == "SETTLED")
                & (F.col("closed_date") <= F.lit(as_of))
                & (F.col("closed_date") >= first_month)
            )
            .join(release, "loan_id", "left")
            .select(
                F.lit(as_of).alias("as_of_date"),
                F.trunc("closed_date", "month").alias("list_month"),
                "loan_id",
                "borrower_id",
                "product_code",
                "branch_id",
                "tier1_branch_id",
                "branch_path",
                "officer_id",
                "principal",
                "disbursement_date",
                "maturity_date",
                "closed_date",
                "collateral_type",
                F.col("_collateral_count").cast("int").alias("collateral_count"),
                F.col("_release_required").alias("release_required"),
                "release_task_id",
                "release_due_date",
                "release_status",
                "release_done_date",
            )
        )

    return build


# --------------------------------------------------------------------------------------------
# The stage


def _table(ctx: StageContext, table: Table) -> DataFrame:
    """An accepted landing table; an optional one that is absent reads as empty."""
    frame = ctx.tables.get(table.name)
    if frame is not None:
        return frame
    spark: SparkSession = ctx.spark
    return local_frame(spark, [], table.schema)


def _organisation(ctx: StageContext) -> DataFrame:
    """branch_id -> branch_path, tier1_branch_id, tier2_branch_id (small: one row per branch)."""
    branches = ctx.tables["branches"]
    return branches.select("branch_id").transform(with_branch_hierarchy(branches))


def _contracts(ctx: StageContext) -> DataFrame:
    """Every loan contract disbursed by the date (settled and written-off ones too), with its
    branch hierarchy, parameters and collateral facts."""
    cfg: InspectionsConfig = ctx.config.section("inspections")
    return (
        ctx.tables["loans"]
        .where(F.col("disbursement_date") <= F.lit(ctx.as_of))
        .join(F.broadcast(_organisation(ctx)), "branch_id", "left")
        .transform(with_params(ctx.params))
        .transform(with_collateral(_table(ctx, COLLATERAL), cfg.released_collateral_types))
    )


def _calendar(ctx: StageContext) -> DataFrame:
    return business_calendar(ctx.spark, ctx.config.holidays, ctx.as_of)


def _book(ctx: StageContext) -> DataFrame:
    """Today's loans on the book (snapshot columns the rules read) with the parameters."""
    return ctx.snapshot.select(*SNAPSHOT_COLUMNS).transform(with_params(ctx.params))


def _finish(
    as_of: dt.date,
    calendar: DataFrame,
    completions: DataFrame,
    priorities: Mapping[str, int],
    task_types: Sequence[str] = TASK_TYPES,
) -> Transform:
    """Obligation rows (of `task_types`) -> due dates, within the horizon, task_id, reconciled,
    with status."""

    def transform(rows: DataFrame) -> DataFrame:
        return (
            rows.select(*OBLIGATION_COLUMNS)
            .transform(with_due_dates(calendar))
            .transform(within_horizon(as_of))
            .transform(reconcile(as_of, completions, task_types))
            .transform(with_status(as_of, priorities))
        )

    return transform


def inspection_tasks(ctx: StageContext) -> DataFrame:
    """inspection_tasks for ctx.as_of: every rule's obligations, reconciled, with status, retained."""
    as_of = ctx.as_of
    cfg: InspectionsConfig = ctx.config.section("inspections")
    signals = _table(ctx, RISK_SIGNALS)
    contracts = _contracts(ctx)
    book = _book(ctx)
    facts = with_loan_facts(
        as_of,
        signals,
        _table(ctx, PRODUCTS),
        new_loan_npl_rates(as_of, contracts, ctx.snapshot),
        _table(ctx, GUARANTORS),
        cfg.instalment_methods,
        cfg.risk_exit_signal_types,
    )
    channels = _table(ctx, CHANNELS).join(F.broadcast(_organisation(ctx)), "branch_id", "left")
    parts = [
        book.transform(facts).transform(loan_obligations(as_of, cfg.maturity_notice_methods)),
        book.transform(signal_verifications(as_of, signals, _table(ctx, OFFICERS))),
        contracts.transform(monthly_samples(as_of)),
        contracts.transform(collateral_releases(as_of)),
        channels.transform(channel_checks(as_of, ctx.params, cfg)),
    ]
    rows = parts[0].select(*OBLIGATION_COLUMNS)
    for part in parts[1:]:
        rows = rows.unionByName(part.select(*OBLIGATION_COLUMNS))
    hierarchy = _organisation(ctx).select("branch_id", TIER1, "branch_path")
    return (
        rows.transform(_finish(as_of, _calendar(ctx), _table(ctx, COMPLETED_INSPECTIONS), cfg.priorities))
        .transform(retained(as_of))
        .join(F.broadcast(hierarchy), "branch_id", "left")
        .select(F.lit(as_of).alias("as_of_date"), *[c for c in INSPECTION_TASKS.names if c != "as_of_date"])
    )


def settled_loans(ctx: StageContext) -> DataFrame:
    """settled_loans for ctx.as_of, with each loan's collateral-release task (computed on its own,
    so that the list does not recompute every other rule)."""
    cfg: InspectionsConfig = ctx.config.section("inspections")
    contracts = _contracts(ctx)
    # Release tasks only: of a 10M book's 29.5M completions, 0.2M can meet them by subject.
    releases = contracts.transform(collateral_releases(ctx.as_of)).transform(
        _finish(ctx.as_of, _calendar(ctx), _table(ctx, COMPLETED_INSPECTIONS), cfg.priorities, (COLLATERAL_RELEASE,))
    )
    return settled_list(ctx.as_of)(contracts, releases)


def build_inspections(ctx: StageContext) -> dict[Table, DataFrame]:
    """The stage: inspection_tasks and settled_loans for ctx.as_of (docs/inspections.md)."""
    return {INSPECTION_TASKS: inspection_tasks(ctx), SETTLED_LOANS: settled_loans(ctx)}


def inspection_summary(tasks: DataFrame, settled: DataFrame) -> dict[str, int]:
    """Counts for the run ledger: tasks by status and by type, overdue by type, settled loans.

    Raises ValueError if a task_id appears twice (the stage's own contract).
    """
    rows = (
        tasks.groupBy("task_type", "status")
        .agg(F.count(F.lit(1)).alias("n"), F.countDistinct("task_id").alias("ids"))
        .collect()
    )
    total = sum(int(r["n"]) for r in rows)
    if total != sum(int(r["ids"]) for r in rows):
        raise ValueError("inspection_tasks: duplicate task_id")
    counts: dict[str, int] = {"tasks": total}
    for status in TASK_STATUSES:
        counts[f"tasks_{status.lower()}"] = sum(int(r["n"]) for r in rows if r["status"] == status)
    for kind in TASK_TYPES:
        counts[f"tasks_{kind.lower()}"] = sum(int(r["n"]) for r in rows if r["task_type"] == kind)
        counts[f"tasks_overdue_{kind.lower()}"] = sum(
            int(r["n"]) for r in rows if r["task_type"] == kind and r["status"] == OVERDUE
        )
    counts["settled_loans"] = settled.count()
    return counts
