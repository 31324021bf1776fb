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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from schemas.base import Table
from schemas.lake import RUN_LEDGER
from schemas.landing import NOT_UTF8

# delta-rs (the API's reader) must understand every table: keep to the basic protocol.
TABLE_PROPERTIES = {
    "delta.enableDeletionVectors": "false",
    "delta.columnMapping.mode": "none",
    "delta.enableChangeDataFeed": "false",
    "delta.checkpointPolicy": "classic",
    "delta.logRetentionDuration": "interval 30 days",
    "delta.deletedFileRetentionDuration": "interval 7 days",
}


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
        for path in parquet:
            try:
                names = set(pq.read_schema(path).names)
            except Exception as exc:  # pyarrow raises several types for a broken footer
                raise LandingError(path, f"unreadable Parquet file ({type(exc).__name__})") from None
            for column in required:
                if column not in names:
                    raise LandingError(path, f"missing column {column}")
        return LandingFiles(table, "parquet", tuple(parquet))
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
        return spark.createDataFrame([], empty)
    if found.fmt == "parquet":
        return spark.read.parquet(*[str(p) for p in found.files]).select(*table.names)
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


def _bytes(latin1: Column) -> Column:
    return F.encode(latin1, "ISO-8859-1")


def shown_safely(latin1: Column) -> Column:
    """Bytes (read as ISO-8859-1) that are not all UTF-8, as text: the characters decoded, each
    stray byte as `\\xNN` and a delivered backslash doubled, so the two cannot be confused."""
    pieces = F.regexp_extract_all(latin1, F.lit(UTF8_PIECES), 1)

    def show(piece: Column) -> Column:
        # A length-1 piece of a high byte is a stray: every character beyond ASCII is 2-4 bytes.
        stray = (F.length(piece) == 1) & piece.rlike(r"[\x80-\xFF]")
        text = F.replace(_bytes(piece).cast("string"), F.lit("\\"), F.lit("\\\\"))
        return F.when(stray, F.concat(F.lit("\\x"), F.lower(F.hex(_bytes(piece))))).otherwise(text)

    return F.array_join(F.transform(pieces, show), "")


def decode_utf8(table: Table) -> Callable[[DataFrame], DataFrame]:
    """Rows read as ISO-8859-1 back to text: a field whose bytes are UTF-8 is decoded exactly; one
    whose bytes are not is shown safely and named in NOT_UTF8, for ingest to refuse the row."""

    def transform(frame: DataFrame) -> DataFrame:
        fields: list[Column] = []
        faults: list[Column] = []
        for name in table.names:
            data = _bytes(F.col(name))
            # Binary to string keeps the bytes as they are, for Spark's own UTF-8 check.
            valid = F.coalesce(F.is_valid_utf8(data.cast("string")), F.lit(True))
            fields.append(F.when(valid, data.cast("string")).otherwise(shown_safely(F.col(name))).alias(name))
            faults.append(F.when(~valid, F.lit(name)))
        return frame.select(*fields, F.filter(F.array(*faults), lambda n: n.isNotNull()).alias(NOT_UTF8))

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


def _sql_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def create_table(spark: SparkSession, lake: Path, table: Table) -> None:
    """Create the Delta table from its contract if it does not exist (comments included)."""
    columns = ",\n  ".join(
        f"`{c.name}` {c.dtype.simpleString()}{'' if c.nullable else ' NOT NULL'} COMMENT {_sql_string(c.comment)}"
        for c in table.columns
    )
    partition = f"PARTITIONED BY ({', '.join(table.partition_by)})" if table.partition_by else ""
    props = ", ".join(f"{_sql_string(k)} = {_sql_string(v)}" for k, v in TABLE_PROPERTIES.items())
    spark.sql(
        f"CREATE TABLE IF NOT EXISTS delta.`{table_path(lake, table)}` (\n  {columns}\n) USING delta "
        f"{partition} COMMENT {_sql_string(table.comment)} TBLPROPERTIES ({props})"
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


def table_version(spark: SparkSession, lake: Path, table: Table) -> int:
    row = spark.sql(f"DESCRIBE HISTORY delta.`{table_path(lake, table)}` LIMIT 1").select("version").first()
    return int(row["version"]) if row else 0


def write_date(spark: SparkSession, frame: DataFrame, lake: Path, table: Table, as_of: dt.date) -> int:
    """Replace the business date's rows of a date-partitioned table in one commit; its version."""
    create_table(spark, lake, table)
    (
        conform(frame, table)
        .write.format("delta")
        .mode("overwrite")
        .option("replaceWhere", f"as_of_date = '{as_of.isoformat()}'")
        .save(table_path(lake, table))
    )
    return table_version(spark, lake, table)


def read_table(spark: SparkSession, lake: Path, table: Table, version: int | None = None) -> DataFrame:
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    return reader.load(table_path(lake, table))


def table_exists(lake: Path, table: Table) -> bool:
    return (lake / table.name / "_delta_log").is_dir()


# --------------------------------------------------------------------------------------------
# Run ledger


def append_ledger(spark: SparkSession, lake: Path, entry: dict[str, Any]) -> None:
    """Append one state change of a run (RUNNING, SUCCEEDED, FAILED)."""
    create_table(spark, lake, RUN_LEDGER)
    row = {c.name: entry.get(c.name) for c in RUN_LEDGER.columns}
    for name in ("input_rows", "accepted_rows", "quarantined_rows", "output_rows", "table_versions", "summary"):
        row[name] = {k: int(v) for k, v in (row[name] or {}).items()}
    frame = spark.createDataFrame([row], RUN_LEDGER.schema)
    frame.write.format("delta").mode("append").save(table_path(lake, RUN_LEDGER))


@dataclass(frozen=True)
class SucceededRun:
    run_id: str
    as_of_date: dt.date
    table_versions: dict[str, int]


def latest_succeeded(spark: SparkSession, lake: Path, before: dt.date) -> SucceededRun | None:
    """The most recent SUCCEEDED run for a business date earlier than `before` (the state a run
    builds on); among reruns of that date, the last to finish."""
    if not table_exists(lake, RUN_LEDGER):
        return None
    row = (
        read_table(spark, lake, RUN_LEDGER)
        .where((F.col("status") == "SUCCEEDED") & (F.col("as_of_date") < F.lit(before)))
        .orderBy(F.col("as_of_date").desc(), F.col("finished_at").desc())
        .first()
    )
    if row is None:
        return None
    return SucceededRun(row["run_id"], row["as_of_date"], dict(row["table_versions"]))


def succeeded_runs(spark: SparkSession, lake: Path) -> list[SucceededRun]:
    """The run that serves each business date: its latest SUCCEEDED run."""
    if not table_exists(lake, RUN_LEDGER):
        return []
    rows = (
        read_table(spark, lake, RUN_LEDGER)
        .where(F.col("status") == "SUCCEEDED")
        .select("run_id", "as_of_date", "finished_at", "table_versions")
        .collect()
    )
    latest: dict[dt.date, Any] = {}
    for row in rows:
        held = latest.get(row["as_of_date"])
        if held is None or row["finished_at"] > held["finished_at"]:
            latest[row["as_of_date"]] = row
    return [SucceededRun(r["run_id"], r["as_of_date"], dict(r["table_versions"])) for _, r in sorted(latest.items())]


def history(spark: SparkSession, lake: Path, table: Table, start: dt.date, end: dt.date) -> DataFrame | None:
    """A date-partitioned table's rows for each business date in [start, end) that a SUCCEEDED
    run serves, each date read at the version its run wrote (a later failed rerun is invisible)."""
    runs = [r for r in succeeded_runs(spark, lake) if start <= r.as_of_date < end and table.name in r.table_versions]
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


def date_counts(spark: SparkSession, lake: Path, tables: list[Table], as_of: dt.date) -> dict[str, int]:
    """Rows each table holds for the date (read back after the write, from the files)."""
    return {t.name: read_table(spark, lake, t).where(F.col("as_of_date") == F.lit(as_of)).count() for t in tables}


def ledger_rows(spark: SparkSession, lake: Path) -> list[dict[str, Any]]:
    if not table_exists(lake, RUN_LEDGER):
        return []
    return [r.asDict(recursive=True) for r in read_table(spark, lake, RUN_LEDGER).collect()]
