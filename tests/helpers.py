"""Small builders shared by the tests."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path
from typing import Any

import yaml
from deltalake import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from schemas.base import Table

AS_OF = dt.date(2026, 6, 15)


def text_frame(spark: SparkSession, table: Table, rows: list[dict[str, str | None]]) -> DataFrame:
    """Landing rows as a bank's CSV delivers them: every column text, missing keys null."""
    schema = T.StructType([T.StructField(c, T.StringType()) for c in table.names])
    return spark.createDataFrame([tuple(r.get(c) for c in table.names) for r in rows], schema)


def ledger(lake: Path) -> list[dict[str, Any]]:
    """Every run_ledger row, read with delta-rs (the API's reader), table_versions as a dict."""
    rows = DeltaTable(str(lake / "run_ledger")).to_pyarrow_table().to_pylist()
    for row in rows:
        row["table_versions"] = dict(row["table_versions"] or [])
    return rows


def serving(lake: Path) -> dict[dt.date, dict[str, Any]]:
    """Each business date's serving run: its SUCCEEDED run that finished last."""
    best: dict[dt.date, dict[str, Any]] = {}
    for row in ledger(lake):
        held = best.get(row["as_of_date"])
        if row["status"] == "SUCCEEDED" and (held is None or row["finished_at"] > held["finished_at"]):
            best[row["as_of_date"]] = row
    return best


def conf_copy(conf_dir: Path, target: Path, **operations: Any) -> Path:
    """A copy of the configuration with operations.yaml settings replaced (`section__key=value`).

    The CLI run in the suite's own process keeps its CPU priority (`process.niceness` 0): a lowered
    priority cannot be raised back, and it would hold for the rest of the session.
    """
    shutil.copytree(conf_dir, target)
    ops = yaml.safe_load((target / "operations.yaml").read_text(encoding="utf-8"))
    for dotted, value in {"process__niceness": 0, **operations}.items():
        section, key = dotted.split("__")
        ops.setdefault(section, {})[key] = value
    (target / "operations.yaml").write_text(yaml.safe_dump(ops), encoding="utf-8")
    return target
