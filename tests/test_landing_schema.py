"""A landing Parquet file's schema read from its footer: exactly the schema Spark infers, or none
(and Spark infers it, as before). Each type is written by pyarrow, as banks' extracts often are."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import SparkSession

from jobs.io import find_landing, parquet_schema, read_landing
from schemas.landing import PRODUCTS

MOMENT = dt.datetime(2026, 10, 31, 23, 59, 59, 123000, tzinfo=dt.UTC)

# (name, values, pyarrow type, write options): every type the footer decides, and the ways a
# writer stores them (decimals as integers; a dictionary-encoded string is still a string).
KNOWN: list[tuple[str, list[Any], pa.DataType, dict[str, Any]]] = [
    ("boolean", [True, None], pa.bool_(), {}),
    ("int8", [-128, None], pa.int8(), {}),
    ("int16", [-32768, None], pa.int16(), {}),
    ("int32", [-(2**31), None], pa.int32(), {}),
    ("int64", [-(2**63), None], pa.int64(), {}),
    ("float32", [1.5, None], pa.float32(), {}),
    ("float64", [1e300, None], pa.float64(), {}),
    ("date", [dt.date(1, 1, 1), dt.date(9999, 12, 31)], pa.date32(), {}),
    ("string", ["贷后", None], pa.string(), {}),
    ("large_string", ["贷后", None], pa.large_string(), {}),
    ("dictionary", ["A", "B"], pa.dictionary(pa.int32(), pa.string()), {}),
    ("decimal_fixed", [Decimal("9999999999999999.99"), None], pa.decimal128(18, 2), {}),
    ("decimal_38", [Decimal("1.0000000001"), None], pa.decimal128(38, 10), {}),
    ("decimal_int32", [Decimal("-9999999.99"), None], pa.decimal128(9, 2), {"store_decimal_as_integer": True}),
    ("decimal_int64", [Decimal("1.000001"), None], pa.decimal128(18, 6), {"store_decimal_as_integer": True}),
    ("timestamp_utc_ms", [MOMENT, None], pa.timestamp("ms", tz="UTC"), {}),
    ("timestamp_shanghai_us", [MOMENT, None], pa.timestamp("us", tz="Asia/Shanghai"), {}),
    # Stored as a plain INT64 (the Arrow type is only in Arrow's own metadata, which Spark ignores).
    ("duration", [dt.timedelta(seconds=3), None], pa.duration("s"), {}),
]

# Types whose Spark type depends on Spark's settings or the file's writer, or that Spark refuses.
LEFT_TO_SPARK: list[tuple[str, list[Any], pa.DataType, dict[str, Any]]] = [
    ("uint8", [255, None], pa.uint8(), {}),
    ("uint32", [2**32 - 1, None], pa.uint32(), {}),
    ("uint64", [2**64 - 1, None], pa.uint64(), {}),
    ("timestamp_naive", [MOMENT.replace(tzinfo=None), None], pa.timestamp("us"), {}),
    ("timestamp_nanos", [MOMENT, None], pa.timestamp("ns", tz="UTC"), {}),
    ("timestamp_int96", [MOMENT, None], pa.timestamp("us", tz="UTC"), {"use_deprecated_int96_timestamps": True}),
    ("binary", [b"\xff", None], pa.binary(), {}),
    ("fixed_binary", [b"ab", None], pa.binary(2), {}),
    ("float16", [None, None], pa.float16(), {}),
    ("decimal_40", [Decimal("1.5"), None], pa.decimal256(40, 1), {}),
    ("time", [dt.time(1, 2, 3), None], pa.time64("us"), {}),
    ("list", [[1, 2], None], pa.list_(pa.int32()), {}),
    ("struct", [{"x": 1}, None], pa.struct([("x", pa.int32())]), {}),
    ("map", [[("k", 1)], None], pa.map_(pa.string(), pa.int32()), {}),
    # A column of nulls only, typeless (Spark reads it as int).
    ("null", [None, None], pa.null(), {}),
]


def write(path: Path, name: str, values: list[Any], kind: pa.DataType, options: dict[str, Any]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    table = pa.table({"product_code": pa.array(["P1", "P2"]), name: pa.array(values, kind)})
    pq.write_table(table, path / "part-0.parquet", **options)
    return path / "part-0.parquet"


def footer_schema(path: Path) -> Any:
    metadata = pq.read_metadata(path)
    return parquet_schema(metadata, metadata.schema.to_arrow_schema().names)


@pytest.mark.parametrize(("name", "values", "kind", "options"), KNOWN, ids=[k[0] for k in KNOWN])
def test_a_type_the_footer_decides_gives_sparks_own_schema_and_rows(
    spark: SparkSession, tmp_path: Path, name: str, values: list[Any], kind: pa.DataType, options: dict[str, Any]
) -> None:
    path = write(tmp_path, name, values, kind, options)
    given = footer_schema(path)
    inferred = spark.read.parquet(str(path))
    assert given is not None
    assert given == inferred.schema
    assert spark.read.schema(given).parquet(str(path)).collect() == inferred.collect()


@pytest.mark.parametrize(("name", "values", "kind", "options"), LEFT_TO_SPARK, ids=[k[0] for k in LEFT_TO_SPARK])
def test_any_other_type_leaves_the_schema_to_spark(
    tmp_path: Path, name: str, values: list[Any], kind: pa.DataType, options: dict[str, Any]
) -> None:
    assert footer_schema(write(tmp_path, name, values, kind, options)) is None


def test_a_file_spark_wrote_keeps_sparks_own_schema(spark: SparkSession, tmp_path: Path) -> None:
    # Spark writes its schema into the footer and prefers it when reading (a char type, metadata).
    spark.sql("SELECT 'P1' AS product_code, 1 AS n").coalesce(1).write.parquet(str(tmp_path / "out"))
    (written,) = sorted((tmp_path / "out").glob("*.parquet"))
    assert footer_schema(written) is None


def test_files_of_one_table_that_differ_leave_the_schema_to_spark(spark: SparkSession, tmp_path: Path) -> None:
    products = tmp_path / "landing" / PRODUCTS.name
    columns = {
        "product_code": ["P1"],
        "name": ["消费贷"],
        "category": ["CONSUMER"],
        "low_risk": [False],
        "refinance_designed": pa.array([None], pa.bool_()),
    }
    products.mkdir(parents=True)
    pq.write_table(pa.table(columns), products / "a.parquet")
    found = find_landing(tmp_path / "landing", PRODUCTS)
    assert found is not None and found.schema == spark.read.parquet(str(products)).schema

    # A second file where low_risk is text: Spark would take the first file's schema and fail on
    # the second; given none, it still does exactly that.
    pq.write_table(pa.table({**columns, "low_risk": ["N"]}), products / "b.parquet")
    found = find_landing(tmp_path / "landing", PRODUCTS)
    assert found is not None and found.schema is None
    with pytest.raises(Exception, match=r"FAILED_READ_FILE"):
        read_landing(spark, tmp_path / "landing", PRODUCTS).collect()
