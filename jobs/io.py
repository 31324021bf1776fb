"""All reading and writing: the landing zone, the Delta tables of the lake, the run ledger.

Landing files are checked before Spark touches them (Parquet footers, CSV headers), so that a
structurally unusable input stops the run with one line naming the file and the column, before
anything is written. A CSV file whose body is not UTF-8 throughout is read byte for byte, so that
the rows holding the bad bytes are refused one by one and the rest of the file is still used.

Lake tables are created from their contracts in `schemas/` (with table and column comments,
partitioning, and only the protocol features delta-rs reads); a business date is replaced in one
Delta commit per table (`replaceWhere`).
"""

from __future__ import annotations

import codecs
import datetime as dt
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pyarrow as pa
import pyarrow.parquet as pq
from delta.tables import DeltaTable as SparkDeltaTable
from deltalake import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from jobs.columns import sql_name, sql_string
from jobs.config import LayoutSettings, OperationsConfig
from jobs.spark import local_frame
from schemas.base import Table
from schemas.lake import RUN_LEDGER
from schemas.landing import NOT_UTF8

# delta-rs (the API's reader) must understand every table: keep to the basic protocol.
TABLE_PROPERTIES = {
    "delta.enableDeletionVectors": "false",
    "delta.columnMapping.mode": "none",
    "delta.enableChangeDataFeed": "false",
    "delta.checkpointPolicy": "classic",
}


# The Parquet writer's row-group cap in rows. Spark hands a Delta table's properties to the Parquet
# writer's Hadoop configuration, so a table property sets it for that table's writes (OPTIMIZE too).
ROW_GROUP_ROWS = "parquet.block.row.count.limit"
# The columns Delta collects per-file statistics on (instead of the first 32).
STATISTICS_COLUMNS = "delta.dataSkippingStatsColumns"


@dataclass(frozen=True)
class WriteLayout:
    """How a date's files are written, and the retention properties a new table is created with
    (conf/operations.yaml; `postloan maintain` keeps existing tables' properties in step)."""

    optimize_write: bool = True
    max_records_per_file: int = 5_000_000
    retention: Mapping[str, str] = field(default_factory=lambda: OperationsConfig().table_properties())
    sorted_row_group_rows: int = 16_384
    statistics_columns: tuple[str, ...] = LayoutSettings().statistics_columns

    @classmethod
    def from_config(cls, operations: OperationsConfig) -> WriteLayout:
        layout = operations.layout
        return cls(
            layout.optimize_write,
            layout.max_records_per_file,
            operations.table_properties(),
            layout.sorted_row_group_rows,
            layout.statistics_columns,
        )

    def managed_properties(self, table: Table) -> dict[str, str]:
        """The properties configuration decides: retention, the columns with statistics, and a
        sorted table's row-group size."""
        managed = dict(self.retention)
        statistics = [c for c in table.names if c in self.statistics_columns and c not in table.partition_by]
        if statistics:
            managed[STATISTICS_COLUMNS] = ",".join(statistics)
        if table.sort_by:
            managed[ROW_GROUP_ROWS] = str(self.sorted_row_group_rows)
        return managed

    def properties(self, table: Table) -> dict[str, str]:
        """Everything a new table is created with."""
        return {**TABLE_PROPERTIES, **self.managed_properties(table)}


# A CSV header longer than this is not a header (and reading on would load a whole file).
HEADER_BYTES = 1 << 20
# The UTF-8 scan of a CSV file reads this much at a time.
SCAN_BYTES = 1 << 22


class LandingError(RuntimeError):
    """A landing input that cannot be used at all: names the file (or folder) and the column."""

    def __init__(self, where: str | Path, message: str) -> None:
        self.where = str(where)
        super().__init__(f"{where}: {message}")


# --------------------------------------------------------------------------------------------
# Landing


@dataclass(frozen=True)
class LandingFiles:
    table: Table
    fmt: str
    files: tuple[Path, ...]
    # CSV only: each file's header line, as delivered.
    headers: tuple[str, ...] = ()
    # Parquet only: the schema Spark would infer, when the footers tell it for certain.
    schema: T.StructType | None = None


# Spark infers a Parquet table's schema with a job that reads a footer (one job per landing table,
# 5 s of a night's cold start), footers this module has read already. The types below are the
# ones whose Spark type the footer decides alone (each checked against Spark's own inference in
# tests/test_landing_schema.py); any other column (nested, unsigned, a naive or INT96 timestamp,
# plain binary), a schema Spark wrote into the file, or files that differ leave it to Spark.
_PLAIN_PARQUET_TYPES: dict[tuple[str, str], T.DataType] = {
    ("BOOLEAN", '{"Type":"None"}'): T.BooleanType(),
    ("INT32", '{"Type":"None"}'): T.IntegerType(),
    ("INT32", '{"Type":"Int","bitWidth":8,"isSigned":true}'): T.ByteType(),
    ("INT32", '{"Type":"Int","bitWidth":16,"isSigned":true}'): T.ShortType(),
    ("INT32", '{"Type":"Int","bitWidth":32,"isSigned":true}'): T.IntegerType(),
    ("INT32", '{"Type":"Date"}'): T.DateType(),
    ("INT64", '{"Type":"None"}'): T.LongType(),
    ("INT64", '{"Type":"Int","bitWidth":64,"isSigned":true}'): T.LongType(),
    ("FLOAT", '{"Type":"None"}'): T.FloatType(),
    ("DOUBLE", '{"Type":"None"}'): T.DoubleType(),
    ("BYTE_ARRAY", '{"Type":"String"}'): T.StringType(),
}
# Spark's key for the schema it writes into its own Parquet files, which its inference prefers.
_SPARK_SCHEMA_KEY = b"org.apache.spark.sql.parquet.row.metadata"


def _decimal_digits(physical: str, length: int) -> int:
    """The most decimal digits Spark reads from a Parquet decimal of this physical type."""
    if physical == "INT32":
        return 9
    if physical == "INT64":
        return 18
    if physical == "FIXED_LEN_BYTE_ARRAY":
        return len(str(2 ** (8 * length - 1) - 1)) - 1 if length > 0 else 0
    return 38 if physical == "BYTE_ARRAY" else 0


def _spark_type(column: pq.ColumnSchema) -> T.DataType | None:
    logical = column.logical_type
    if logical.type == "TIMESTAMP":
        stamp = json.loads(logical.to_json())
        utc = column.physical_type == "INT64" and stamp.get("isAdjustedToUTC") is True
        return T.TimestampType() if utc and stamp.get("timeUnit") in ("milliseconds", "microseconds") else None
    if logical.type == "DECIMAL":
        precision, scale = column.precision, column.scale
        if 0 < precision <= min(38, _decimal_digits(column.physical_type, column.length)) and 0 <= scale <= precision:
            return T.DecimalType(precision, scale)
        return None
    return _PLAIN_PARQUET_TYPES.get((column.physical_type, logical.to_json()))


def parquet_schema(metadata: pq.FileMetaData, names: list[str]) -> T.StructType | None:
    """The schema Spark infers from a Parquet file with this footer (`names`: its top-level
    fields), or None where only Spark can tell."""
    if metadata.metadata and _SPARK_SCHEMA_KEY in metadata.metadata:
        return None
    leaves = [metadata.schema.column(i) for i in range(metadata.num_columns)]
    if [c.path for c in leaves] != names or len({n.lower() for n in names}) != len(names):
        return None  # nested fields, or names Spark's case-insensitive reading confuses
    fields = []
    for column in leaves:
        spark_type = _spark_type(column)
        if spark_type is None:
            return None
        fields.append(T.StructField(column.name, spark_type, nullable=True))
    return T.StructType(fields)


def find_landing(landing: Path, table: Table) -> LandingFiles | None:
    """The files of one landing table, checked for structure; None for an absent optional table."""
    folder = landing / table.name
    if not folder.is_dir():
        if table.optional:
            return None
        raise LandingError(folder, f"missing table folder (required landing table {table.name})")
    parquet = sorted(p for p in folder.rglob("*.parquet") if p.is_file())
    csv = sorted(p for p in folder.rglob("*.csv") if p.is_file())
    if parquet and csv:
        raise LandingError(folder, "mixes Parquet and CSV files; deliver one format per table")
    if not parquet and not csv:
        raise LandingError(folder, "no .parquet or .csv files")
    required = [c.name for c in table.columns]
    if parquet:
        schemas = []
        for path in parquet:
            try:
                metadata = pq.read_metadata(path)
                names = metadata.schema.to_arrow_schema().names
            except Exception as exc:  # pyarrow raises several types for a broken footer
                raise LandingError(path, f"unreadable Parquet file ({type(exc).__name__})") from None
            for column in required:
                if column not in names:
                    raise LandingError(path, f"missing column {column}")
            schemas.append(parquet_schema(metadata, names))
        agreed = schemas[0] if all(s == schemas[0] for s in schemas) else None
        return LandingFiles(table, "parquet", tuple(parquet), schema=agreed)
    headers: list[str] = []
    for path in csv:
        try:
            # The header line alone: bad bytes further down are row faults, refused row by row.
            with path.open("rb") as handle:
                header = handle.readline(HEADER_BYTES).decode("utf-8-sig").rstrip("\r\n")
        except (UnicodeDecodeError, OSError) as exc:
            raise LandingError(path, f"unreadable CSV header ({type(exc).__name__})") from None
        columns = [h.strip().strip('"') for h in header.split(",")]
        for column in required:
            if column not in columns:
                raise LandingError(path, f"missing column {column}")
            if columns.count(column) > 1:
                raise LandingError(path, f"column {column} appears {columns.count(column)} times")
        headers.append(header)
    return LandingFiles(table, "csv", tuple(csv), tuple(headers))


def read_landing(spark: SparkSession, landing: Path, table: Table) -> DataFrame:
    """Raw landing rows: the contract's columns as delivered (CSV: all text), nothing dropped."""
    found = find_landing(landing, table)
    if found is None:
        empty = T.StructType([T.StructField(c.name, T.StringType()) for c in table.columns])
        return local_frame(spark, [], empty)
    if found.fmt == "parquet":
        reader = spark.read if found.schema is None else spark.read.schema(found.schema)
        return reader.parquet(*[str(p) for p in found.files]).select(*table.names).transform(check_utf8(table))
    # Spark names the columns of one read after a single header and takes every file's fields by
    # position: files whose headers differ are read apart, then matched by name.
    groups: dict[tuple[str, bool], list[Path]] = {}
    for path, header in zip(found.files, found.headers, strict=True):
        groups.setdefault((header, is_utf8(path)), []).append(path)
    frames = []
    for (_, utf8), paths in groups.items():
        if utf8:
            frames.append(_read_csv(spark, paths, "UTF-8").select(*table.names))
        else:
            # One character per byte: the CSV structure (commas, quotes, line ends) is ASCII, so
            # rows and fields split exactly as in UTF-8, and every field keeps its bytes.
            frames.append(_read_csv(spark, paths, "ISO-8859-1").transform(decode_utf8(table)))
    if any(NOT_UTF8 in f.columns for f in frames):
        unchecked = F.lit(None).cast(T.ArrayType(T.StringType())).alias(NOT_UTF8)
        frames = [f if NOT_UTF8 in f.columns else f.select(*table.names, unchecked) for f in frames]
    frame = frames[0]
    for other in frames[1:]:
        frame = frame.unionByName(other)
    return frame


def _read_csv(spark: SparkSession, files: list[Path], encoding: str) -> DataFrame:
    return (
        spark.read.option("header", "true")
        .option("encoding", encoding)
        .option("mode", "PERMISSIVE")
        .option("inferSchema", "false")
        .csv([str(p) for p in files])
    )


def is_utf8(path: Path) -> bool:
    """Whether a whole file is UTF-8, read in chunks (memory stays flat on big extracts)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    with path.open("rb") as handle:
        try:
            while chunk := handle.read(SCAN_BYTES):
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return False
    return True


# One UTF-8 character beyond ASCII (Unicode's table of well-formed byte sequences: no overlong
# forms, no surrogates, nothing above U+10FFFF), matched in text read as ISO-8859-1, where each
# character is one byte.
UTF8_MULTIBYTE = (
    r"[\xC2-\xDF][\x80-\xBF]|\xE0[\xA0-\xBF][\x80-\xBF]|[\xE1-\xEC\xEE\xEF][\x80-\xBF]{2}"
    r"|\xED[\x80-\x9F][\x80-\xBF]|\xF0[\x90-\xBF][\x80-\xBF]{2}|[\xF1-\xF3][\x80-\xBF]{3}"
    r"|\xF4[\x80-\x8F][\x80-\xBF]{2}"
)
# Cuts such text into characters and ASCII runs, leaving a byte that starts no character alone.
UTF8_PIECES = rf"({UTF8_MULTIBYTE}|[\x00-\x7F]+|[\x80-\xFF])"


# The checks below are built as SQL text, one expression per column: built from Column objects
# (3-4 Py4J round trips per function) reading the fifteen landing tables took 22,000 round trips,
# 3.5 s of the driver's time every night before any row was read; now 1,100-3,000 and 1.5 s.


def shown_safely(latin1: str) -> str:
    """Bytes (SQL text of a value read as ISO-8859-1) that are not all UTF-8, as text: the
    characters decoded, each stray byte as `\\xNN` and a delivered backslash doubled, so the two
    cannot be confused. A piece of one high byte is a stray: every character beyond ASCII is 2-4
    bytes. The literals are raw (r'...'): each backslash reaches Spark as written."""
    return (
        f"array_join(transform(regexp_extract_all({latin1}, r'{UTF8_PIECES}', 1), piece -> "
        "CASE WHEN length(piece) = 1 AND piece RLIKE r'[\\x80-\\xFF]' "
        "THEN concat(r'\\x', lower(hex(encode(piece, 'ISO-8859-1')))) "
        "ELSE replace(CAST(encode(piece, 'ISO-8859-1') AS STRING), r'\\', r'\\\\') END), '')"
    )


def _named_not_utf8(table: Table, texts: Mapping[str, tuple[str, str]]) -> list[str]:
    """The table's columns, each text in `texts` (SQL of its value as Spark's text, and of its
    bytes read as ISO-8859-1) kept when its bytes are UTF-8 and shown safely otherwise, and
    NOT_UTF8 naming the columns that are not (null when all are: a clean row builds no list)."""
    valid = {name: f"coalesce(is_valid_utf8({text}), true)" for name, (text, _) in texts.items()}
    fields = [
        f"CASE WHEN {valid[name]} THEN {texts[name][0]} ELSE {shown_safely(texts[name][1])} END AS {sql_name(name)}"
        if name in texts
        else sql_name(name)
        for name in table.names
    ]
    if not texts:
        return fields
    named = ", ".join(f"CASE WHEN NOT {valid[name]} THEN {sql_string(name)} END" for name in texts)
    clean = " AND ".join(valid.values())
    return [
        *fields,
        f"CASE WHEN NOT ({clean}) THEN filter(array({named}), n -> n IS NOT NULL) END AS {sql_name(NOT_UTF8)}",
    ]


def decode_utf8(table: Table) -> Callable[[DataFrame], DataFrame]:
    """Rows read as ISO-8859-1 back to text: a field whose bytes are UTF-8 is decoded exactly; one
    whose bytes are not is shown safely and named in NOT_UTF8, for ingest to refuse the row."""

    def transform(frame: DataFrame) -> DataFrame:
        # Binary to string keeps the bytes as they are, for Spark's own UTF-8 check.
        texts = {
            name: (f"CAST(encode({sql_name(name)}, 'ISO-8859-1') AS STRING)", sql_name(name)) for name in table.names
        }
        return frame.selectExpr(*_named_not_utf8(table, texts))

    return transform


def check_utf8(table: Table) -> Callable[[DataFrame], DataFrame]:
    """Parquet text whose bytes are not UTF-8, named in NOT_UTF8 and shown safely, as in CSV.

    Parquet strings are UTF-8 by specification, but a writer that does not check can deliver
    other bytes, and Spark carries them through unchecked: into the lake, where a reader that
    checks (delta-rs, so the API) then refuses the whole date. Only rows with such a value build
    the list, so a clean extract costs one byte scan per text value."""

    def transform(frame: DataFrame) -> DataFrame:
        texts = {
            f.name: (sql_name(f.name), f"decode(CAST({sql_name(f.name)} AS BINARY), 'ISO-8859-1')")
            for f in frame.schema.fields
            if isinstance(f.dataType, T.StringType)
        }
        return frame.selectExpr(*_named_not_utf8(table, texts))

    return transform


def count_landing(spark: SparkSession, landing: Path, table: Table, frame: DataFrame) -> int:
    """Rows delivered, counted independently of validation (Parquet: from the file footers)."""
    found = find_landing(landing, table)
    if found is None:
        return 0
    if found.fmt == "parquet":
        return sum(pq.read_metadata(p).num_rows for p in found.files)
    return frame.count()


# --------------------------------------------------------------------------------------------
# Lake tables


def table_path(lake: Path, table: Table) -> str:
    return str((lake / table.name).resolve())


def create_table(spark: SparkSession, lake: Path, table: Table, layout: WriteLayout | None = None) -> None:
    """Create the Delta table from its contract if it does not exist (comments included)."""
    properties = (layout or WriteLayout()).properties(table)
    columns = ",\n  ".join(
        f"{sql_name(c.name)} {c.dtype.simpleString()}{'' if c.nullable else ' NOT NULL'} COMMENT {sql_string(c.comment)}"
        for c in table.columns
    )
    partition = f"PARTITIONED BY ({', '.join(table.partition_by)})" if table.partition_by else ""
    props = ", ".join(f"{sql_string(k)} = {sql_string(v)}" for k, v in properties.items())
    spark.sql(
        f"CREATE TABLE IF NOT EXISTS delta.`{table_path(lake, table)}` (\n  {columns}\n) USING delta "
        f"{partition} COMMENT {sql_string(table.comment)} TBLPROPERTIES ({props})"
    )


def conform(frame: DataFrame, table: Table) -> DataFrame:
    """Select the contract's columns in order, cast to the contract's types."""
    missing = [c for c in table.names if c not in frame.columns]
    if missing:
        raise ValueError(f"{table.name}: the stage did not produce {', '.join(missing)}")
    types = {f.name: f.dataType.simpleString() for f in frame.schema.fields}

    def fit(c: Any) -> Any:
        # Same type up to nullability of elements (array<string>): nothing to cast.
        same = types[c.name] == c.dtype.simpleString()
        return F.col(c.name) if same else F.col(c.name).cast(c.dtype).alias(c.name)

    return frame.select(*[fit(c) for c in table.columns])


@dataclass(frozen=True)
class Written:
    """One date written to a table: the commit's version and the rows it holds for the date."""

    version: int
    rows: int


def write_date(
    spark: SparkSession,
    frame: DataFrame,
    lake: Path,
    table: Table,
    as_of: dt.date,
    layout: WriteLayout | None = None,
    *,
    empty: bool = False,
) -> Written:
    """Replace the business date's rows of a date-partitioned table in one commit.

    With optimized writes, one shuffle bins the date's rows into a few files of about the bin
    size; without, each upstream partition (up to spark.sql.shuffle.partitions) writes a file.
    The rows come from the commit's own metrics (what the write put in the new files), so the
    ledger's counts cost no second read of the table; the run holds the lake lock, so the latest
    commit is this one. `empty` says the caller knows the frame has no rows (the night's
    quarantine when every landing row was accepted): if the table holds none of the date either,
    there is nothing to replace and no Spark job runs.
    """
    layout = layout or WriteLayout()
    create_table(spark, lake, table, layout)
    before = current_version(lake, table)
    if empty and not has_date(lake, table, as_of):
        return Written(version=before, rows=0)
    date_rows = conform(frame, table)
    if table.sort_by:
        # Each file a contiguous range of keys, sorted, in small row groups (the table property):
        # a reader after one key skips every other row group by its min/max. An optimized write
        # would shuffle the rows again and undo the order; the range partitions are its bins here.
        date_rows = date_rows.repartitionByRange(*table.sort_by).sortWithinPartitions(*table.sort_by)
    (
        date_rows.write.format("delta")
        .mode("overwrite")
        .option("replaceWhere", f"as_of_date = '{as_of.isoformat()}'")
        .option("optimizeWrite", str(layout.optimize_write and not table.sort_by).lower())
        .option("maxRecordsPerFile", str(layout.max_records_per_file))
        .save(table_path(lake, table))
    )
    version, metrics = last_commit(lake, table)
    if version == before:
        # Delta commits nothing when there is nothing to add and no row of the date to remove.
        return Written(version=version, rows=0)
    written = metrics.get("numOutputRows")
    if written is None:
        # Metrics switched off (spark.databricks.delta.history.metricsEnabled): count the date.
        rows = read_table(spark, lake, table).where(F.col("as_of_date") == F.lit(as_of)).count()
    else:
        rows = int(written)
    return Written(version=version, rows=rows)


def last_commit(lake: Path, table: Table) -> tuple[int, dict[str, str]]:
    """The latest commit's version and operation metrics, read from the log with delta-rs (10 ms;
    Spark's DESCRIBE HISTORY took a query of its own, 0.3-0.5 s of the driver's time a table)."""
    latest = DeltaTable(table_path(lake, table)).history(1)[0]
    return int(latest["version"]), {str(k): str(v) for k, v in (latest.get("operationMetrics") or {}).items()}


def has_date(lake: Path, table: Table, as_of: dt.date) -> bool:
    """Whether the table's current version holds any file of the business date."""
    return {"as_of_date": as_of.isoformat()} in DeltaTable(table_path(lake, table)).partitions()


def read_table(spark: SparkSession, lake: Path, table: Table, version: int | None = None) -> DataFrame:
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    return reader.load(table_path(lake, table))


def table_exists(lake: Path, table: Table) -> bool:
    return (lake / table.name / "_delta_log").is_dir()


# --------------------------------------------------------------------------------------------
# Run ledger


def append_ledger(spark: SparkSession, lake: Path, entry: dict[str, Any], layout: WriteLayout | None = None) -> None:
    """Append one state change of a run (RUNNING, SUCCEEDED, FAILED)."""
    append_ledger_rows(spark, lake, [entry], layout)


def append_ledger_rows(
    spark: SparkSession, lake: Path, entries: list[dict[str, Any]], layout: WriteLayout | None = None
) -> None:
    """Append state changes in one commit: readers see all of them or none."""
    create_table(spark, lake, RUN_LEDGER, layout)
    rows = []
    for entry in entries:
        row = {c.name: entry.get(c.name) for c in RUN_LEDGER.columns}
        for name in ("input_rows", "accepted_rows", "quarantined_rows", "output_rows", "table_versions", "summary"):
            row[name] = {k: int(v) for k, v in (row[name] or {}).items()}
        rows.append(tuple(row.values()))
    frame = local_frame(spark, rows, RUN_LEDGER.schema)
    frame.write.format("delta").mode("append").save(table_path(lake, RUN_LEDGER))


def fail_abandoned(spark: SparkSession, lake: Path, run_id: str, layout: WriteLayout | None = None) -> None:
    """Close the RUNNING row a killed run left behind (its lock was taken over), so the ledger
    tells the whole story; nothing when the lock was a maintenance's (it has no ledger rows)."""
    rows = [r for r in ledger_rows(lake) if r["run_id"] == run_id]
    if not rows or any(r["status"] != "RUNNING" for r in rows):
        return
    first = rows[0]
    append_ledger(
        spark,
        lake,
        {
            **{k: first[k] for k in ("run_id", "as_of_date", "started_at", "config_hash", "code_version")},
            "status": "FAILED",
            "finished_at": dt.datetime.now(dt.UTC).replace(tzinfo=None),
            "error": "abandoned: the run's process ended before it finished",
        },
        layout,
    )


@dataclass(frozen=True)
class SucceededRun:
    run_id: str
    as_of_date: dt.date
    table_versions: dict[str, int]


def latest_succeeded(lake: Path, before: dt.date) -> SucceededRun | None:
    """The most recent SUCCEEDED run for a business date earlier than `before` (the state a run
    builds on); among reruns of that date, the last to finish."""
    earlier = [r for r in succeeded_runs(lake) if r.as_of_date < before]
    return earlier[-1] if earlier else None


def succeeded_runs(lake: Path) -> list[SucceededRun]:
    """The run that serves each business date: its latest SUCCEEDED run."""
    return [SucceededRun(r["run_id"], r["as_of_date"], dict(r["table_versions"])) for r in serving_rows(lake)]


def serving_rows(lake: Path) -> list[dict[str, Any]]:
    """The SUCCEEDED ledger row of the run serving each business date, oldest date first."""
    latest: dict[dt.date, dict[str, Any]] = {}
    for row in ledger_rows(lake):
        if row["status"] != "SUCCEEDED":
            continue
        held = latest.get(row["as_of_date"])
        if held is None or row["finished_at"] > held["finished_at"]:
            latest[row["as_of_date"]] = row
    return [r for _, r in sorted(latest.items())]


def history(spark: SparkSession, lake: Path, table: Table, start: dt.date, end: dt.date) -> DataFrame | None:
    """A date-partitioned table's rows for each business date in [start, end) that a SUCCEEDED
    run serves, each date read at the version its run wrote (a later failed rerun is invisible)."""
    runs = [r for r in succeeded_runs(lake) if start <= r.as_of_date < end and table.name in r.table_versions]
    by_version: dict[int, list[dt.date]] = {}
    for run in runs:
        by_version.setdefault(run.table_versions[table.name], []).append(run.as_of_date)
    frames = [
        read_table(spark, lake, table, version).where(F.col("as_of_date").isin(*dates))
        for version, dates in sorted(by_version.items())
    ]
    if not frames:
        return None
    result = frames[0]
    for frame in frames[1:]:
        result = result.unionByName(frame)
    return result


def ledger_rows(lake: Path) -> list[dict[str, Any]]:
    """Every ledger row, as Spark would give it: times naive UTC, maps as dicts.

    Read with delta-rs: the ledger is a few hundred rows, which Spark read at the start of every
    night through Delta's cold snapshot and three jobs, 6-7 s before the first landing row."""
    if not table_exists(lake, RUN_LEDGER):
        return []
    ledger = DeltaTable(table_path(lake, RUN_LEDGER)).to_pyarrow_table(columns=RUN_LEDGER.names)
    return [
        {name: _naive_utc(value) for name, value in row.items()} for row in ledger.to_pylist(maps_as_pydicts="strict")
    ]


def _naive_utc(value: Any) -> Any:
    # The ledger's times are written naive UTC (Spark's session time zone); delta-rs gives them aware.
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


# --------------------------------------------------------------------------------------------
# Maintenance (jobs/maintain.py): file lists read with delta-rs, the API's own reader


def _relative(table_root: str, path: str) -> str:
    """A data file's path inside its table, as the Delta log names it (decoded)."""
    local = unquote(urlparse(path).path) if "://" in path or path.startswith("file:") else unquote(path)
    root = table_root.rstrip("/") + "/"
    return local[len(root) :] if local.startswith(root) else local


def date_files(
    lake: Path, table: Table, wanted: Mapping[int, set[dt.date]]
) -> dict[int, dict[dt.date, frozenset[str]]]:
    """For each version, the data files of the wanted dates at that version.

    Versions are visited oldest first and each is reached from the one before, so the log is
    replayed once however many versions the ledger pins.
    """
    root = table_path(lake, table)
    found: dict[int, dict[dt.date, frozenset[str]]] = {}
    delta: DeltaTable | None = None
    for version in sorted(wanted):
        if delta is None:
            delta = DeltaTable(root, version=version)
        else:
            delta.load_as_version(version)
        actions = pa.table(delta.get_add_actions(flatten=True))
        paths = actions.column("path").to_pylist()
        dates = actions.column("partition.as_of_date").to_pylist()
        by_date: dict[dt.date, set[str]] = {day: set() for day in wanted[version]}
        for path, day in zip(paths, dates, strict=True):
            day = day if isinstance(day, dt.date) else dt.date.fromisoformat(str(day))
            if day in by_date:
                by_date[day].add(_relative(root, path))
        found[version] = {day: frozenset(files) for day, files in by_date.items()}
    return found


def current_version(lake: Path, table: Table) -> int:
    return int(DeltaTable(table_path(lake, table)).version())


def commit_times(lake: Path, table: Table) -> dict[int, dt.datetime]:
    """When each version still in the log was committed (UTC)."""
    times: dict[int, dt.datetime] = {}
    for commit in DeltaTable(table_path(lake, table)).history():
        if commit.get("version") is not None and commit.get("timestamp") is not None:
            times[int(commit["version"])] = dt.datetime.fromtimestamp(int(commit["timestamp"]) / 1000, dt.UTC)
    return times


def table_properties(spark: SparkSession, lake: Path, table: Table) -> dict[str, str]:
    rows = spark.sql(f"SHOW TBLPROPERTIES delta.`{table_path(lake, table)}`").collect()
    return {str(r["key"]): str(r["value"]) for r in rows}


def set_table_properties(spark: SparkSession, lake: Path, table: Table, wanted: Mapping[str, str]) -> dict[str, str]:
    """Set the properties that differ (one metadata commit, none when all hold); those changed."""
    held = table_properties(spark, lake, table)
    changed = {k: v for k, v in wanted.items() if held.get(k) != v}
    if changed:
        props = ", ".join(f"{sql_string(k)} = {sql_string(v)}" for k, v in changed.items())
        spark.sql(f"ALTER TABLE delta.`{table_path(lake, table)}` SET TBLPROPERTIES ({props})")
    return changed


@dataclass(frozen=True)
class Optimized:
    files_removed: int
    files_added: int
    bytes_removed: int
    bytes_added: int


def optimize(
    spark: SparkSession, lake: Path, table: Table, dates: list[dt.date] | None, zorder_by: tuple[str, ...]
) -> Optimized:
    """OPTIMIZE the table (the given dates only, for a dated table), Z-ordered when columns are given.

    One commit that changes files, never data (dataChange false); none when nothing is to do.
    """
    builder = SparkDeltaTable.forPath(spark, table_path(lake, table)).optimize()
    if dates is not None:
        builder = builder.where(f"as_of_date IN ({', '.join(repr(d.isoformat()) for d in dates)})")
    result = builder.executeZOrderBy(*zorder_by) if zorder_by else builder.executeCompaction()
    row = result.select("metrics.*").first()
    if row is None:
        return Optimized(0, 0, 0, 0)
    m = row.asDict(recursive=True)
    return Optimized(
        int(m.get("numFilesRemoved") or 0),
        int(m.get("numFilesAdded") or 0),
        int((m.get("filesRemoved") or {}).get("totalSize") or 0),
        int((m.get("filesAdded") or {}).get("totalSize") or 0),
    )


def vacuum(lake: Path, table: Table, keep_versions: list[int]) -> int:
    """VACUUM with the table's own delta.deletedFileRetentionDuration, never deleting a file one of
    `keep_versions` reads; the number of files deleted.

    delta-rs, not Spark: it can keep given versions whole (Spark's VACUUM cannot), and it needs no
    Spark job (Spark lists the folders with 10,000 tasks by default). `full` also removes files no
    commit ever named (those of a killed write) once they are older than the retention.
    """
    root = Path(table_path(lake, table))

    def data_files() -> int:
        return sum(1 for p in root.rglob("*.parquet") if "_delta_log" not in p.parts)

    # Counted on disk: the returned list also names removed files an earlier VACUUM already deleted.
    before = data_files()
    DeltaTable(str(root)).vacuum(dry_run=False, full=True, keep_versions=sorted(keep_versions))
    return before - data_files()
