"""Rows the driver builds (the run ledger's, the resolved settings, allocation quotas) handed to
Spark through Arrow: the same rows and schema Spark's own path from Python rows gives."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import types as T

from jobs.spark import local_frame

SCHEMA = T.StructType(
    [
        T.StructField("run_id", T.StringType(), nullable=False),
        T.StructField("as_of_date", T.DateType()),
        T.StructField("started_at", T.TimestampType()),
        T.StructField("amount", T.DecimalType(18, 2)),
        T.StructField("counts", T.MapType(T.StringType(), T.LongType(), valueContainsNull=False), nullable=False),
        T.StructField("codes", T.ArrayType(T.StringType(), containsNull=False)),
        T.StructField("flag", T.BooleanType()),
        T.StructField("days", T.IntegerType()),
    ]
)

ROWS = [
    # A time with microseconds, in UTC as the session keeps it; a map of counts; the largest amount.
    (
        "R1",
        dt.date(2026, 10, 31),
        dt.datetime(2026, 12, 6, 23, 59, 59, 999999),
        Decimal("9999999999999999.99"),
        {"loans": 3, "schedule": 0},
        ["A", "B"],
        True,
        -1,
    ),
    # Every nullable column null, an empty map.
    ("R2", None, None, None, {}, None, None, None),
]


def test_rows_and_schema_equal_sparks_own_path_from_python_rows(spark: SparkSession) -> None:
    through_arrow = local_frame(spark, ROWS, SCHEMA)
    from_rows = spark.createDataFrame(ROWS, SCHEMA)
    assert through_arrow.schema == from_rows.schema == SCHEMA
    assert sorted(through_arrow.collect()) == sorted(from_rows.collect())
    first = through_arrow.where("run_id = 'R1'").first()
    assert first is not None
    assert first["started_at"] == dt.datetime(2026, 12, 6, 23, 59, 59, 999999)
    assert first["counts"] == {"loans": 3, "schedule": 0}


def test_schema_as_ddl_text_and_no_rows(spark: SparkSession) -> None:
    frame = local_frame(
        spark, [(dt.date(2026, 9, 1), dt.date(2026, 9, 30), True)], "month date, period_end date, settled boolean"
    )
    assert frame.schema.simpleString() == "struct<month:date,period_end:date,settled:boolean>"
    assert [tuple(r) for r in frame.collect()] == [(dt.date(2026, 9, 1), dt.date(2026, 9, 30), True)]
    empty = local_frame(spark, [], SCHEMA)
    assert empty.schema == SCHEMA
    assert empty.count() == 0


def test_a_value_outside_the_schema_is_refused_on_the_driver(spark: SparkSession) -> None:
    # A null where the schema says never, and text where a number belongs: refused before any row
    # reaches Spark, as Spark's own check of Python rows refuses them (pyarrow's errors are
    # ValueError and TypeError).
    with pytest.raises((ValueError, TypeError)):
        local_frame(spark, [(None, None, None, None, {}, None, None, None)], SCHEMA)
    with pytest.raises((ValueError, TypeError)):
        local_frame(spark, [("R3", None, None, None, {}, None, None, "ten")], SCHEMA)
    with pytest.raises(ValueError):
        local_frame(spark, [("R4", None)], SCHEMA)  # a row shorter than the schema
