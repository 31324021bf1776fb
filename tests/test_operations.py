"""Operations: the event log and progress, exit codes per failure class, file layout, maintenance.

One small book runs through the real CLI (`jobs.cli.main`, in process, on the suite's Spark
session): its JSON lines are parsed and checked against the run ledger (read with delta-rs), every
failure class is provoked for real and its exit code checked, and `postloan maintain` is run on
the lake: every table still reads with delta-rs, the served content is unchanged, and VACUUM (at
zero retention, so that a mistake would show) never deletes a file a pinned version reads.
"""

from __future__ import annotations

import ast
import contextlib
import datetime as dt
import itertools
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import yaml
from deltalake import DeltaTable
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from api.lake import LakeReader
from api.settings import LakeSettings
from jobs import io
from jobs.cli import main as cli_main
from jobs.config import load_operations
from jobs.generate import generate_landing
from jobs.pipeline import catch_up_dates
from jobs.spark import delta_jars
from schemas.lake import LOAN_SNAPSHOT
from schemas.landing import LANDING_TABLES
from schemas.registry import LAKE_TABLES
from tests.helpers import conf_copy, ledger, serving

MONTH_END = dt.date(2026, 9, 30)
AS_OF = dt.date(2026, 10, 31)
LOANS = 160
ROW_GROUP_ROWS = 16
DATED = [t for t in LAKE_TABLES if t.partition_by]
SORTED = {t.name for t in DATED if t.sort_by}
STAGES = ["ingest", "delinquency_classification", "inspections", "collections", "metrics", "write"]
FIELDS = {"ts", "level", "logger", "run_id", "as_of", "stage", "event", "figures"}
# Protocol features delta-rs 1.6 (the API's reader) cannot read, or that this lake must not use.
FORBIDDEN = {"deletionVectors", "columnMapping", "typeWidening", "typeWidening-preview", "v2Checkpoint", "clustering"}


# --------------------------------------------------------------------------------------------
# A conf copy whose Spark settings are the suite's (the CLI applies them to the shared session)


def ops_conf(conf_dir: Path, target: Path, **operations: Any) -> Path:
    conf_copy(conf_dir, target, **operations)
    spark_conf = {
        "master": "local[2]",
        "app_name": "postloan-tests",
        "conf": {
            "spark.sql.shuffle.partitions": "2",
            "spark.databricks.delta.properties.defaults.enableDeletionVectors": "false",
        },
    }
    (target / "spark" / "local.yaml").write_text(yaml.safe_dump(spark_conf), encoding="utf-8")
    return target


def json_lines(path: Path) -> list[dict[str, Any]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines, f"{path} is empty"
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    for record in records:
        assert set(record) == FIELDS, record
        assert record["run_id"], record
        dt.datetime.fromisoformat(record["ts"])
    return records


def personal_values(landing: Path) -> set[str]:
    values: set[str] = set()
    for table in LANDING_TABLES:
        if table.pii_columns and (landing / table.name).is_dir():
            rows = ds.dataset(landing / table.name, format="parquet").to_table(columns=list(table.pii_columns))
            for column in rows.columns:
                values |= {v for v in column.to_pylist() if isinstance(v, str) and len(v) >= 4}
    return values


def assert_no_personal_data(text: str, landing: Path) -> None:
    values = personal_values(landing)
    assert len(values) > LOANS  # names, ID numbers and phones of the book
    leaked = sorted(v for v in values if v in text)
    assert not leaked, leaked[:5]


def served_content(lake: Path) -> dict[tuple[dt.date, str], list[tuple[Any, ...]]]:
    """Every table of every served date, read with delta-rs at the version the ledger pins."""
    content = {}
    for day, run in serving(lake).items():
        for name, version in run["table_versions"].items():
            rows = DeltaTable(str(lake / name), version=version).to_pyarrow_table(
                partitions=[("as_of_date", "=", day.isoformat())]
            )
            content[(day, name)] = sorted((tuple(r.values()) for r in rows.to_pylist()), key=repr)
    return content


def files_per_date(lake: Path, name: str) -> dict[str, int]:
    actions = pa.table(DeltaTable(str(lake / name)).get_add_actions(flatten=True)).to_pylist()
    counts: dict[str, int] = {}
    for action in actions:
        key = str(action["partition.as_of_date"])
        counts[key] = counts.get(key, 0) + 1
    return counts


def cli(*argv: str) -> int:
    return cli_main(list(argv))


# --------------------------------------------------------------------------------------------
# One book: month-end by `nightly`, the next month-end by `backfill --catch-up`


@dataclass
class Book:
    root: Path
    landing: Path
    lake: Path
    conf: Path
    log: Path
    console: str
    exits: list[int]


@pytest.fixture(scope="module")
def book(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory, conf_dir: Path) -> Iterator[Book]:
    root = tmp_path_factory.mktemp("ops")
    landing, lake, log = root / "landing", root / "lake", root / "logs" / "nightly.jsonl"
    generate_landing(spark, LOANS, AS_OF, 11, landing, "parquet")
    # Row groups far smaller than the book, so that the sorted layout is seen to cut them.
    conf = ops_conf(conf_dir, root / "conf", log__file=str(log), layout__sorted_row_group_rows=ROW_GROUP_ROWS)
    paths = ["--landing", str(landing), "--lake", str(lake), "--conf", str(conf)]
    capture = root / "console.txt"
    with capture.open("w", encoding="utf-8") as out, contextlib.redirect_stdout(out):
        exits = [
            cli("nightly", "--as-of", MONTH_END.isoformat(), *paths),
            cli("backfill", "--catch-up", "--to", AS_OF.isoformat(), "--every", "month-end", *paths),
        ]
    yield Book(root, landing, lake, conf, log, capture.read_text(encoding="utf-8"), exits)


def test_the_event_log_is_json_lines_naming_the_ledgers_runs_with_stages_in_order(book: Book) -> None:
    assert book.exits == [0, 0]
    records = json_lines(book.log)
    runs = {row["as_of_date"]: row["run_id"] for row in ledger(book.lake) if row["status"] == "SUCCEEDED"}
    assert set(runs) == {MONTH_END, AS_OF}
    for day, run_id in runs.items():
        mine = [r for r in records if r["run_id"] == run_id]
        assert {r["as_of"] for r in mine} == {day.isoformat()}
        events = [(r["event"], r["stage"]) for r in mine]
        expected = [("run_started", None)]
        for stage in STAGES:
            expected += [("stage_started", stage), ("stage_finished", stage)]
        assert events == [*expected, ("run_succeeded", None), ("exit", None)]
        finished = [r["figures"] for r in mine if r["event"] == "stage_finished"]
        assert [f["percent_done"] for f in finished] == [100 * n // len(STAGES) for n in range(1, len(STAGES) + 1)]
        elapsed = [f["elapsed_s"] for f in finished]
        assert elapsed == sorted(elapsed)
        # The figures are the ledger's own numbers.
        row = next(r for r in ledger(book.lake) if r["run_id"] == run_id and r["status"] == "SUCCEEDED")
        ingest = next(f for f in finished if f["stage_index"] == 1)
        assert ingest["input_rows"] == dict(row["input_rows"])
        write = finished[-1]
        assert write["table_versions"] == row["table_versions"]
        assert write["output_rows"] == dict(row["output_rows"])
    # The catch-up command names itself, and says it ran one date: the one the lake lacked.
    command = [r for r in records if r["run_id"] not in runs.values()]
    assert [r["event"] for r in command] == ["dates_started", "exit"]
    assert command[0]["figures"]["dates"] == [AS_OF.isoformat()]
    assert command[-1]["figures"] == {"exit_code": 0, "runs": 1}
    assert_no_personal_data(book.log.read_text(encoding="utf-8"), book.landing)


def test_progress_lines_name_the_stage_share_done_and_elapsed_time(book: Book) -> None:
    lines = [line for line in book.console.splitlines() if line.startswith(f"[{AS_OF}]")]
    starts = [line for line in lines if "  (stage " in line]
    assert [line.split("  (stage ")[1].split(",")[0] for line in starts] == [f"{n}/6" for n in range(1, 7)]
    assert starts[0].startswith(f"[{AS_OF}] ingest: validating landing rows  (stage 1/6, 0% done, ")
    ends = [line for line in lines if " done in " in line]
    assert [line.split("] ")[1].split(" done in ")[0] for line in ends] == STAGES
    assert ends[-1].endswith("elapsed)") and "(100% done, " in ends[-1]
    assert_no_personal_data(book.console, book.landing)


def test_catch_up_runs_only_missing_dates(book: Book) -> None:
    assert catch_up_dates([MONTH_END], None, AS_OF, "month-end") == [AS_OF]
    assert catch_up_dates([MONTH_END, AS_OF], None, AS_OF, "day") == []
    assert catch_up_dates([], dt.date(2026, 10, 29), AS_OF, "day") == [dt.date(2026, 10, d) for d in (29, 30, 31)]
    assert catch_up_dates([], None, AS_OF, "day") == [AS_OF]
    # Nothing missing: the command runs nothing and says so.
    before = len(ledger(book.lake))
    paths = ["--landing", str(book.landing), "--lake", str(book.lake), "--conf", str(book.conf)]
    assert cli("backfill", "--catch-up", "--to", AS_OF.isoformat(), *paths) == 0
    assert len(ledger(book.lake)) == before


def test_each_date_is_written_as_one_file_per_table_on_a_small_book(book: Book) -> None:
    for table in DATED:
        counts = files_per_date(book.lake, table.name)
        assert set(counts) <= {MONTH_END.isoformat(), AS_OF.isoformat()}, table.name
        # A sorted table's files are its range partitions: at most spark.sql.shuffle.partitions (2
        # here; adaptive execution keeps as many as the cores), each a disjoint run of loan ids.
        most = 2 if table.sort_by else 1
        assert all(1 <= n <= most for n in counts.values()), (table.name, counts)


def test_files_carry_statistics_only_on_the_columns_readers_filter_on(book: Book) -> None:
    # The shipped layout.statistics_columns, as each table has them (worked out from the contracts).
    expected = {
        "loan_snapshot": ["loan_id", "borrower_id", "branch_id", "tier1_branch_id", "product_code"],
        "classification_history": ["loan_id", "branch_id"],
        "quarantine": ["source_table", "reason_code"],
        "borrowers": ["borrower_id"],
        "collection_cases": ["loan_id", "borrower_id", "branch_id", "tier1_branch_id", "product_code", "agency_id"],
        "vintage": ["product_code"],
    }
    configured = set(load_operations(book.conf).layout.statistics_columns)
    for table in DATED:
        delta = DeltaTable(str(book.lake / table.name))
        listed = delta.metadata().configuration[io.STATISTICS_COLUMNS].split(",")
        if table.name in expected:
            assert listed == expected[table.name], table.name
        assert set(listed) == configured & set(table.names), table.name
        # Every file written has min/max for exactly those columns, and the row count.
        actions = pa.table(delta.get_add_actions(flatten=True))
        if actions.num_rows:
            kept = {name.removeprefix("min.") for name in actions.column_names if name.startswith("min.")}
            assert kept == set(listed), (table.name, kept)
            assert pc.min(actions.column("num_records")).as_py() > 0, table.name


def pinned_files(lake: Path, table: str, version: int, day: dt.date) -> list[Path]:
    """The Parquet files a version of a table lists for one date."""
    uris = DeltaTable(str(lake / table), version=version).file_uris(
        partition_filters=[("as_of_date", "=", day.isoformat())]
    )
    return [Path(uri.removeprefix("file://")) for uri in uris]


def served_files(lake: Path, table: str) -> dict[dt.date, list[Path]]:
    """The Parquet files of each served date of a table, at the version the ledger pins."""
    return {day: pinned_files(lake, table, run["table_versions"][table], day) for day, run in serving(lake).items()}


def assert_one_row_group_per_key(lake: Path) -> None:
    """Within each served date of a sorted table, the row groups' loan_id ranges are ordered and
    disjoint, so a reader looking for one loan has exactly one row group to read."""
    for table in (t for t in DATED if t.sort_by):
        assert table.sort_by == ("loan_id",), table.name
        for day, paths in served_files(lake, table.name).items():
            ranges, keys = [], []
            for path in paths:
                parquet = pq.ParquetFile(path)
                column = parquet.schema_arrow.get_field_index("loan_id")
                ids = parquet.read(columns=["loan_id"]).column("loan_id").to_pylist()
                assert ids == sorted(ids), (table.name, day, path.name)
                keys += ids
                for n in range(parquet.metadata.num_row_groups):
                    group = parquet.metadata.row_group(n)
                    assert group.num_rows <= ROW_GROUP_ROWS, (table.name, day)
                    stats = group.column(column).statistics
                    assert stats is not None and stats.has_min_max, (table.name, day)
                    ranges.append((stats.min, stats.max))
            ranges.sort()
            assert all(earlier[1] < later[0] for earlier, later in itertools.pairwise(ranges)), (table.name, day)
            for key in keys:
                assert sum(low <= key <= high for low, high in ranges) == 1, (table.name, day, key)


def test_loan_level_tables_are_sorted_by_loan_id_in_small_row_groups(book: Book) -> None:
    # The book is several row groups long, so the ranges above are really cut and compared.
    for day, paths in served_files(book.lake, "loan_snapshot").items():
        assert sum(pq.ParquetFile(p).metadata.num_rows for p in paths) > 3 * ROW_GROUP_ROWS, day
    assert_one_row_group_per_key(book.lake)
    properties = DeltaTable(str(book.lake / "loan_snapshot")).metadata().configuration
    assert properties[io.ROW_GROUP_ROWS] == str(ROW_GROUP_ROWS)


# --------------------------------------------------------------------------------------------
# Exit codes: every class through the CLI


@pytest.fixture
def lake_copy(book: Book, tmp_path: Path) -> Path:
    lake = tmp_path / "lake"
    shutil.copytree(book.lake, lake)
    return lake


def run_cli_logged(book: Book, tmp_path: Path, *argv: str) -> tuple[int, list[dict[str, Any]]]:
    """Run the CLI with an event log; the records this call appended (the log file is appended to)."""
    log = tmp_path / "events.jsonl"
    earlier = len(json_lines(log)) if log.exists() else 0
    code = cli(*argv, "--log-file", str(log))
    records = json_lines(log)[earlier:] if log.exists() else []
    if records:
        assert_no_personal_data(log.read_text(encoding="utf-8"), book.landing)
    return code, records


def test_exit_2_configuration_or_command_line_refused(
    book: Book, tmp_path: Path, conf_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = ops_conf(conf_dir, tmp_path / "conf", maintenance__zorder_by={"collection_cases": ["no_such_column"]})
    paths = ["--landing", str(book.landing), "--lake", str(tmp_path / "lake")]
    assert cli("nightly", "--as-of", AS_OF.isoformat(), *paths, "--conf", str(bad)) == 2
    assert (
        "operations.yaml: maintenance.zorder_by.collection_cases: collection_cases has no column"
        in capsys.readouterr().err
    )
    # A sorted table is never Z-ordered: that would undo the order its per-loan reads rely on.
    sorted_table = ops_conf(conf_dir, tmp_path / "conf2", maintenance__zorder_by={"loan_snapshot": ["branch_id"]})
    assert cli("nightly", "--as-of", AS_OF.isoformat(), *paths, "--conf", str(sorted_table)) == 2
    assert (
        "operations.yaml: maintenance.zorder_by.loan_snapshot: loan_snapshot is written sorted by loan_id"
        in capsys.readouterr().err
    )
    # A niceness outside 0-19 (Unix has none above 19; below 0 needs privileges).
    greedy = ops_conf(conf_dir, tmp_path / "conf3", process__niceness=-5)
    assert cli("nightly", "--as-of", AS_OF.isoformat(), *paths, "--conf", str(greedy)) == 2
    assert "operations.yaml: process.niceness: must not be negative, got -5" in capsys.readouterr().err
    beyond = ops_conf(conf_dir, tmp_path / "conf4", process__niceness=20)
    assert cli("nightly", "--as-of", AS_OF.isoformat(), *paths, "--conf", str(beyond)) == 2
    err = capsys.readouterr().err
    assert "operations.yaml: process" in err and "niceness must be between 0 and 19" in err
    assert cli("maintain", "--lake", str(tmp_path / "lake"), "--conf", str(bad)) == 2
    assert cli("backfill", "--from", "2026-10-31", "--to", "2026-10-01", *paths) == 2
    assert cli("backfill", "--to", "2026-10-01", *paths) == 2
    with pytest.raises(SystemExit) as usage:
        cli("nightly", "--as-of", "31/10/2026", *paths)
    assert usage.value.code == 2
    assert not (tmp_path / "lake").exists()


def test_exit_3_input_refused_nothing_written(book: Book, lake_copy: Path, tmp_path: Path) -> None:
    broken = tmp_path / "landing"
    shutil.copytree(book.landing, broken)
    for part in (broken / "schedule").glob("*.parquet"):
        pq.write_table(pq.read_table(part).drop(["due_date"]), part)
    before = ledger(lake_copy)
    paths = ["--landing", str(broken), "--lake", str(lake_copy), "--conf", str(book.conf)]
    code, records = run_cli_logged(book, tmp_path, "nightly", "--as-of", AS_OF.isoformat(), *paths)
    assert code == 3
    assert ledger(lake_copy) == before
    assert [r["event"] for r in records] == ["run_started", "run_failed", "exit"]
    assert records[-1]["figures"] == {"exit_code": 3, "failure": "input_refused"}
    assert records[1]["figures"]["error_type"] == "LandingError"


def test_exit_4_another_run_holds_the_lake(book: Book, lake_copy: Path, tmp_path: Path) -> None:
    lock = lake_copy / "_postloan_run.lock"
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "run_id": "held"}), encoding="utf-8")
    before = ledger(lake_copy)
    paths = ["--landing", str(book.landing), "--lake", str(lake_copy), "--conf", str(book.conf)]
    code, records = run_cli_logged(book, tmp_path, "nightly", "--as-of", AS_OF.isoformat(), *paths)
    assert code == 4
    assert records[-1]["figures"] == {"exit_code": 4, "failure": "lake_locked"}
    code, records = run_cli_logged(book, tmp_path, "maintain", "--lake", str(lake_copy), "--conf", str(book.conf))
    assert code == 4
    assert records[-1]["logger"] == "postloan.maintain"
    assert records[-1]["figures"] == {"exit_code": 4, "failure": "lake_locked"}
    assert ledger(lake_copy) == before and json.loads(lock.read_text(encoding="utf-8"))["run_id"] == "held"


def test_exit_5_output_out_of_contract_is_not_published(
    book: Book, lake_copy: Path, tmp_path: Path, conf_dir: Path
) -> None:
    # Seven one-day buckets give an M8+ the lake's contract does not know: the snapshot is refused.
    conf = ops_conf(conf_dir, tmp_path / "conf")
    text = (conf / "postloan.yaml").read_text(encoding="utf-8")
    text = text.replace("bucket_count: 6", "bucket_count: 7").replace("bucket_width_days: 30", "bucket_width_days: 1")
    (conf / "postloan.yaml").write_text(text, encoding="utf-8")
    served = serving(lake_copy)
    paths = ["--landing", str(book.landing), "--lake", str(lake_copy), "--conf", str(conf)]
    code, records = run_cli_logged(book, tmp_path, "nightly", "--as-of", AS_OF.isoformat(), *paths)
    assert code == 5
    assert records[-1]["figures"] == {"exit_code": 5, "failure": "output_refused"}
    failed = next(r for r in records if r["event"] == "run_failed")
    assert failed["stage"] == "delinquency_classification"
    assert sorted(r["status"] for r in ledger(lake_copy) if r["run_id"] == failed["run_id"]) == ["FAILED", "RUNNING"]
    assert serving(lake_copy) == served


def test_exit_1_anything_else(book: Book, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lake = tmp_path / "lake"
    lake.write_text("a file where the lake should be", encoding="utf-8")
    paths = ["--landing", str(book.landing), "--lake", str(lake), "--conf", str(book.conf)]
    code, records = run_cli_logged(book, tmp_path, "nightly", "--as-of", AS_OF.isoformat(), *paths)
    assert code == 1
    assert records[-1]["figures"] == {"exit_code": 1, "failure": "failed_unexpectedly"}
    assert "FileExistsError" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# Maintenance


def protocol_ok(lake: Path) -> None:
    for table in LAKE_TABLES:
        protocol = DeltaTable(str(lake / table.name)).protocol()
        features = set(protocol.reader_features or []) | set(protocol.writer_features or [])
        assert protocol.min_reader_version <= 3 and not (protocol.reader_features or []), table.name
        assert not features & FORBIDDEN, (table.name, features)


def api_view(lake: Path) -> dict[dt.date, tuple[str, int]]:
    reader = LakeReader(lake, LakeSettings())
    try:
        reader.refresh()
        catalog = reader.catalog()
        return {day: (run.run_id, reader.date_data(run).result().loans.n) for day, run in catalog.served.items()}
    finally:
        reader.close()


def pinned_files_exist(lake: Path) -> None:
    for day, run in serving(lake).items():
        for name, version in run["table_versions"].items():
            for path in pinned_files(lake, name, version, day):
                assert path.is_file(), (day, name, path)


def test_maintain_compacts_repins_and_vacuums_without_changing_what_is_served(
    spark: SparkSession, book: Book, lake_copy: Path, tmp_path: Path, conf_dir: Path
) -> None:
    # Zero retention: VACUUM deletes every file no current version uses, at once. One more column
    # with statistics than the nights had: maintain brings every table's property in step.
    statistics = [*load_operations(conf_dir).layout.statistics_columns, "officer_id"]
    conf = ops_conf(
        conf_dir,
        tmp_path / "conf",
        maintenance__deleted_file_retention_hours=0,
        layout__statistics_columns=statistics,
    )
    content, api = served_content(lake_copy), api_view(lake_copy)
    before = serving(lake_copy)
    loan_files = files_per_date(lake_copy, "loan_snapshot")
    case_files = files_per_date(lake_copy, "collection_cases")
    paths = ["--lake", str(lake_copy), "--conf", str(conf)]

    code, records = run_cli_logged(book, tmp_path, "maintain", *paths)
    assert code == 0
    protocol_ok(lake_copy)
    for table in LAKE_TABLES:
        props = DeltaTable(str(lake_copy / table.name)).metadata().configuration
        assert props["delta.deletedFileRetentionDuration"] == "interval 0 hours", table.name
        assert props["delta.logRetentionDuration"] == "interval 400 days", table.name
        if table.partition_by:
            listed = props[io.STATISTICS_COLUMNS].split(",")
            assert listed == [c for c in table.names if c in statistics], table.name
    assert "officer_id" in DeltaTable(str(lake_copy / "loan_snapshot")).metadata().configuration[io.STATISTICS_COLUMNS]
    # The files OPTIMIZE rewrote carry the new column's statistics.
    rewritten = pa.table(DeltaTable(str(lake_copy / "collection_cases")).get_add_actions(flatten=True))
    assert rewritten.num_rows and "min.officer_id" in rewritten.column_names
    # Both dates re-pinned by one ledger commit: new runs, the newest versions, the same rows.
    after = serving(lake_copy)
    assert set(after) == set(before)
    for day, run in after.items():
        assert run["run_id"].startswith("maintain-") and run["run_id"].endswith(f"{day:%Y%m%d}")
        assert run["status"] == "SUCCEEDED" and run["finished_at"] > before[day]["finished_at"]
        assert set(run["table_versions"]) == set(before[day]["table_versions"])
        for name, version in run["table_versions"].items():
            # A sorted table is not optimized: its pin moves only where the table has a later commit.
            pinned = before[day]["table_versions"][name]
            assert version >= pinned if name in SORTED else version > pinned, (day, name)
        for key in ("input_rows", "accepted_rows", "quarantined_rows", "output_rows", "summary"):
            assert dict(run[key]) == dict(before[day][key]), key
        assert run["config_hash"] == before[day]["config_hash"]
    assert served_content(lake_copy) == content
    assert {day: n for day, (_, n) in api_view(lake_copy).items()} == {day: n for day, (_, n) in api.items()}
    # Z-ordered tables were rewritten, the files they replaced are gone, pinned files are all there.
    # The sorted tables were left as written: same files, same one-row-group-per-loan layout.
    optimized = {r["figures"]["table"] for r in records if r["event"] == "optimized"}
    assert "collection_cases" in optimized and not optimized & {"loan_snapshot", "classification_history"}
    assert files_per_date(lake_copy, "loan_snapshot") == loan_files
    assert_one_row_group_per_key(lake_copy)
    vacuumed = {r["figures"]["table"]: r["figures"] for r in records if r["event"] == "vacuumed"}
    assert vacuumed["collection_cases"]["files_deleted"] == sum(case_files.values())
    assert vacuumed["loan_snapshot"]["files_deleted"] == 0
    pinned_files_exist(lake_copy)
    # Spark reads every table too, after delta-rs's VACUUM commits.
    for table in LAKE_TABLES:
        assert (
            io.read_table(spark, lake_copy, table).count()
            == DeltaTable(str(lake_copy / table.name)).to_pyarrow_table().num_rows
        )
    assert [r["event"] for r in records][-2:] == ["maintenance_finished", "exit"]

    # A second run finds the dates done: no date optimized or re-pinned again (the run ledger, not
    # a dated table, is compacted whenever commits have added files to it, the re-pin's included).
    code, records = run_cli_logged(book, tmp_path, "maintain", *paths)
    assert code == 0 and serving(lake_copy) == after
    assert [r["figures"]["table"] for r in records if r["event"] == "optimized"] in ([], ["run_ledger"])


def test_vacuum_keeps_the_files_of_a_pinned_version_a_failed_rerun_wrote_over(
    spark: SparkSession, book: Book, lake_copy: Path, tmp_path: Path, conf_dir: Path
) -> None:
    conf = ops_conf(conf_dir, tmp_path / "conf", maintenance__deleted_file_retention_hours=0)
    content, before = served_content(lake_copy), serving(lake_copy)
    # What a rerun killed after its first commit leaves: the date's snapshot replaced, no SUCCEEDED row.
    rows = io.read_table(spark, lake_copy, LOAN_SNAPSHOT).where(F.col("as_of_date") == F.lit(AS_OF))
    io.write_date(spark, rows.limit(LOANS // 4), lake_copy, LOAN_SNAPSHOT, AS_OF)
    code, records = run_cli_logged(book, tmp_path, "maintain", "--lake", str(lake_copy), "--conf", str(conf))
    assert code == 0
    warned = [r for r in records if r["event"] == "date_written_since_its_run"]
    assert [(r["level"], r["figures"]["table"], r["figures"]["date"]) for r in warned] == [
        ("WARNING", "loan_snapshot", AS_OF.isoformat())
    ]
    # The date keeps its pinned snapshot (and VACUUM its files); the rest of both dates moved on.
    after = serving(lake_copy)
    assert after[AS_OF]["table_versions"]["loan_snapshot"] == before[AS_OF]["table_versions"]["loan_snapshot"]
    assert after[MONTH_END]["table_versions"]["loan_snapshot"] > before[MONTH_END]["table_versions"]["loan_snapshot"]
    vacuumed = {r["figures"]["table"]: r["figures"] for r in records if r["event"] == "vacuumed"}
    assert before[AS_OF]["table_versions"]["loan_snapshot"] in vacuumed["loan_snapshot"]["versions_kept"]
    # Tables whose dates were all re-pinned lose their files from before the OPTIMIZE.
    assert vacuumed["collection_cases"]["files_deleted"] == sum(files_per_date(book.lake, "collection_cases").values())
    assert served_content(lake_copy) == content
    pinned_files_exist(lake_copy)
    snapshot = DeltaTable(str(lake_copy / "loan_snapshot")).to_pyarrow_table()
    today = snapshot.filter(pc.equal(snapshot["as_of_date"], pa.scalar(AS_OF, pa.date32())))
    assert today.num_rows == LOANS // 4 < len(content[(AS_OF, "loan_snapshot")])


# --------------------------------------------------------------------------------------------
# Deploy files: valid as written (Airflow is not installed here; the DAG file is parsed, not run)

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def dag_settings(path: Path) -> dict[str, dict[str, Any]]:
    """Each DAG's keyword arguments that are literals, by dag_id."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    dags = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "DAG":
            kwargs = {k.arg: k.value for k in node.keywords if k.arg}
            values = {k: ast.literal_eval(v) for k, v in kwargs.items() if isinstance(v, ast.Constant)}
            dags[values["dag_id"]] = values
    return dags


def test_airflow_dags_catch_up_nightly_one_date_at_a_time() -> None:
    path = DEPLOY / "airflow" / "postloan_dags.py"
    compile(path.read_text(encoding="utf-8"), str(path), "exec")
    dags = dag_settings(path)
    assert dags["postloan_nightly"]["catchup"] is True and dags["postloan_nightly"]["max_active_runs"] == 1
    assert dags["postloan_maintain"]["catchup"] is False and dags["postloan_maintain"]["max_active_runs"] == 1
    text = path.read_text(encoding="utf-8")
    assert '"depends_on_past": True' in text and '"{{ ds }}"' in text and "SparkSubmitOperator(" in text
    # What a cluster run needs (docs/cluster.md): the entry file of its own folder, the code zip,
    # and every jar `make setup` fetched, by name.
    assert 'application=f"{APP}/jobs/submit/postloan.py"' in text and "py_files=" in text
    listed = next(
        ast.literal_eval(node.value)
        for node in ast.walk(ast.parse(text))
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "DELTA_JARS"
    )
    assert sorted(listed) == sorted(Path(jar).name for jar in delta_jars())


def test_cron_wrapper_is_valid_bash_and_the_crontab_runs_it() -> None:
    script = DEPLOY / "nightly.sh"
    assert os.access(script, os.X_OK)
    subprocess.run(["bash", "-n", str(script)], check=True)
    jobs = [line for line in (DEPLOY / "crontab").read_text(encoding="utf-8").splitlines() if line[:1].isdigit()]
    assert len(jobs) == 2 and all("/deploy/nightly.sh" in job for job in jobs)
    assert "backfill --catch-up" in script.read_text(encoding="utf-8")


def test_the_image_is_built_from_named_bases_with_the_package_and_its_configuration() -> None:
    """The Dockerfile's bases are build arguments defaulting to the official images (a bank's
    registry mirror or deploy/image/bases-from-debian.sh replaces them), and it copies every
    package pyproject.toml installs and the configuration the entrypoints read."""
    root = DEPLOY.parent
    dockerfile = (root / "Dockerfile").read_text(encoding="utf-8")
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", dockerfile, re.MULTILINE))
    assert args == {"MAVEN_IMAGE": "maven:3.9-eclipse-temurin-17", "PYTHON_IMAGE": "python:3.11-slim-bookworm"}
    assert re.findall(r"^FROM (\S+)", dockerfile, re.MULTILINE) == ["${MAVEN_IMAGE}", "${PYTHON_IMAGE}"]
    copied = set(re.findall(r"^COPY (\w+) \1$", dockerfile, re.MULTILINE))
    packages = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["packages"]
    assert {pattern.rstrip("*") for pattern in packages["find"]["include"]} | {"conf"} <= copied
    assert 'ENTRYPOINT ["postloan"]' in dockerfile and "POSTLOAN_CONF=/app/conf" in dockerfile
    # What the image copies must not be left out of the build context.
    ignored = {line.strip() for line in (root / ".dockerignore").read_text(encoding="utf-8").splitlines()}
    assert not copied & ignored
    for script in ("bases-from-debian.sh", "smoke.sh"):
        path = DEPLOY / "image" / script
        assert os.access(path, os.X_OK)
        subprocess.run(["bash", "-n", str(path)], check=True)
    bases = (DEPLOY / "image" / "bases-from-debian.sh").read_text(encoding="utf-8")
    assert all(f"--build-arg {arg}=" in bases for arg in args)


def test_the_batch_yields_the_cpu_to_the_processes_beside_it() -> None:
    """`yield_cpu` (called before the Spark session is built) lowers the process's priority, never
    raises it back, and what the process starts afterwards (the Spark JVM) inherits it."""
    script = "\n".join(
        [
            "import os, subprocess, sys",
            "from jobs.priority import yield_cpu",
            "start = os.getpriority(os.PRIO_PROCESS, 0)",
            "lowered = yield_cpu(start + 3)",
            "kept = yield_cpu(start + 1)",
            "probe = 'import os; print(os.getpriority(os.PRIO_PROCESS, 0))'",
            "child = subprocess.run([sys.executable, '-c', probe], capture_output=True, text=True, check=True)",
            "print(start, lowered, kept, os.getpriority(os.PRIO_PROCESS, 0), child.stdout.strip())",
        ]
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    start, *after = (int(x) for x in out.stdout.split())
    # The suite runs at its normal priority (its in-process CLI runs use niceness 0).
    assert start <= 16
    assert after == [start + 3] * 4
