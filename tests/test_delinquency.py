"""Delinquency rules (DOMAIN.md section 1) on hand-made loans; expected values worked by hand."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.delinquency import bucket, on_book, with_delinquency
from schemas.landing import REPAYMENTS, SCHEDULE

D = dt.date
AS_OF = D(2026, 6, 15)


def money(x: str) -> Decimal:
    return Decimal(x)


def loans(spark: SparkSession, rows: list[tuple[str, str, dt.date, str]]) -> DataFrame:
    return spark.createDataFrame(
        [(loan_id, money(p), disb, money(tol)) for loan_id, p, disb, tol in rows],
        "loan_id string, principal decimal(18,2), disbursement_date date, delinquency__tolerance_amount decimal(18,2)",
    )


def schedule(spark: SparkSession, rows: list[tuple[str, int, dt.date, str, str]]) -> DataFrame:
    return spark.createDataFrame([(lid, no, due, money(p), money(i)) for lid, no, due, p, i in rows], SCHEDULE.schema)


def repayments(spark: SparkSession, rows: list[tuple[str, str, dt.date, str]]) -> DataFrame:
    return spark.createDataFrame([(txn, lid, day, money(a)) for txn, lid, day, a in rows], REPAYMENTS.schema)


def three_monthly(loan_id: str) -> list[tuple[str, int, dt.date, str, str]]:
    # 100 a month: 90 principal + 10 interest, due the 10th of April, May, June.
    return [
        (loan_id, 1, D(2026, 4, 10), "90.00", "10.00"),
        (loan_id, 2, D(2026, 5, 10), "90.00", "10.00"),
        (loan_id, 3, D(2026, 6, 10), "90.00", "10.00"),
    ]


COLUMNS = [
    "loan_id",
    "outstanding_principal",
    "overdue_principal",
    "overdue_interest",
    "overdue_installments",
    "dpd",
    "bucket",
    "max_dpd_ever",
    "last_overdue_date",
    "first_payment_default",
]


def run(book: DataFrame, sched: DataFrame, pays: DataFrame, as_of: dt.date = AS_OF, fpd: int = 30) -> dict[str, tuple]:
    out = book.transform(with_delinquency(as_of, sched, pays, fpd, 30, 6)).select(*COLUMNS)
    return {r["loan_id"]: tuple(r)[1:] for r in out.collect()}


def test_dpd_counts_from_oldest_uncovered_instalment_with_partial_payment(spark: SparkSession) -> None:
    book = loans(spark, [("L1", "270.00", D(2026, 3, 10), "0.00")])
    pays = repayments(spark, [("t1", "L1", D(2026, 4, 10), "100.00"), ("t2", "L1", D(2026, 5, 12), "50.00")])
    got = run(book, schedule(spark, three_monthly("L1")), pays)
    # 150 paid: instalment 1 covered; instalment 2 gets 50 (its 10 interest first, then 40 of
    # principal), so it is the oldest uncovered: due 10 May -> 21 days of May + 15 of June = 36.
    # Overdue principal: 50 (inst 2) + 90 (inst 3); overdue interest: inst 3's 10.
    # Outstanding: 270 - 90 - 40 = 140. Overdue ever since 11 May, still on 15 June.
    assert got["L1"] == (
        money("140.00"),
        money("140.00"),
        money("10.00"),
        2,
        36,
        "M2",
        36,
        AS_OF,
        False,
    )


def test_instalment_due_on_the_business_date_is_not_yet_overdue(spark: SparkSession) -> None:
    book = loans(spark, [("L2", "180.00", D(2026, 4, 15), "0.00")])
    sched = schedule(
        spark,
        [("L2", 1, D(2026, 5, 15), "90.00", "10.00"), ("L2", 2, D(2026, 6, 15), "90.00", "10.00")],
    )
    pays = repayments(spark, [("t1", "L2", D(2026, 5, 15), "100.00")])
    assert run(book, sched, pays)["L2"] == (
        money("90.00"),
        money("0.00"),
        money("0.00"),
        0,
        0,
        "M0",
        0,
        None,
        False,
    )
    # The day after, the unpaid instalment is one day past due.
    day_after = run(book, sched, pays, as_of=D(2026, 6, 16))["L2"]
    assert day_after[4:7] == (1, "M1", 1)


def test_reversal_removes_its_payment_as_of_its_own_value_date(spark: SparkSession) -> None:
    book = loans(spark, [("L3", "180.00", D(2026, 3, 10), "0.00")])
    sched = schedule(
        spark,
        [("L3", 1, D(2026, 4, 10), "90.00", "10.00"), ("L3", 2, D(2026, 5, 10), "90.00", "10.00")],
    )
    pays = repayments(
        spark,
        [
            ("t1", "L3", D(2026, 4, 10), "100.00"),
            ("t2", "L3", D(2026, 4, 20), "-100.00"),  # bounced: instalment 1 unpaid again from 20 April
            ("t3", "L3", D(2026, 5, 1), "100.00"),  # covered again from 1 May
            ("t4", "L3", D(2026, 5, 10), "100.00"),
        ],
    )
    # Instalment 1 was past due 20..30 April: 20 days late on 30 April (due 10 April).
    assert run(book, sched, pays)["L3"] == (
        money("0.00"),
        money("0.00"),
        money("0.00"),
        0,
        0,
        "M0",
        20,
        D(2026, 4, 30),
        False,
    )
    # As of 25 April the reversal stands: 15 days past due.
    assert run(book, sched, pays, as_of=D(2026, 4, 25))["L3"][4] == 15
    # As of 15 April the reversal has not happened yet.
    assert run(book, sched, pays, as_of=D(2026, 4, 15))["L3"][4] == 0
    # With FPD at 19 days, 20 days late on the first instalment is a first-payment default.
    assert run(book, sched, pays, fpd=19)["L3"][8] is True


def test_prepayment_covers_later_instalments_and_reduces_balance(spark: SparkSession) -> None:
    book = loans(spark, [("L4", "270.00", D(2026, 3, 10), "0.00")])
    pays = repayments(spark, [("t1", "L4", D(2026, 4, 5), "250.00")])
    # 250 covers instalments 1 and 2 whole and 50 of instalment 3 (10 interest, 40 principal).
    got = run(book, schedule(spark, three_monthly("L4")), pays, as_of=D(2026, 5, 1))["L4"]
    assert got == (money("50.00"), money("0.00"), money("0.00"), 0, 0, "M0", 0, None, False)


def test_tolerance_amount_counts_a_small_shortfall_as_covered(spark: SparkSession) -> None:
    book = loans(spark, [("L5", "90.00", D(2026, 3, 10), "1.00"), ("L6", "90.00", D(2026, 3, 10), "0.00")])
    sched = schedule(spark, [("L5", 1, D(2026, 4, 10), "90.00", "10.00"), ("L6", 1, D(2026, 4, 10), "90.00", "10.00")])
    pays = repayments(spark, [("t1", "L5", D(2026, 4, 10), "99.50"), ("t2", "L6", D(2026, 4, 10), "99.50")])
    got = run(book, sched, pays)
    assert got["L5"] == (money("0.50"), money("0.00"), money("0.00"), 0, 0, "M0", 0, None, False)
    # Without tolerance: 50 cents of principal unpaid since 10 April: 20 + 31 + 15 = 66 days.
    assert got["L6"] == (
        money("0.50"),
        money("0.50"),
        money("0.00"),
        1,
        66,
        "M3",
        66,
        AS_OF,
        True,
    )


def test_late_first_instalment_is_first_payment_default_and_max_dpd_is_kept(spark: SparkSession) -> None:
    book = loans(spark, [("L8", "90.00", D(2026, 2, 1), "0.00"), ("L9", "90.00", D(2026, 2, 1), "0.00")])
    sched = schedule(spark, [("L8", 1, D(2026, 3, 1), "90.00", "10.00"), ("L9", 1, D(2026, 3, 1), "90.00", "10.00")])
    pays = repayments(
        spark,
        [
            ("t1", "L8", D(2026, 4, 15), "100.00"),  # unpaid 2 Mar..14 Apr: 44 days past due at worst
            ("t2", "L9", D(2026, 3, 31), "100.00"),  # unpaid 2..30 Mar: 29 days, not over 30
        ],
    )
    got = run(book, sched, pays)
    assert got["L8"] == (money("0.00"), money("0.00"), money("0.00"), 0, 0, "M0", 44, D(2026, 4, 14), True)
    assert got["L9"] == (money("0.00"), money("0.00"), money("0.00"), 0, 0, "M0", 29, D(2026, 3, 30), False)


@pytest.mark.parametrize(
    ("dpd", "expected"),
    [(0, "M0"), (1, "M1"), (30, "M1"), (31, "M2"), (90, "M3"), (91, "M4"), (180, "M6"), (181, "M7+")],
)
def test_bucket_boundaries(spark: SparkSession, dpd: int, expected: str) -> None:
    got = spark.range(1).select(bucket(F.lit(dpd), 30, 6).alias("b")).first()
    assert got is not None and got["b"] == expected


def test_on_book_excludes_future_and_closed_loans(spark: SparkSession) -> None:
    frame = spark.createDataFrame(
        [
            ("future", D(2026, 6, 16), None),
            ("today", D(2026, 6, 15), None),
            ("closed_today", D(2025, 1, 1), D(2026, 6, 15)),
            ("closed_tomorrow", D(2025, 1, 1), D(2026, 6, 16)),
        ],
        "loan_id string, disbursement_date date, closed_date date",
    )
    kept = sorted(r["loan_id"] for r in frame.transform(on_book(AS_OF)).collect())
    assert kept == ["closed_tomorrow", "today"]
