"""Test helpers that read and write a lake with delta-rs only, independently of api/.

The expected figures of the API tests are computed from what these helpers read: the ledger's
serving rule and the Delta versions are re-derived here, not taken from api.lake.
"""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
from deltalake import DeltaTable, write_deltalake
from pyspark.sql import types as T

from schemas.base import Table
from schemas.lake import RUN_LEDGER
from tests.helpers import serving

# The name the API tests use: each business date's serving run.
serving_runs = serving


def read_date(lake: Path, name: str, run: dict[str, Any]) -> pa.Table | None:
    """A table's rows for the run's date at the version the run recorded (None if it has none)."""
    path = lake / name
    if not (path / "_delta_log").is_dir():
        return None
    version = run["table_versions"].get(name)
    if version is None:
        return None
    table = DeltaTable(path, version=version)
    return table.to_pyarrow_table(partitions=[("as_of_date", "=", run["as_of_date"].isoformat())])


def _arrow_type(dtype: T.DataType) -> pa.DataType:
    if isinstance(dtype, T.StringType):
        return pa.string()
    if isinstance(dtype, T.IntegerType):
        return pa.int32()
    if isinstance(dtype, T.LongType):
        return pa.int64()
    if isinstance(dtype, T.BooleanType):
        return pa.bool_()
    if isinstance(dtype, T.DateType):
        return pa.date32()
    if isinstance(dtype, T.TimestampType):
        return pa.timestamp("us", tz="UTC")
    if isinstance(dtype, T.DecimalType):
        return pa.decimal128(dtype.precision, dtype.scale)
    if isinstance(dtype, T.ArrayType):
        return pa.list_(_arrow_type(dtype.elementType))
    if isinstance(dtype, T.MapType):
        return pa.map_(_arrow_type(dtype.keyType), _arrow_type(dtype.valueType))
    if isinstance(dtype, T.StructType):
        return pa.struct([pa.field(f.name, _arrow_type(f.dataType)) for f in dtype.fields])
    raise TypeError(dtype)


def contract_schema(table: Table) -> pa.Schema:
    return pa.schema([pa.field(c.name, _arrow_type(c.dtype)) for c in table.columns])


def write_date(lake: Path, table: Table, as_of: dt.date, rows: list[dict[str, Any]]) -> int:
    """Replace the date's partition of a table with `rows` (delta-rs); the new version."""
    path = lake / table.name
    data = pa.Table.from_pylist([{**r, "as_of_date": as_of} for r in rows], schema=contract_schema(table))
    if (path / "_delta_log").is_dir():
        existing = pa.schema(DeltaTable(path).schema().to_arrow())
        data = data.cast(existing)
        write_deltalake(path, data, mode="overwrite", predicate=f"as_of_date = '{as_of.isoformat()}'")
    else:
        write_deltalake(path, data, mode="overwrite", partition_by=list(table.partition_by) or None)
    return DeltaTable(path).version()


def append_ledger(lake: Path, row: dict[str, Any]) -> None:
    path = lake / RUN_LEDGER.name
    full = {c.name: row.get(c.name) for c in RUN_LEDGER.columns}
    for name in ("input_rows", "accepted_rows", "quarantined_rows", "output_rows", "table_versions", "summary"):
        full[name] = list((full[name] or {}).items())
    existing = pa.schema(DeltaTable(path).schema().to_arrow())
    data = pa.Table.from_pylist([full], schema=contract_schema(RUN_LEDGER)).cast(existing)
    write_deltalake(path, data, mode="append")


def succeed_run(lake: Path, as_of: dt.date, table_versions: dict[str, int], status: str = "SUCCEEDED") -> str:
    """Append RUNNING then `status` rows of a new run recording `table_versions`; its id."""
    run_id = f"{as_of:%Y%m%d}-{uuid.uuid4().hex[:10]}"
    now = dt.datetime.now(dt.UTC)
    base = {
        "run_id": run_id,
        "as_of_date": as_of,
        "started_at": now,
        "config_hash": "test",
        "code_version": "test",
    }
    append_ledger(lake, {**base, "status": "RUNNING"})
    append_ledger(
        lake,
        {
            **base,
            "status": status,
            "finished_at": now + dt.timedelta(seconds=1),
            "table_versions": table_versions if status == "SUCCEEDED" else {},
            "error": None if status == "SUCCEEDED" else "RuntimeError: test failure",
        },
    )
    return run_id
