"""Portfolio metrics for headquarters (DOMAIN.md section 5; formulas and decisions in docs/metrics.md).

Seven tables per business date, all pure functions of DataFrames and configuration values:
portfolio figures per group, regulatory migration rates (遷徙率), roll rates with the M1 conversion
rate, vintage curves, KPI breaches, the channel scorecard and the early-warning list.

Nothing here reads or writes a table or calls `date.today()`: the business date, today's snapshot,
the snapshots at earlier period ends and the landing tables come in as arguments (through the
`StageContext` in `build_metrics`), so a backfill of a date recomputes it from that date's and
earlier data only. Ratios go through `ratio`, which gives null, never an error, for a zero
denominator (Spark runs with ANSI mode on).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import reduce

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from jobs.config import AppConfig, ConfigError
from jobs.delinquency import cents, with_branch_hierarchy
from jobs.params import param, with_params
from jobs.sections.metrics import MetricsConfig
from jobs.spark import local_frame
from jobs.stages import StageContext, materialize
from schemas.base import Table
from schemas.lake import BUCKETS, LOAN_SNAPSHOT, NPL_CLASSES
from schemas.landing import RISK_CLASSES
from schemas.metrics import (
    BRANCH_GROUPINGS,
    CHANNEL_SCORECARD,
    EARLY_WARNINGS,
    EXIT_STATES,
    HQ_KEY,
    KPI_BREACHES,
    MIGRATION_RATES,
    NONE_KEY,
    NORMAL_LOANS,
    PORTFOLIO_METRICS,
    RATIO,
    ROLL_RATES,
    SCORE,
    VINTAGE,
    state_column,
)

Transform = Callable[[DataFrame], DataFrame]

MONEY = "decimal(18,2)"
SETTLED, WRITTEN_OFF, OFF_BOOK = EXIT_STATES

# loan_snapshot columns the stage reads (a hand-made snapshot needs only these).
SNAPSHOT_COLUMNS: tuple[str, ...] = (
    "as_of_date",
    "loan_id",
    "borrower_id",
    "branch_id",
    "tier1_branch_id",
    "tier2_branch_id",
    "branch_path",
    "product_code",
    "officer_id",
    "channel_id",
    "outstanding_principal",
    "overdue_principal",
    "dpd",
    "bucket",
    "max_dpd_ever",
    "first_payment_default",
    "risk_class",
    "is_npl",
    "previous_risk_class",
)
# Group dimensions shared by the grouped tables, in contract order.
GROUP_COLUMNS: tuple[str, ...] = (
    "grouping",
    "group_key",
    "group_label",
    "branch_id",
    "product_code",
    "tier1_branch_id",
    "branch_path",
)


# --------------------------------------------------------------------------------------------
# Small building blocks


def ratio(numerator: Column, denominator: Column) -> Column:
    """numerator / denominator as a RATIO (six decimals, half up); null when the denominator is 0 or null."""
    return F.try_divide(numerator, denominator).try_cast(RATIO)


def _zero() -> Column:
    return F.lit(0).cast(MONEY)


def _rank(value: Column, order: Sequence[str]) -> Column:
    """1-based position of the value in `order` (0 if absent, null if null)."""
    return F.array_position(F.array(*[F.lit(v) for v in order]), value).cast("int")


def _count_if(condition: Column) -> Column:
    return F.sum(F.when(condition, 1).otherwise(0)).cast("long")


def _sum_if(condition: Column, amount: Column) -> Column:
    return F.sum(F.when(condition, amount).otherwise(_zero()))


def _strings(array: Column) -> Column:
    """An array<string> without null elements (the contract's STRINGS), never null itself."""
    present = F.coalesce(array, F.array().cast("array<string>"))
    return F.transform(present, lambda x: F.coalesce(x, F.lit("")))


def _shape(frame: DataFrame, table: Table) -> DataFrame:
    """The table's columns, in order, with the contract's types."""
    columns = []
    for c in table.columns:
        value = F.col(c.name)
        if isinstance(c.dtype, T.ArrayType):
            value = _strings(value)
        columns.append(value.cast(c.dtype).alias(c.name))
    return frame.select(*columns)


def _union(frames: Iterable[DataFrame]) -> DataFrame | None:
    listed = list(frames)
    return reduce(DataFrame.unionByName, listed) if listed else None


def _ordered_union(*groups: Iterable[str]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for group in groups:
        for g in group:
            seen.setdefault(g, None)
    return tuple(seen)


# --------------------------------------------------------------------------------------------
# Periods


def period_end_before(day: dt.date, period_type: str) -> dt.date:
    """Last calendar day of the month, quarter or year before the one `day` falls in."""
    if period_type == "MONTH":
        first = day.replace(day=1)
    elif period_type == "QUARTER":
        first = dt.date(day.year, (day.month - 1) // 3 * 3 + 1, 1)
    elif period_type == "YEAR":
        first = dt.date(day.year, 1, 1)
    else:
        raise ValueError(f"unknown period type {period_type!r}")
    return first - dt.timedelta(days=1)


def is_period_end(day: dt.date, period_type: str) -> bool:
    """Whether `day` is the last calendar day of its month, quarter or year."""
    return period_end_before(day + dt.timedelta(days=1), period_type) == day


def latest_date_rows() -> Transform:
    """Keep the rows of the latest as_of_date in a multi-date frame (lazily: no Spark action)."""

    def transform(frame: DataFrame) -> DataFrame:
        latest = frame.agg(F.max("as_of_date").alias("_latest"))
        return frame.join(F.broadcast(latest), F.col("as_of_date") == F.col("_latest")).drop("_latest")

    return transform


# --------------------------------------------------------------------------------------------
# Groupings


def _group_struct(grouping: str) -> Column:
    """(grouping, group_key, branch_id, product_code, _path, _tier1) of a loan row for one grouping."""
    path = F.col("branch_path")
    root = F.slice(path, 1, 1)
    none, null = F.lit(NONE_KEY), F.lit(None).cast("string")

    def down_to(branch: str) -> Column:
        position = F.array_position(path, F.col(branch)).cast("int")
        return F.when(position > 0, F.slice(path, F.lit(1), position)).otherwise(root)

    spec: dict[str, tuple[Column, Column, Column, Column]] = {
        "HQ": (F.lit(HQ_KEY), F.element_at(path, 1), null, root),
        "TIER1_BRANCH": (
            F.coalesce(F.col("tier1_branch_id"), none),
            F.col("tier1_branch_id"),
            null,
            down_to("tier1_branch_id"),
        ),
        "TIER2_BRANCH": (
            F.coalesce(F.col("tier2_branch_id"), none),
            F.col("tier2_branch_id"),
            null,
            down_to("tier2_branch_id"),
        ),
        "BRANCH": (F.col("branch_id"), F.col("branch_id"), null, path),
        "PRODUCT": (F.col("product_code"), null, F.col("product_code"), path),
        "CHANNEL": (F.coalesce(F.col("channel_id"), none), null, null, path),
        "OFFICER": (F.col("officer_id"), null, null, path),
        "BRANCH_PRODUCT": (
            F.concat_ws("|", F.col("branch_id"), F.col("product_code")),
            F.col("branch_id"),
            F.col("product_code"),
            path,
        ),
    }
    if grouping not in spec:
        raise ValueError(f"unknown grouping {grouping!r}")
    key, branch, product, group_path = spec[grouping]
    return F.struct(
        F.lit(grouping).alias("grouping"),
        key.alias("group_key"),
        branch.alias("branch_id"),
        product.alias("product_code"),
        group_path.alias("_path"),
        F.col("tier1_branch_id").alias("_tier1"),
    )


def explode_groups(groupings: Sequence[str], *measures: Column) -> Transform:
    """One row per loan and grouping: the group columns plus the given measure columns."""
    structs = [_group_struct(g) for g in groupings]

    def transform(loans: DataFrame) -> DataFrame:
        exploded = loans.select(F.explode(F.array(*structs)).alias("_g"), *measures)
        return exploded.select("_g.*", *[c for c in exploded.columns if c != "_g"])

    return transform


def _common_prefix(paths: Column) -> Column:
    """Longest common prefix of an array of branch paths."""

    def step(acc: Column, path: Column) -> Column:
        same = F.zip_with(acc, path, lambda a, b: F.coalesce(a == b, F.lit(False)))
        first_difference = F.array_position(same, False).cast("int")
        keep = F.when(first_difference == 0, F.size(acc)).otherwise(first_difference - 1)
        return F.slice(acc, F.lit(1), keep)

    return F.aggregate(paths, F.element_at(paths, 1), step)


def _group_dimensions() -> list[Column]:
    """Aggregates giving the group's branch, product, tier-1 branch and branch path."""
    tier1 = F.col("_tier1")
    single_tier1 = (F.min(tier1) == F.max(tier1)) & (F.count(tier1) == F.count(F.lit(1)))
    return [
        F.max("branch_id").alias("branch_id"),
        F.max("product_code").alias("product_code"),
        F.when(single_tier1, F.min(tier1)).alias("tier1_branch_id"),
        _common_prefix(F.collect_set("_path")).alias("branch_path"),
    ]


def with_group_labels(branches: DataFrame, products: DataFrame, channels: DataFrame, officers: DataFrame) -> Transform:
    """Add group_label: the branch, product, channel or officer name of each group row."""

    def transform(rows: DataFrame) -> DataFrame:
        b = branches.select(F.col("branch_id").alias("_lb"), F.col("name").alias("_bname"))
        p = products.select(F.col("product_code").alias("_lp"), F.col("name").alias("_pname"))
        c = channels.select(F.col("channel_id").alias("_lc"), F.col("name").alias("_cname"))
        o = officers.select(F.col("officer_id").alias("_lo"), F.col("name").alias("_oname"))
        grouping = F.col("grouping")
        joined = (
            rows.join(F.broadcast(b), F.col("branch_id") == F.col("_lb"), "left")
            .join(F.broadcast(p), F.col("product_code") == F.col("_lp"), "left")
            .join(F.broadcast(c), (grouping == "CHANNEL") & (F.col("group_key") == F.col("_lc")), "left")
            .join(F.broadcast(o), (grouping == "OFFICER") & (F.col("group_key") == F.col("_lo")), "left")
        )
        label = (
            F.when(grouping == "BRANCH_PRODUCT", F.concat_ws(" / ", "_bname", "_pname"))
            .when(grouping.isin(*BRANCH_GROUPINGS), F.col("_bname"))
            .when(grouping == "PRODUCT", F.col("_pname"))
            .when(grouping == "CHANNEL", F.col("_cname"))
            .when(grouping == "OFFICER", F.col("_oname"))
        )
        return joined.select(*[F.col(c) for c in rows.columns if c != "group_label"], label.alias("group_label"))

    return transform


# --------------------------------------------------------------------------------------------
# portfolio_metrics


def portfolio_metrics(groupings: Sequence[str]) -> Transform:
    """Per group: counts, balances, overdue and NPL ratios, class and bucket mix (from loan_snapshot)."""

    def transform(snapshot: DataFrame) -> DataFrame:
        rows = snapshot.transform(
            explode_groups(
                groupings,
                F.col("as_of_date"),
                F.col("outstanding_principal").alias("_bal"),
                F.col("overdue_principal").alias("_odp"),
                (F.col("dpd") > 0).alias("_overdue"),
                F.col("is_npl").alias("_npl"),
                F.col("risk_class").alias("_class"),
                F.col("bucket").alias("_bucket"),
            )
        )
        bal = F.col("_bal")
        mix: list[Column] = []
        for name, states in (("_class", RISK_CLASSES), ("_bucket", BUCKETS)):
            for state in states:
                mix.append(_count_if(F.col(name) == state).alias(f"{state_column(state)}_count"))
                mix.append(_sum_if(F.col(name) == state, bal).alias(f"{state_column(state)}_balance"))
        grouped = rows.groupBy("as_of_date", "grouping", "group_key").agg(
            *_group_dimensions(),
            F.count(F.lit(1)).alias("loan_count"),
            F.sum(bal).alias("outstanding_balance"),
            _count_if(F.col("_overdue")).alias("overdue_count"),
            _sum_if(F.col("_overdue"), bal).alias("overdue_balance"),
            F.sum("_odp").alias("overdue_principal"),
            _count_if(F.col("_npl")).alias("npl_count"),
            _sum_if(F.col("_npl"), bal).alias("npl_balance"),
            *mix,
        )
        return grouped.withColumns(
            {
                "overdue_ratio": ratio(F.col("overdue_balance"), F.col("outstanding_balance")),
                "npl_ratio": ratio(F.col("npl_balance"), F.col("outstanding_balance")),
            }
        )

    return transform


# --------------------------------------------------------------------------------------------
# Transitions between a period-start snapshot and the business date


def loan_transitions(end: DataFrame, loans: DataFrame, as_of: dt.date) -> Transform:
    """Each loan of a period-start snapshot with its state on `as_of`.

    Columns: the start snapshot's group attributes, period_start_date, from_class, from_bucket,
    start_balance; on_book (in `end`, today's snapshot); to_class / to_bucket (the class or bucket on
    the date, or SETTLED / WRITTEN_OFF by the loans extract when closed on or before the date, else
    OFF_BOOK); end_balance (0 when off the book).
    """
    day = F.lit(as_of)

    def transform(start: DataFrame) -> DataFrame:
        s = start.select(
            "loan_id",
            F.col("as_of_date").alias("period_start_date"),
            "branch_id",
            "tier1_branch_id",
            "tier2_branch_id",
            "branch_path",
            "product_code",
            "channel_id",
            "officer_id",
            F.col("risk_class").alias("from_class"),
            F.col("bucket").alias("from_bucket"),
            F.col("outstanding_principal").alias("start_balance"),
        )
        e = end.select(
            "loan_id",
            F.col("risk_class").alias("_end_class"),
            F.col("bucket").alias("_end_bucket"),
            F.col("outstanding_principal").alias("_end_balance"),
        )
        closed = loans.select("loan_id", F.col("status").alias("_status"), F.col("closed_date").alias("_closed"))
        closed_by_date = F.col("_closed").isNotNull() & (F.col("_closed") <= day)
        exit_state = (
            F.when(closed_by_date & (F.col("_status") == SETTLED), F.lit(SETTLED))
            .when(closed_by_date & (F.col("_status") == WRITTEN_OFF), F.lit(WRITTEN_OFF))
            .otherwise(F.lit(OFF_BOOK))
        )
        on_book = F.col("_end_class").isNotNull()
        return (
            s.join(e, "loan_id", "left")
            .join(closed, "loan_id", "left")
            .select(
                *s.columns,
                on_book.alias("on_book"),
                F.when(on_book, F.col("_end_class")).otherwise(exit_state).alias("to_class"),
                F.when(on_book, F.col("_end_bucket")).otherwise(exit_state).alias("to_bucket"),
                F.when(on_book, F.col("_end_balance")).otherwise(_zero()).alias("end_balance"),
            )
        )

    return transform


def _transition_measures() -> list[Column]:
    return [
        F.col("period_start_date"),
        F.col("from_class"),
        F.col("from_bucket"),
        F.col("to_class"),
        F.col("to_bucket"),
        F.col("on_book"),
        F.col("start_balance"),
        F.col("end_balance"),
    ]


def migration_rates(
    as_of: dt.date, period_type: str, groupings: Sequence[str], numerator: str = "PERIOD_START"
) -> Transform:
    """Migration rates (遷徙率) and the class matrix per group, from `loan_transitions` rows.

    For start class C (NORMAL, SPECIAL_MENTION, SUBSTANDARD, DOUBTFUL; LOSS gets the matrix only):
        rate = moved_down / (start_balance - decrease)
        decrease = start balance of the loans that left the book
                   + sum over the loans still on it of max(start balance - end balance, 0)
        moved_down = start balance (or end balance, numerator="PERIOD_END") of the loans still on the
                     book whose end class is worse than C.
    NORMAL_LOANS (正常貸款遷徙率): the NORMAL and SPECIAL_MENTION loans together, moved_down = now NPL.
    """
    if numerator not in ("PERIOD_START", "PERIOD_END"):
        raise ValueError(f"migration numerator is PERIOD_START or PERIOD_END, got {numerator!r}")
    period_end = is_period_end(as_of, period_type)

    def transform(transitions: DataFrame) -> DataFrame:
        from_class = F.col("from_class")
        labels = F.when(
            from_class.isin("NORMAL", "SPECIAL_MENTION"), F.array(from_class, F.lit(NORMAL_LOANS))
        ).otherwise(F.array(from_class))
        rows = (
            transitions.withColumn("_labels", labels)
            .transform(explode_groups(groupings, *_transition_measures(), F.col("_labels")))
            .withColumn("_from", F.explode("_labels"))
        )
        on_book = F.col("on_book")
        worse = _rank(F.col("to_class"), RISK_CLASSES) > _rank(F.col("from_class"), RISK_CLASSES)
        into_npl = F.col("to_class").isin(*NPL_CLASSES)
        moved = on_book & F.when(F.col("_from") == NORMAL_LOANS, into_npl).otherwise(worse)
        start, end = F.col("start_balance"), F.col("end_balance")
        matrix: list[Column] = []
        for state in (*RISK_CLASSES, *EXIT_STATES):
            matrix.append(_count_if(F.col("to_class") == state).alias(f"to_{state_column(state)}_count"))
            matrix.append(_sum_if(F.col("to_class") == state, start).alias(f"to_{state_column(state)}_balance"))
        grouped = rows.groupBy("grouping", "group_key", "period_start_date", "_from").agg(
            *_group_dimensions(),
            F.count(F.lit(1)).alias("loan_count"),
            F.sum(start).alias("start_balance"),
            _count_if(~on_book).alias("exited_count"),
            _sum_if(~on_book, start).alias("exited_balance"),
            _sum_if(on_book, F.greatest(start - end, _zero())).alias("repaid_balance"),
            _count_if(moved).alias("moved_down_count"),
            _sum_if(moved, start).alias("moved_down_balance"),
            _sum_if(moved, end).alias("moved_down_end_balance"),
            *matrix,
        )
        decrease = F.col("exited_balance") + F.col("repaid_balance")
        moved_amount = F.col("moved_down_balance" if numerator == "PERIOD_START" else "moved_down_end_balance")
        denominator = F.col("start_balance") - decrease
        return grouped.withColumnsRenamed({"_from": "from_class"}).withColumns(
            {
                "as_of_date": F.lit(as_of),
                "period_type": F.lit(period_type),
                "is_period_end": F.lit(period_end),
                "decrease_balance": decrease,
                "denominator_balance": denominator,
                "migration_rate": F.when(F.col("from_class") != "LOSS", ratio(moved_amount, denominator)),
            }
        )

    return transform


def roll_rates(as_of: dt.date, groupings: Sequence[str]) -> Transform:
    """Bucket-to-state transitions per group from the previous month-end, with cure and roll-forward rates.

    cure = now M0 or settled; roll forward = now in a worse bucket. Balances are period-start
    balances, so each row's to_* balances add up to from_balance.
    """
    period_end = is_period_end(as_of, "MONTH")

    def transform(transitions: DataFrame) -> DataFrame:
        rows = transitions.transform(explode_groups(groupings, *_transition_measures()))
        start, to = F.col("start_balance"), F.col("to_bucket")
        cured = to.isin("M0", SETTLED)
        forward = F.col("on_book") & (_rank(to, BUCKETS) > _rank(F.col("from_bucket"), BUCKETS))
        matrix: list[Column] = []
        for state in (*BUCKETS, *EXIT_STATES):
            matrix.append(_count_if(to == state).alias(f"to_{state_column(state)}_count"))
            matrix.append(_sum_if(to == state, start).alias(f"to_{state_column(state)}_balance"))
        grouped = rows.groupBy("grouping", "group_key", "period_start_date", "from_bucket").agg(
            *_group_dimensions(),
            F.count(F.lit(1)).alias("from_count"),
            F.sum(start).alias("from_balance"),
            *matrix,
            _sum_if(cured, start).alias("cure_balance"),
            _sum_if(forward, start).alias("roll_forward_balance"),
        )
        return grouped.withColumns(
            {
                "as_of_date": F.lit(as_of),
                "is_period_end": F.lit(period_end),
                "cure_rate": ratio(F.col("cure_balance"), F.col("from_balance")),
                "roll_forward_rate": ratio(F.col("roll_forward_balance"), F.col("from_balance")),
            }
        )

    return transform


# --------------------------------------------------------------------------------------------
# Delinquency milestones (vintage, channel FPD, early warnings)


def delinquency_milestones(
    as_of: dt.date,
    schedule: DataFrame,
    repayments: DataFrame,
    fpd_days: int,
    levels: Mapping[str, int],
    never_reached: DataFrame | None = None,
) -> Transform:
    """Add, per loan, the first date its dpd reached each level and the first-payment-default date.

    The input is loans (closed ones too) with loan_id, closed_date and the resolved
    `delinquency__tolerance_amount` column. Added: one date column per `levels` entry (name -> days;
    null if never reached), first_due_date and fpd_date (first day the first instalment was more than
    `fpd_days` late). Only days on or before `as_of` and before closed_date count.

    Same rules as jobs.delinquency: an instalment is uncovered on day D when the net amount paid by D
    (greatest(0, running total)) is below its cumulative due less the tolerance. dpd(D) >= X exactly
    when some instalment due on or before D - X is uncovered, i.e. when the paid amount is below the
    largest threshold among those instalments. That can start to hold only on a day such a threshold
    enters (due date + X) or on a payment day (a reversal), so those days are the only candidates:
    one window per loan over them, set-based.

    `never_reached` (loan_id) names loans known to have reached no level and no FPD by `as_of`:
    their milestone dates are null without the windows over their schedule and payments.
    """
    day = F.lit(as_of)

    def transform(loans: DataFrame) -> DataFrame:
        candidates = loans if never_reached is None else loans.join(never_reached, "loan_id", "left_anti")
        keyed = candidates.select(
            "loan_id",
            F.col("closed_date").alias("_closed"),
            cents(param("delinquency", "tolerance_amount").cast(MONEY)).alias("_tol"),
        )
        # In whole cents, as jobs.delinquency: long sums and sorts, not decimal(28,2) ones.
        by_no = Window.partitionBy("loan_id").orderBy("installment_no")
        cum_due = F.sum(cents(F.col("principal_due")) + cents(F.col("interest_due"))).over(
            by_no.rowsBetween(Window.unboundedPreceding, 0)
        )
        instalments = schedule.join(keyed, "loan_id").select(
            "loan_id",
            "due_date",
            "_closed",
            (cum_due - F.col("_tol")).alias("_theta"),
            (F.col("installment_no") == F.min("installment_no").over(Window.partitionBy("loan_id"))).alias("_first"),
        )
        null_amount = F.lit(None).cast("long")

        def threshold(kind: str, days: int) -> Column:
            return F.struct(F.date_add(F.col("due_date"), days).alias("_day"), F.lit(kind).alias("_kind"))

        # Every level's threshold day of an instalment (and the first instalment's FPD day) from one
        # pass over the schedule: a union of one select per level planned the schedule's scan, join
        # and windows once per level (a 10M-loan book's 136M instalments read three times over).
        thresholds = [threshold(name, days) for name, days in levels.items()]
        thresholds.append(F.when(F.col("_first"), threshold("fpd_date", fpd_days + 1)))
        events = [
            instalments.select("loan_id", "_closed", "_theta", F.explode(F.array(*thresholds)).alias("_event"))
            .where(F.col("_event").isNotNull())
            .select(
                "loan_id",
                "_closed",
                F.col("_event._day").alias("_day"),
                F.col("_event._kind").alias("_kind"),
                "_theta",
                null_amount.alias("_paid"),
            )
        ]
        # Each payment as it came (no total per day first): the window below sums them up to each day.
        payments = (
            repayments.join(keyed.select("loan_id", "_closed"), "loan_id")
            .where(F.col("value_date") <= day)
            .select(
                "loan_id",
                "_closed",
                F.col("value_date").alias("_day"),
                F.lit("_pay").alias("_kind"),
                null_amount.alias("_theta"),
                cents(F.col("amount")).alias("_paid"),
            )
        )
        events.append(payments)
        merged = reduce(DataFrame.unionByName, events).where(
            (F.col("_day") <= day) & (F.col("_closed").isNull() | (F.col("_day") < F.col("_closed")))
        )
        upto = Window.partitionBy("loan_id").orderBy("_day").rangeBetween(Window.unboundedPreceding, 0)
        # The net amount paid by the day: a range frame takes in every payment of the day itself.
        paid = F.greatest(F.coalesce(F.sum("_paid").over(upto), F.lit(0)), F.lit(0))
        kinds = [*levels, "fpd_date"]
        scored = merged.select(
            "loan_id",
            "_day",
            *[
                (paid < F.max(F.when(F.col("_kind") == kind, F.col("_theta"))).over(upto)).alias(f"_hit{i}")
                for i, kind in enumerate(kinds)
            ],
        )
        hits = [F.col(f"_hit{i}") for i in range(len(kinds))]
        # A day on which no level was hit cannot lower a minimum, so the aggregate per loan hashes
        # only the others (a loan with none gets nulls from the left join below, as before).
        firsts = (
            scored.where(reduce(Column.__or__, hits))
            .groupBy("loan_id")
            .agg(*[F.min(F.when(hit, F.col("_day"))).alias(kind) for hit, kind in zip(hits, kinds, strict=True)])
        )
        # Every loan's first due date, the spared ones' too: an aggregate, not the windows above.
        first_due = (
            schedule.join(loans.select("loan_id"), "loan_id", "left_semi")
            .groupBy("loan_id")
            .agg(F.min(F.struct("installment_no", "due_date")).alias("_first"))
            .select("loan_id", F.col("_first.due_date").alias("first_due_date"))
        )
        return loans.join(first_due, "loan_id", "left").join(firsts, "loan_id", "left")

    return transform


def loan_history(ctx: StageContext, levels: Mapping[str, int], never_reached: DataFrame | None = None) -> DataFrame:
    """Loans disbursed on or before the date (closed ones too) with their delinquency milestones
    (`delinquency_milestones`, which `never_reached` spares the windows)."""
    tables = ctx.tables
    return (
        tables["loans"]
        .where(F.col("disbursement_date") <= F.lit(ctx.as_of))
        .transform(with_branch_hierarchy(tables["branches"]))
        .transform(with_params(ctx.params))
        .select(
            "loan_id",
            "product_code",
            "channel_id",
            "disbursement_date",
            "principal",
            "closed_date",
            param("delinquency", "tolerance_amount"),
        )
        .transform(
            delinquency_milestones(
                ctx.as_of,
                tables["schedule"],
                tables["repayments"],
                ctx.config.delinquency.fpd_days,
                levels,
                never_reached,
            )
        )
    )


# --------------------------------------------------------------------------------------------
# vintage


def vintage_curves(as_of: dt.date, max_mob: int, products: DataFrame) -> Transform:
    """Per product, disbursement month and MOB: share of the disbursed amount ever 30+ / 90+ by that MOB.

    Input: `delinquency_milestones` rows with product_code, disbursement_date, principal, dpd30_date
    and dpd90_date. A loan counts at MOB k when floor(months_between(milestone, disbursement)) <= k
    (the loan_snapshot.mob of the day it first reached the level). MOBs run from 0 to the cohort's
    oldest loan's current MOB (at most max_mob).
    """

    def months_on_book(at: Column) -> Column:
        return F.floor(F.months_between(at, F.col("disbursement_date"))).cast("int")

    def transform(history: DataFrame) -> DataFrame:
        base = history.select(
            "product_code",
            F.trunc("disbursement_date", "month").alias("disbursement_month"),
            F.col("principal").cast(MONEY).alias("_amount"),
            months_on_book(F.col("dpd30_date")).alias("_m30"),
            months_on_book(F.col("dpd90_date")).alias("_m90"),
            months_on_book(F.lit(as_of)).alias("_mob_now"),
        )
        cohort = ["product_code", "disbursement_month"]
        cohorts = base.groupBy(*cohort).agg(
            F.count(F.lit(1)).alias("loan_count"),
            F.sum("_amount").alias("disbursed_amount"),
            F.min("_mob_now").alias("_min_mob"),
            F.max("_mob_now").alias("_max_mob"),
        )
        grid = cohorts.withColumn("mob", F.explode(F.sequence(F.lit(0), F.least(F.col("_max_mob"), F.lit(max_mob)))))
        zero = _zero()
        reached = (
            base.where(F.col("_m30").isNotNull())
            .select(
                *cohort,
                F.col("_m30").alias("mob"),
                F.lit(1).alias("_c30"),
                F.col("_amount").alias("_a30"),
                F.lit(0).alias("_c90"),
                zero.alias("_a90"),
            )
            .unionByName(
                base.where(F.col("_m90").isNotNull()).select(
                    *cohort,
                    F.col("_m90").alias("mob"),
                    F.lit(0).alias("_c30"),
                    zero.alias("_a30"),
                    F.lit(1).alias("_c90"),
                    F.col("_amount").alias("_a90"),
                )
            )
            .groupBy(*cohort, "mob")
            .agg(*[F.sum(c).alias(c) for c in ("_c30", "_a30", "_c90", "_a90")])
        )
        running = Window.partitionBy(*cohort).orderBy("mob").rowsBetween(Window.unboundedPreceding, 0)
        names = products.select(F.col("product_code").alias("_lp"), F.col("name").alias("product_name"))
        amount30 = F.sum(F.coalesce(F.col("_a30"), zero)).over(running)
        amount90 = F.sum(F.coalesce(F.col("_a90"), zero)).over(running)
        curves = grid.join(reached, [*cohort, "mob"], "left").select(
            F.lit(as_of).alias("as_of_date"),
            *cohort,
            "mob",
            "loan_count",
            "disbursed_amount",
            F.sum(F.coalesce(F.col("_c30"), F.lit(0))).over(running).cast("long").alias("ever_dpd30_count"),
            amount30.alias("ever_dpd30_amount"),
            ratio(amount30, F.col("disbursed_amount")).alias("ever_dpd30_rate"),
            F.sum(F.coalesce(F.col("_c90"), F.lit(0))).over(running).cast("long").alias("ever_dpd90_count"),
            amount90.alias("ever_dpd90_amount"),
            ratio(amount90, F.col("disbursed_amount")).alias("ever_dpd90_rate"),
            (F.col("mob") < F.col("_min_mob")).alias("is_complete"),
        )
        return curves.join(F.broadcast(names), F.col("product_code") == F.col("_lp"), "left")

    return transform


# --------------------------------------------------------------------------------------------
# kpi_breaches


def kpi_breaches(as_of: dt.date, config: MetricsConfig, roll: DataFrame | None, officers: DataFrame) -> Transform:
    """Groups breaching a target, from portfolio_metrics rows (ratios) and roll_rates rows (M1 cure).

    For each (metric, grouping), a target naming the group's tier-1 branch beats the bank-wide one.
    AT_MOST metrics breach when value > target, AT_LEAST when value < target; a null value (zero
    balance) never breaches.
    """
    check_cure = roll is not None and (not config.cure_target_month_end_only or is_period_end(as_of, "MONTH"))

    def transform(portfolio: DataFrame) -> DataFrame:
        group = [F.col(c) for c in GROUP_COLUMNS]
        null_date = F.lit(None).cast("date")
        values = portfolio.select(
            *group,
            F.explode(
                F.array(
                    F.struct(
                        F.lit("OVERDUE_RATIO").alias("metric"),
                        F.col("overdue_ratio").alias("value"),
                        F.col("outstanding_balance").cast(MONEY).alias("base_balance"),
                    ),
                    F.struct(
                        F.lit("NPL_RATIO").alias("metric"),
                        F.col("npl_ratio").alias("value"),
                        F.col("outstanding_balance").cast(MONEY).alias("base_balance"),
                    ),
                )
            ).alias("_m"),
        ).select(*GROUP_COLUMNS, "_m.*", null_date.alias("period_start_date"))
        if check_cure and roll is not None:
            cure = roll.where(F.col("from_bucket") == "M1").select(
                *group,
                F.lit("M1_CURE_RATE").alias("metric"),
                F.col("cure_rate").alias("value"),
                F.col("from_balance").cast(MONEY).alias("base_balance"),
                F.col("period_start_date"),
            )
            values = values.unionByName(cure)
        spark = portfolio.sparkSession
        target_rows = [(t.metric, g, t.tier1_branch, t.limit) for t in config.targets for g in t.groupings]
        targets = local_frame(
            spark, target_rows, "_t_metric string, _t_grouping string, _t_tier1 string, _t_limit decimal(18,6)"
        )
        specific = targets.where(F.col("_t_tier1").isNotNull()).select(
            F.col("_t_metric").alias("_s_metric"),
            F.col("_t_grouping").alias("_s_grouping"),
            F.col("_t_tier1").alias("_s_tier1"),
            F.col("_t_limit").alias("_s_limit"),
        )
        general = targets.where(F.col("_t_tier1").isNull()).select("_t_metric", "_t_grouping", "_t_limit")
        joined = values.join(
            F.broadcast(specific),
            (F.col("metric") == F.col("_s_metric"))
            & (F.col("grouping") == F.col("_s_grouping"))
            & (F.col("tier1_branch_id") == F.col("_s_tier1")),
            "left",
        ).join(
            F.broadcast(general),
            (F.col("metric") == F.col("_t_metric")) & (F.col("grouping") == F.col("_t_grouping")),
            "left",
        )
        at_least = F.col("metric") == "M1_CURE_RATE"
        target = F.coalesce(F.col("_s_limit"), F.col("_t_limit"))
        breached = F.when(at_least, F.col("value") < target).otherwise(F.col("value") > target)
        out = joined.where(F.coalesce(breached, F.lit(False))).select(
            F.lit(as_of).alias("as_of_date"),
            *GROUP_COLUMNS,
            "metric",
            "value",
            "base_balance",
            "period_start_date",
            target.alias("target"),
            F.when(F.col("_s_limit").isNotNull(), F.col("_s_tier1")).alias("target_tier1_branch_id"),
            F.when(at_least, F.lit("AT_LEAST")).otherwise(F.lit("AT_MOST")).alias("comparison"),
            (F.col("value") - target).alias("gap"),
        )
        if config.exclude_departed_officers:
            departed = officers.where(~F.col("active")).select(F.col("officer_id").alias("_gone"))
            out = out.join(
                F.broadcast(departed),
                (F.col("grouping") == "OFFICER") & (F.col("group_key") == F.col("_gone")),
                "left_anti",
            )
        return out

    return transform


# --------------------------------------------------------------------------------------------
# channel_scorecard


def channel_scorecard(
    as_of: dt.date,
    config: MetricsConfig,
    fpd_days: int,
    snapshot: DataFrame,
    history: DataFrame,
    branches: DataFrame,
) -> Transform:
    """Per cooperation channel: month-to-date originations, FPD, overdue and NPL ratios, score, rating, exit.

    `history` is `delinquency_milestones` rows (closed loans too) with channel_id, disbursement_date,
    principal, first_due_date and fpd_date. Each score component scores 100 * max(0, 1 - value /
    zero_at); the score is their weighted mean over the components that have a value.
    """
    day = F.lit(as_of)
    month_start = as_of.replace(day=1)

    def transform(channels: DataFrame) -> DataFrame:
        channel = F.col("channel_id")
        book = (
            snapshot.where(channel.isNotNull())
            .groupBy("channel_id")
            .agg(
                F.count(F.lit(1)).alias("loan_count"),
                F.sum("outstanding_principal").alias("outstanding_balance"),
                _sum_if(F.col("dpd") > 0, F.col("outstanding_principal")).alias("overdue_balance"),
                _sum_if(F.col("is_npl"), F.col("outstanding_principal")).alias("npl_balance"),
                _common_prefix(F.collect_set("branch_path")).alias("_loans_path"),
            )
        )
        amount = F.col("principal").cast(MONEY)
        this_month = F.col("disbursement_date") >= F.lit(month_start)
        observable = (F.col("disbursement_date") > F.add_months(day, -config.channel_fpd_lookback_months)) & (
            F.date_add(F.col("first_due_date"), fpd_days) < day
        )
        defaulted = observable & F.col("fpd_date").isNotNull()
        originations = (
            history.where(channel.isNotNull())
            .groupBy("channel_id")
            .agg(
                _count_if(this_month).alias("originated_count"),
                _sum_if(this_month, amount).alias("originated_amount"),
                _count_if(observable).alias("fpd_observed_count"),
                _sum_if(observable, amount).alias("fpd_observed_amount"),
                _count_if(defaulted).alias("fpd_count"),
                _sum_if(defaulted, amount).alias("fpd_amount"),
            )
        )
        managed = channels.select(
            "channel_id",
            F.col("name").alias("channel_name"),
            F.col("status").alias("channel_status"),
            "branch_id",
            "manager_officer_id",
        ).transform(with_branch_hierarchy(branches))
        # Full outer joins on the key: every channel of the extract or with loans, each input read once.
        rows = managed.join(book, "channel_id", "full").join(originations, "channel_id", "full")
        filled = {n: F.coalesce(F.col(n), F.lit(0)).cast("long") for n in ("loan_count", "originated_count")}
        filled.update({n: F.coalesce(F.col(n), F.lit(0)).cast("long") for n in ("fpd_observed_count", "fpd_count")})
        for name in (
            "outstanding_balance",
            "overdue_balance",
            "npl_balance",
            "originated_amount",
            "fpd_observed_amount",
            "fpd_amount",
        ):
            filled[name] = F.coalesce(F.col(name), _zero())
        rows = rows.withColumns(filled)
        rows = rows.withColumns(
            {
                "overdue_ratio": ratio(F.col("overdue_balance"), F.col("outstanding_balance")),
                "npl_ratio": ratio(F.col("npl_balance"), F.col("outstanding_balance")),
                "fpd_rate": ratio(F.col("fpd_amount"), F.col("fpd_observed_amount")),
            }
        )
        values = {
            "OVERDUE_RATIO": F.col("overdue_ratio"),
            "NPL_RATIO": F.col("npl_ratio"),
            "FPD_RATE": F.col("fpd_rate"),
        }
        points = F.lit(0).cast("decimal(38,10)")
        weights = F.lit(0).cast("decimal(38,10)")
        for component in config.channel_score_components:
            value = values[component.metric]
            weight = F.lit(component.weight).cast("decimal(18,6)")
            part = F.greatest(F.lit(0), F.lit(1) - value / F.lit(component.zero_at).cast("decimal(18,6)")) * 100
            points = points + F.when(value.isNotNull(), part * weight).otherwise(0)
            weights = weights + F.when(value.isNotNull(), weight).otherwise(0)
        score = F.try_divide(points, weights).try_cast(SCORE)
        rating = F.lit(None).cast("string")
        for band in reversed(config.bands_by_score):
            rating = F.when(score >= F.lit(band.min_score), F.lit(band.rating)).otherwise(rating)
        return rows.withColumns(
            {
                "score": score,
                "rating": rating,
                "flagged_for_exit": F.coalesce(rating.isin(*config.channel_exit_ratings), F.lit(False)),
                "branch_path": F.coalesce(F.col("branch_path"), F.col("_loans_path")),
                "as_of_date": day,
                "month_start": F.lit(month_start),
            }
        )

    return transform


# --------------------------------------------------------------------------------------------
# early_warnings


def early_warnings(as_of: dt.date, previous_as_of: dt.date | None, signals: DataFrame, history: DataFrame) -> Transform:
    """Loans on the book with a new risk signal, a downgrade or a first-payment default since the last run.

    The window is (previous_as_of, as_of]; on a first run (no previous date) it is the date alone.
    `history` is `delinquency_milestones` rows (loan_id, first_due_date, fpd_date).
    """
    day = F.lit(as_of)
    since = F.lit(previous_as_of or as_of - dt.timedelta(days=1))

    def in_window(c: Column) -> Column:
        return (c > since) & (c <= day)

    def transform(snapshot: DataFrame) -> DataFrame:
        loans = snapshot.select(
            "loan_id",
            "borrower_id",
            "branch_id",
            "branch_path",
            "officer_id",
            "product_code",
            "channel_id",
            "risk_class",
            "previous_risk_class",
            "dpd",
            "outstanding_principal",
        )
        raised = signals.where(
            in_window(F.col("signal_date")) & (F.col("cleared_date").isNull() | (F.col("cleared_date") > day))
        ).select(
            F.col("signal_id"),
            F.col("loan_id").alias("_s_loan"),
            F.col("borrower_id").alias("_s_borrower"),
            F.col("signal_type").alias("detail"),
            "severity",
            F.col("signal_date").alias("event_date"),
        )
        on_loan = loans.join(raised.where(F.col("_s_loan").isNotNull()), F.col("loan_id") == F.col("_s_loan"))
        on_borrower = loans.join(raised.where(F.col("_s_loan").isNull()), F.col("borrower_id") == F.col("_s_borrower"))
        new_signals = on_loan.unionByName(on_borrower).select(
            *loans.columns, "signal_id", "detail", "severity", "event_date", F.lit("NEW_SIGNAL").alias("warning_type")
        )
        null_id = F.lit(None).cast("string")
        to_rank = _rank(F.col("risk_class"), RISK_CLASSES)
        downgrades = loans.where(to_rank > _rank(F.col("previous_risk_class"), RISK_CLASSES)).select(
            "*",
            null_id.alias("signal_id"),
            F.concat_ws("->", "previous_risk_class", "risk_class").alias("detail"),
            F.when(F.col("risk_class").isin(*NPL_CLASSES), F.lit("MAJOR")).otherwise(F.lit("MINOR")).alias("severity"),
            day.alias("event_date"),
            F.lit("DOWNGRADE").alias("warning_type"),
        )
        defaults = (
            loans.join(history.select("loan_id", "first_due_date", "fpd_date"), "loan_id")
            .where(in_window(F.col("fpd_date")))
            .select(
                *loans.columns,
                null_id.alias("signal_id"),
                F.concat(F.lit("first instalment due "), F.col("first_due_date").cast("string")).alias("detail"),
                F.lit("MAJOR").alias("severity"),
                F.col("fpd_date").alias("event_date"),
                F.lit("FIRST_PAYMENT_DEFAULT").alias("warning_type"),
            )
        )
        return (
            new_signals.unionByName(downgrades)
            .unionByName(defaults)
            .withColumns({"as_of_date": day, "previous_as_of_date": F.lit(previous_as_of).cast("date")})
        )

    return transform


# --------------------------------------------------------------------------------------------
# The stage


def metrics_config(config: AppConfig) -> MetricsConfig:
    """The metrics section (defaults when absent); refuses per-branch/product overrides of it."""
    for i, rule in enumerate(config.overrides):
        for key in rule.set:
            if str(key).startswith("metrics."):
                raise ConfigError(
                    "postloan.yaml",
                    f"overrides[{i}].set.{key}",
                    "metrics settings are bank-wide; give a tier-1 branch its own KPI target in metrics.targets",
                )
    section = config.sections.get("metrics")
    if section is None:
        return MetricsConfig()
    if not isinstance(section, MetricsConfig):
        raise TypeError(f"metrics section is a {type(section).__name__}, expected MetricsConfig")
    return section


# Small dimension tables the stage joins many times (jobs.delinquency.with_branch_hierarchy alone reads
# branches ten times per use).
DIMENSIONS: tuple[str, ...] = ("branches", "products", "channels", "officers")


def local_copy(frame: DataFrame) -> DataFrame:
    """The rows of a small table as a local relation: same rows and schema, none of the lineage.

    Every DataFrame call re-analyses the whole plan beneath it, and a landing table's plan carries the
    whole ingest validation; a plan that embeds it a dozen times can exhaust the driver's memory in
    analysis alone. One collect of a few hundred rows avoids that (as Arrow: no Python worker).
    """
    return frame.sparkSession.createDataFrame(frame.toArrow(), frame.schema)


def build_metrics(ctx: StageContext) -> dict[Table, DataFrame]:
    """All seven metrics tables for ctx.as_of (see the module docstring and docs/metrics.md)."""
    cfg = metrics_config(ctx.config)
    ctx = dataclasses.replace(ctx, tables={**ctx.tables, **{n: local_copy(ctx.tables[n]) for n in DIMENSIONS}})
    as_of, tables, snapshot = ctx.as_of, ctx.tables, ctx.snapshot
    labels = with_group_labels(tables["branches"], tables["products"], tables["channels"], tables["officers"])

    def targeted(*metrics: str) -> list[str]:
        return [g for t in cfg.targets if t.metric in metrics for g in t.groupings]

    ratio_groupings = _ordered_union(cfg.portfolio_groupings, targeted("OVERDUE_RATIO", "NPL_RATIO"))
    portfolio_all = snapshot.transform(portfolio_metrics(ratio_groupings)).transform(labels)
    portfolio = portfolio_all.where(F.col("grouping").isin(*cfg.portfolio_groupings))

    starts: dict[dt.date, DataFrame | None] = {}

    def transitions_since(period_type: str) -> DataFrame | None:
        nominal = period_end_before(as_of, period_type)
        if nominal not in starts:
            earliest = nominal - dt.timedelta(days=cfg.period_start_lookback_days)
            rows = ctx.history(LOAN_SNAPSHOT, earliest, nominal + dt.timedelta(days=1))
            starts[nominal] = None if rows is None else rows.transform(latest_date_rows())
        start = starts[nominal]
        return None if start is None else start.transform(loan_transitions(snapshot, tables["loans"], as_of))

    migrations = []
    for period_type in cfg.migration_periods:
        moves = transitions_since(period_type)
        if moves is not None:
            migrations.append(
                moves.transform(migration_rates(as_of, period_type, cfg.migration_groupings, cfg.migration_numerator))
            )
    migration = _union(migrations)

    roll_all = None
    month_moves = transitions_since("MONTH")
    if month_moves is not None:
        roll_groupings = _ordered_union(cfg.roll_groupings, targeted("M1_CURE_RATE"))
        roll_all = month_moves.transform(roll_rates(as_of, roll_groupings)).transform(labels)

    # One pass of milestones feeds the vintage, the scorecard (recent channel loans) and the warnings
    # (today's first-payment defaults); computed once, it is then only filtered. A loan on the book
    # whose max_dpd_ever (the highest dpd of any day up to the date, same rules) is below every level
    # and the FPD threshold reached none of them -- most of the live book -- so only the others take
    # the windows over their schedule and payments. Measured at 1M loans before: 356 s of the
    # stage's 380 s went to three passes over every loan's schedule.
    levels = {"dpd30_date": cfg.vintage_dpd30_days, "dpd90_date": cfg.vintage_dpd90_days}
    lowest = min(*levels.values(), ctx.config.delinquency.fpd_days + 1)
    quiet = snapshot.where(F.col("max_dpd_ever") < lowest).select("loan_id")
    everything = materialize(loan_history(ctx, levels, never_reached=quiet))
    recent_channel_loans = everything.where(
        F.col("channel_id").isNotNull()
        & (
            F.col("disbursement_date")
            >= F.least(F.lit(as_of.replace(day=1)), F.add_months(F.lit(as_of), -cfg.channel_fpd_lookback_months))
        )
    )
    defaulted = snapshot.where(F.col("first_payment_default")).select("loan_id")
    first_payment_defaults = everything.join(defaulted, "loan_id", "left_semi")

    def shaped(table: Table, frame: DataFrame | None) -> DataFrame:
        if frame is None:
            return local_frame(ctx.spark, [], table.schema)
        return _shape(frame, table)

    return {
        PORTFOLIO_METRICS: shaped(PORTFOLIO_METRICS, portfolio),
        MIGRATION_RATES: shaped(MIGRATION_RATES, migration.transform(labels) if migration is not None else None),
        ROLL_RATES: shaped(
            ROLL_RATES, roll_all.where(F.col("grouping").isin(*cfg.roll_groupings)) if roll_all is not None else None
        ),
        VINTAGE: shaped(VINTAGE, everything.transform(vintage_curves(as_of, cfg.vintage_max_mob, tables["products"]))),
        KPI_BREACHES: shaped(
            KPI_BREACHES, portfolio_all.transform(kpi_breaches(as_of, cfg, roll_all, tables["officers"]))
        ),
        CHANNEL_SCORECARD: shaped(
            CHANNEL_SCORECARD,
            tables["channels"].transform(
                channel_scorecard(
                    as_of, cfg, ctx.config.delinquency.fpd_days, snapshot, recent_channel_loans, tables["branches"]
                )
            ),
        ),
        EARLY_WARNINGS: shaped(
            EARLY_WARNINGS,
            snapshot.transform(
                early_warnings(as_of, ctx.previous_as_of, tables["risk_signals"], first_payment_defaults)
            ),
        ),
    }
