"""Small builders shared by the tests."""

from __future__ import annotations

import datetime as dt

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from schemas.base import Table

AS_OF = dt.date(2026, 6, 15)


def text_frame(spark: SparkSession, table: Table, rows: list[dict[str, str | None]]) -> DataFrame:
    """Landing rows as a bank's CSV delivers them: every column text, missing keys null."""
    schema = T.StructType([T.StructField(c, T.StringType()) for c in table.names])
    return spark.createDataFrame([tuple(r.get(c) for c in table.names) for r in rows], schema)
