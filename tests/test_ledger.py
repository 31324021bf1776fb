"""The run ledger as the night reads it (delta-rs): the rows Spark wrote, as Spark would read them,
and the run each date builds on."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

from jobs import io
from schemas.lake import RUN_LEDGER

SEP, OCT, NOV = dt.date(2026, 9, 30), dt.date(2026, 10, 31), dt.date(2026, 11, 30)


def entry(run_id: str, as_of: dt.date, status: str, finished: dt.datetime | None, **versions: int) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "as_of_date": as_of,
        "status": status,
        "started_at": dt.datetime(2026, 12, 1, 1, 0, 0, 123456),
        "finished_at": finished,
        "input_rows": {"loans": 3},
        "table_versions": versions,
        "config_hash": "c" * 64,
        "code_version": "test",
        "previous_as_of_date": None,
    }


def test_the_ledger_read_with_delta_rs_equals_sparks_read_and_picks_the_last_finished_run(
    spark: SparkSession, tmp_path: Path
) -> None:
    lake = tmp_path / "lake"
    assert io.ledger_rows(lake) == [] and io.latest_succeeded(lake, OCT) is None
    io.append_ledger_rows(
        spark,
        lake,
        [
            entry("sep-1", SEP, "RUNNING", None),
            entry("sep-1", SEP, "SUCCEEDED", dt.datetime(2026, 12, 1, 2, 0), loan_snapshot=1),
            # A rerun of the same date that finished later serves it, though it started no later.
            entry("sep-2", SEP, "SUCCEEDED", dt.datetime(2026, 12, 1, 3, 0, 0, 1), loan_snapshot=4),
            entry("oct-1", OCT, "FAILED", dt.datetime(2026, 12, 1, 4, 0)),
        ],
    )
    io.append_ledger(spark, lake, entry("oct-2", OCT, "RUNNING", None))

    by_spark = [r.asDict(recursive=True) for r in io.read_table(spark, lake, RUN_LEDGER).collect()]
    key = lambda row: (row["run_id"], row["status"])  # noqa: E731
    assert sorted(io.ledger_rows(lake), key=key) == sorted(by_spark, key=key)
    assert len(by_spark) == 5

    # Before September's date nothing ran; October's date builds on September's last finished
    # run; so does November's, since October never succeeded.
    assert io.latest_succeeded(lake, SEP) is None
    assert io.latest_succeeded(lake, OCT) == io.SucceededRun("sep-2", SEP, {"loan_snapshot": 4})
    assert io.latest_succeeded(lake, NOV) == io.SucceededRun("sep-2", SEP, {"loan_snapshot": 4})
    assert [r["run_id"] for r in io.serving_rows(lake)] == ["sep-2"]
    assert io.serving_rows(lake)[0]["finished_at"] == dt.datetime(2026, 12, 1, 3, 0, 0, 1)
