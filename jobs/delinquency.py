"""Delinquency (逾期): days past due, overdue amounts, bucket, MOB, max DPD ever, FPD.

DOMAIN.md section 1. Payments with value date on or before the business date are applied to the
instalments oldest first (interest before principal within an instalment); an instalment is
covered when the cumulative amount paid reaches its cumulative amount due less the tolerance.
DPD is the business date minus the due date of the oldest instalment due before it that is not
covered. A reversal (negative amount) takes its payment back as of its own value date.

Everything is set-based: cumulative sums and running windows per loan, no per-loan Python.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from jobs.params import param

MONEY = "decimal(18,2)"


def on_book(as_of: dt.date) -> Callable[[DataFrame], DataFrame]:
    """Loans on the book on the date: disbursed on or before it and not closed on or before it."""
    day = F.lit(as_of)

    def transform(loans: DataFrame) -> DataFrame:
        return loans.where(
            (F.col("disbursement_date") <= day) & (F.col("closed_date").isNull() | (F.col("closed_date") > day))
        )

    return transform


def with_branch_hierarchy(branches: DataFrame, max_depth: int = 8) -> Callable[[DataFrame], DataFrame]:
    """Add branch_path (head office down to the branch), tier1_branch_id and tier2_branch_id."""

    def paths() -> DataFrame:
        parent = branches.select(F.col("branch_id").alias("_pid"), F.col("parent_id").alias("_pparent"))
        walk = branches.select(
            "branch_id",
            F.array(F.col("branch_id")).alias("branch_path"),
            F.col("parent_id").alias("_next"),
        )
        # The hierarchy is four levels deep; a few extra hops tolerate deeper trees.
        for _ in range(max_depth):
            walk = walk.join(F.broadcast(parent), walk["_next"] == parent["_pid"], "left").select(
                "branch_id",
                F.when(F.col("_pid").isNotNull(), F.concat(F.array("_pid"), "branch_path"))
                .otherwise(F.col("branch_path"))
                .alias("branch_path"),
                F.col("_pparent").alias("_next"),
            )
        levels = branches.select(F.col("branch_id").alias("_bid"), F.col("level").alias("_level"))
        exploded = walk.select("branch_id", "branch_path", F.posexplode("branch_path").alias("_pos", "_bid"))
        tiers = (
            exploded.join(F.broadcast(levels), "_bid")
            .groupBy("branch_id")
            .agg(
                F.first("branch_path").alias("branch_path"),
                F.max(F.when(F.col("_level") == "TIER1", F.col("_bid"))).alias("tier1_branch_id"),
                F.max(F.when(F.col("_level") == "TIER2", F.col("_bid"))).alias("tier2_branch_id"),
            )
        )
        return tiers

    def transform(loans: DataFrame) -> DataFrame:
        return loans.join(F.broadcast(paths()), "branch_id", "left")

    return transform


def bucket(dpd: Column, width: int, count: int) -> Column:
    """M0 for 0, M1..M{count} for each `width` days, M{count+1}+ beyond."""
    months = F.ceil(dpd / F.lit(width)).cast("int")
    return (
        F.when(dpd <= 0, F.lit("M0"))
        .when(dpd > width * count, F.lit(f"M{count + 1}+"))
        .otherwise(F.concat(F.lit("M"), months.cast("string")))
    )


def months_on_book(as_of: dt.date) -> Column:
    """Whole months since disbursement (0 in the first month)."""
    return F.floor(F.months_between(F.lit(as_of), F.col("disbursement_date"))).cast("int")


def cents(amount: Column) -> Column:
    """A decimal(18,2) amount as whole cents (fen), exactly.

    The delinquency's running sums and its merge of thresholds and payments by amount run over
    every instalment of the book. Over decimal(18,2) they become decimal(28,2), which Spark adds
    with java BigDecimal and cannot sort by a binary prefix; as longs they are plain additions and
    radix-sortable. Ingest bounds every amount (AMOUNT_OUT_OF_RANGE), so a loan's sums fit a long.
    """
    return (amount * 100).cast("long")


def from_cents(amount: Column) -> Column:
    return (amount.cast("decimal(20,0)") / 100).cast(MONEY)


def _instalments(schedule: DataFrame, loans: DataFrame) -> DataFrame:
    """Instalments in cents with cumulative dues and the loan's coverage threshold (due less tolerance)."""
    by_loan = Window.partitionBy("loan_id").orderBy("installment_no")
    so_far = by_loan.rowsBetween(Window.unboundedPreceding, 0)
    return (
        schedule.join(loans.select("loan_id", "_tolerance_c"), "loan_id")
        .select(
            "loan_id",
            "installment_no",
            "due_date",
            cents(F.col("principal_due")).alias("_principal_c"),
            cents(F.col("interest_due")).alias("_interest_c"),
            "_tolerance_c",
        )
        .withColumn("_due_c", F.col("_principal_c") + F.col("_interest_c"))
        .withColumn("_cum_due_c", F.sum("_due_c").over(so_far))
        .withColumn("_is_first", F.col("installment_no") == F.first("installment_no").over(so_far))
        .withColumn("_prev_cum_due_c", F.col("_cum_due_c") - F.col("_due_c"))
        .withColumn("_threshold_c", F.col("_cum_due_c") - F.col("_tolerance_c"))
    )


def _payment_days(repayments: DataFrame, as_of: dt.date) -> DataFrame:
    """Net cents per loan and value date, the running total paid, and its suffix minimum.

    The suffix minimum S at a payment day is the least the running total falls to from that day
    on; an instalment stays covered from the first day whose S reaches its threshold.
    """
    days = (
        repayments.where(F.col("value_date") <= F.lit(as_of))
        .groupBy("loan_id", "value_date")
        .agg(F.sum(cents(F.col("amount"))).alias("_day_c"))
    )
    forward = Window.partitionBy("loan_id").orderBy("value_date")
    backward = Window.partitionBy("loan_id").orderBy(F.col("value_date").desc())
    return days.withColumn(
        "_paid_to_date_c", F.sum("_day_c").over(forward.rowsBetween(Window.unboundedPreceding, 0))
    ).withColumn(
        "_paid_from_here_min_c", F.min("_paid_to_date_c").over(backward.rowsBetween(Window.unboundedPreceding, 0))
    )


def _by_instalment(instalments: DataFrame, days: DataFrame, as_of: dt.date) -> DataFrame:
    """Every instalment with what the loan paid by the date and the last day it was uncovered.

    Thresholds and payment days are merged in one order by amount; for a threshold, the nearest
    payment day after it in that order is the first day from which it stayed covered. The window
    runs backwards so that the frame grows (linear), rather than an unbounded-following frame.
    The same window also gives the loan's total paid by the date (the running total on its last
    payment day), so the instalments and the payment days are each read once.
    """
    rows = instalments.select(
        "loan_id",
        F.col("_threshold_c").alias("_value"),
        F.lit(0).alias("_kind"),
        F.lit(None).cast("date").alias("_day"),
        F.lit(None).cast("long").alias("_paid_to_date_c"),
        "due_date",
        "_is_first",
        "_principal_c",
        "_interest_c",
        "_due_c",
        "_cum_due_c",
        "_prev_cum_due_c",
        "_tolerance_c",
    )
    events = days.select(
        "loan_id",
        F.col("_paid_from_here_min_c").alias("_value"),
        F.lit(1).alias("_kind"),
        F.col("value_date").alias("_day"),
        "_paid_to_date_c",
    )
    merged = rows.unionByName(events, allowMissingColumns=True)
    reverse = Window.partitionBy("loan_id").orderBy(
        F.col("_value").desc(), F.col("_kind").desc(), F.col("_day").desc_nulls_first()
    )
    covered_from = F.last("_day", ignorenulls=True).over(reverse.rowsBetween(Window.unboundedPreceding, 0))
    paid = F.max_by("_paid_to_date_c", "_day").over(
        reverse.rowsBetween(Window.unboundedPreceding, Window.unboundedFollowing)
    )
    past_due = F.col("due_date") < F.lit(as_of)
    return (
        merged.withColumn("_covered_from", covered_from)
        .withColumn("_paid_c", paid)
        .where(F.col("_kind") == 0)
        .withColumn(
            "_last_uncovered",
            # A threshold at or below zero (tolerance covers the whole instalment) is never unpaid.
            F.when(past_due & (F.col("_value") > 0), F.coalesce(F.date_sub("_covered_from", 1), F.lit(as_of))),
        )
        .drop("_value", "_kind", "_day", "_paid_to_date_c", "_covered_from")
    )


def with_delinquency(
    as_of: dt.date,
    schedule: DataFrame,
    repayments: DataFrame,
    fpd_days: int,
    bucket_width_days: int,
    bucket_count: int,
) -> Callable[[DataFrame], DataFrame]:
    """Add the delinquency columns of loan_snapshot to loans on the book.

    The loans frame must carry the resolved `delinquency__tolerance_amount` parameter.
    Added: outstanding_principal, overdue_principal, overdue_interest, overdue_installments, dpd,
    bucket, max_dpd_ever, mob, first_payment_default, last_overdue_date (last day <= the date with
    dpd >= 1; null if never overdue).
    """
    day = F.lit(as_of)

    def transform(loans: DataFrame) -> DataFrame:
        keyed = loans.withColumn("_tolerance", param("delinquency", "tolerance_amount").cast(MONEY))
        tolerance = keyed.select("loan_id", cents(F.col("_tolerance")).alias("_tolerance_c"))
        instalments = _instalments(schedule, tolerance)
        days = _payment_days(repayments.join(tolerance.select("loan_id"), "loan_id", "left_semi"), as_of)

        # Apply what was paid by the date to each instalment, oldest first, interest first.
        applied_total = F.greatest(F.lit(0), F.coalesce(F.col("_paid_c"), F.lit(0)))
        applied = F.least(F.greatest(applied_total - F.col("_prev_cum_due_c"), F.lit(0)), F.col("_due_c"))
        interest_paid = F.least(applied, F.col("_interest_c"))
        principal_paid = applied - interest_paid
        overdue = (F.col("due_date") < day) & (F.col("_cum_due_c") - applied_total > F.col("_tolerance_c"))
        days_late = F.datediff("_last_uncovered", "due_date")
        by_loan = (
            _by_instalment(instalments, days, as_of)
            .withColumn("_overdue", overdue)
            .groupBy("loan_id")
            .agg(
                from_cents(F.sum(principal_paid)).alias("_principal_repaid"),
                from_cents(F.sum(F.when(F.col("_overdue"), F.col("_principal_c") - principal_paid).otherwise(0))).alias(
                    "_overdue_principal"
                ),
                from_cents(F.sum(F.when(F.col("_overdue"), F.col("_interest_c") - interest_paid).otherwise(0))).alias(
                    "_overdue_interest"
                ),
                F.sum(F.col("_overdue").cast("int")).alias("_overdue_installments"),
                F.min(F.when(F.col("_overdue"), F.col("due_date"))).alias("_oldest_overdue_due"),
                F.max(F.greatest(days_late, F.lit(0))).alias("_max_dpd"),
                F.max(F.when(days_late > 0, F.col("_last_uncovered"))).alias("last_overdue_date"),
                F.max(F.when(F.col("_is_first"), days_late)).alias("_first_late"),
            )
        )
        dpd = F.coalesce(F.datediff(day, "_oldest_overdue_due"), F.lit(0))
        zero = F.lit(0).cast(MONEY)
        return (
            keyed.join(by_loan, "loan_id", "left")
            .withColumn(
                "outstanding_principal",
                F.greatest(F.col("principal") - F.coalesce("_principal_repaid", zero), zero).cast(MONEY),
            )
            .withColumn("overdue_principal", F.coalesce("_overdue_principal", zero).cast(MONEY))
            .withColumn("overdue_interest", F.coalesce("_overdue_interest", zero).cast(MONEY))
            .withColumn("overdue_installments", F.coalesce("_overdue_installments", F.lit(0)).cast("int"))
            .withColumn("dpd", dpd.cast("int"))
            .withColumn("bucket", bucket(F.col("dpd"), bucket_width_days, bucket_count))
            .withColumn("max_dpd_ever", F.greatest(F.coalesce("_max_dpd", F.lit(0)), F.col("dpd")).cast("int"))
            .withColumn("mob", months_on_book(as_of))
            .withColumn("first_payment_default", F.coalesce(F.col("_first_late") > fpd_days, F.lit(False)))
            .drop(
                "_tolerance",
                "_principal_repaid",
                "_overdue_principal",
                "_overdue_interest",
                "_overdue_installments",
                "_oldest_overdue_due",
                "_max_dpd",
                "_first_late",
            )
        )

    return transform
