"""One business date written to a lake table (io.write_date): one commit replacing the date, the
version and row count the run ledger pins, and no commit at all when there is nothing to write."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from deltalake import DeltaTable
from pyspark.sql import DataFrame, SparkSession

from jobs import io
from jobs.spark import local_frame
from schemas.lake import QUARANTINE

AS_OF = dt.date(2026, 10, 31)
MONTH_END = dt.date(2026, 9, 30)


def quarantined(spark: SparkSession, day: dt.date, count: int) -> DataFrame:
    rows = [(day, "run-1", "loans", "NULL_KEY", "NULL_KEY:loan_id", f"L{i}", "{}", f"h{i}") for i in range(count)]
    return local_frame(spark, rows, QUARANTINE.schema)


def rows_by_date(lake: Path) -> dict[dt.date, int]:
    days = DeltaTable(str(lake / QUARANTINE.name)).to_pyarrow_table(columns=["as_of_date"]).column(0).to_pylist()
    return {day: days.count(day) for day in sorted(set(days))}


def test_a_date_is_replaced_in_one_commit_and_nothing_to_write_commits_nothing(
    spark: SparkSession, tmp_path: Path
) -> None:
    # A night with nothing quarantined on a new table: the table is created (version 0), no job runs.
    assert io.write_date(spark, quarantined(spark, AS_OF, 0), tmp_path, QUARANTINE, AS_OF, empty=True) == io.Written(
        0, 0
    )
    assert DeltaTable(str(tmp_path / QUARANTINE.name)).version() == 0
    # Two dates with rows: a commit each (versions 1 and 2), the rows from the commit's metrics.
    assert io.write_date(spark, quarantined(spark, MONTH_END, 2), tmp_path, QUARANTINE, MONTH_END) == io.Written(1, 2)
    assert io.write_date(spark, quarantined(spark, AS_OF, 3), tmp_path, QUARANTINE, AS_OF) == io.Written(2, 3)
    assert io.has_date(tmp_path, QUARANTINE, AS_OF) and rows_by_date(tmp_path) == {MONTH_END: 2, AS_OF: 3}
    # Rerun with nothing to quarantine: the date's three rows must still go, in a commit of its own.
    assert io.write_date(spark, quarantined(spark, AS_OF, 0), tmp_path, QUARANTINE, AS_OF, empty=True) == io.Written(
        3, 0
    )
    assert not io.has_date(tmp_path, QUARANTINE, AS_OF) and rows_by_date(tmp_path) == {MONTH_END: 2}
    # An empty frame not known to be empty: Spark writes nothing and Delta commits nothing; the
    # version stays, and the date holds no row (no metrics to read, nothing counted).
    assert io.write_date(spark, quarantined(spark, AS_OF, 0), tmp_path, QUARANTINE, AS_OF) == io.Written(3, 0)
    assert DeltaTable(str(tmp_path / QUARANTINE.name)).version() == 3
    assert io.last_commit(tmp_path, QUARANTINE)[0] == 3
