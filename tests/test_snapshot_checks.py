"""The snapshot's contract checks before it is published (jobs.pipeline.validate_snapshot).

The night observes the checks while it settles the snapshot and only groups the keys again; the
counts must be the same as counting them in a pass of their own, and every breach must stop the
run with a line naming it.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from pyspark.sql import DataFrame, Observation, SparkSession

from jobs.pipeline import DataQualityError, snapshot_checks, validate_snapshot
from jobs.stages import settle

SCHEMA = (
    "loan_id string, risk_class string, bucket string, dpd int, outstanding_principal decimal(18,2), is_npl boolean"
)


def snapshot(spark: SparkSession, rows: list[tuple[str, str | None, str | None, int | None, str, bool]]) -> DataFrame:
    return spark.createDataFrame(
        [(loan, risk, bucket, dpd, Decimal(balance), npl) for loan, risk, bucket, dpd, balance, npl in rows], SCHEMA
    )


CLEAN = [
    ("L1", "NORMAL", "M0", 0, "1000.00", False),
    ("L2", "SPECIAL_MENTION", "M2", 45, "500.00", False),
    ("L3", "SUBSTANDARD", "M4", 100, "0.00", True),
    ("L4", "NORMAL", "M1", 30, "20.00", False),
]

# Four loans: two NORMAL, one SPECIAL_MENTION, one SUBSTANDARD (the one NPL); one each in M0,
# M1, M2 and M4; every other class and bucket none.
EXPECTED = {
    "loans": 4,
    "class_NORMAL": 2,
    "class_SPECIAL_MENTION": 1,
    "class_SUBSTANDARD": 1,
    "class_DOUBTFUL": 0,
    "class_LOSS": 0,
    "bucket_M0": 1,
    "bucket_M1": 1,
    "bucket_M2": 1,
    "bucket_M3": 0,
    "bucket_M4": 1,
    "bucket_M5": 0,
    "bucket_M6": 0,
    "bucket_M7+": 0,
    "npl_loans": 1,
}


def test_a_clean_snapshot_gives_its_counts_by_class_and_bucket(spark: SparkSession) -> None:
    assert validate_snapshot(snapshot(spark, CLEAN)) == EXPECTED


def test_checks_observed_while_settling_count_the_same_as_a_pass_of_their_own(spark: SparkSession) -> None:
    checks = Observation("snapshot_checks_test")
    settled = settle(snapshot(spark, CLEAN).observe(checks, *snapshot_checks()))
    assert validate_snapshot(settled, checks.get) == EXPECTED


def test_a_loan_twice_stops_the_run(spark: SparkSession) -> None:
    # L1 three times and L2 twice: three rows too many.
    rows = [*CLEAN, CLEAN[0], CLEAN[0], CLEAN[1]]
    with pytest.raises(DataQualityError, match=r"^loan_snapshot: 3 duplicate loan rows$"):
        validate_snapshot(snapshot(spark, rows))


def test_values_out_of_contract_stop_the_run_each_named(spark: SparkSession) -> None:
    rows = [
        *CLEAN,
        ("L5", "WATCH", "M0", 0, "1.00", False),  # not one of the five classes
        ("L6", None, "M0", 0, "1.00", False),  # no class
        ("L7", "NORMAL", "M9", 0, "1.00", False),  # no such bucket
        ("L8", "NORMAL", "M0", -1, "1.00", False),  # dpd below zero
        ("L9", "NORMAL", "M0", None, "1.00", False),  # no dpd
        ("L10", "NORMAL", "M0", 0, "-0.01", False),  # a negative balance
    ]
    with pytest.raises(DataQualityError) as refused:
        validate_snapshot(snapshot(spark, rows))
    assert str(refused.value) == (
        "loan_snapshot: 2 rows with class out of contract; 1 rows with bucket out of contract; "
        "2 rows with dpd out of contract; 1 rows with balance out of contract"
    )
