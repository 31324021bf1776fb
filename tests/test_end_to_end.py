"""End to end: generate a book, run two business dates, read every output with delta-rs.

The lake is checked with the independent `deltalake` reader (what the API and BI tools use),
against the landing files read with pyarrow, not with the code under test.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable
from pyspark.sql import SparkSession

from jobs.cli import main as cli_main
from jobs.config import AppConfig, load_config
from jobs.generate import generate_landing
from jobs.io import LandingError
from jobs.pipeline import RunReport, run_nightly
from schemas.registry import LAKE_TABLES
from tests.helpers import conf_copy

MONTH_END = dt.date(2026, 9, 30)
AS_OF = dt.date(2026, 10, 31)
LOANS = 600


@dataclass
class Book:
    landing: Path
    lake: Path
    config: AppConfig
    reports: list[RunReport]


@pytest.fixture(scope="module")
def book(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory, conf_dir: Path) -> Iterator[Book]:
    root = tmp_path_factory.mktemp("e2e")
    landing, lake = root / "landing", root / "lake"
    generate_landing(spark, LOANS, AS_OF, 5, landing, "parquet", bad_rows=0.01)
    config = load_config(conf_dir)
    reports = [run_nightly(spark, config, day, landing, lake) for day in (MONTH_END, AS_OF)]
    yield Book(landing, lake, config, reports)


def landing_table(book: Book, name: str) -> pa.Table:
    return ds.dataset(book.landing / name, format="parquet").to_table()


def lake_table(book: Book, name: str, day: dt.date | None = None) -> pa.Table:
    table = DeltaTable(str(book.lake / name)).to_pyarrow_table()
    if day is not None:
        table = table.filter(pc.equal(table["as_of_date"], pa.scalar(day, pa.date32())))
    return table


def ledger(book: Book) -> list[dict]:
    return sorted(lake_table(book, "run_ledger").to_pylist(), key=lambda r: (r["started_at"], r["status"]))


def test_every_lake_table_is_readable_by_delta_rs_with_contract_columns_and_comments(book: Book) -> None:
    for table in LAKE_TABLES:
        path = book.lake / table.name
        assert (path / "_delta_log").is_dir(), f"the batch wrote no {table.name}"
        delta = DeltaTable(str(path))
        assert delta.metadata().description == table.comment
        assert [f.name for f in delta.schema().fields] == table.names
        assert list(delta.metadata().partition_columns) == list(table.partition_by)
        comments = {f.name: (f.metadata or {}).get("comment") for f in delta.schema().fields}
        assert comments == {c.name: c.comment for c in table.columns}
        protocol = delta.protocol()
        assert protocol.min_reader_version <= 3 and not (protocol.reader_features or [])


def test_snapshot_holds_exactly_the_accepted_loans_on_the_book(book: Book) -> None:
    loans = landing_table(book, "loans").to_pylist()
    refused: dict[str, set[str]] = {}
    for r in lake_table(book, "quarantine", AS_OF).to_pylist():
        if r["source_table"] == "loans":
            refused.setdefault(r["record_key"], set()).add(r["reason_code"])
    # An identical copy of a row is refused as DUPLICATE_ROW while the row itself is accepted.
    expected = {
        r["loan_id"]
        for r in loans
        if r["loan_id"]
        and refused.get(r["loan_id"], {"DUPLICATE_ROW"}) == {"DUPLICATE_ROW"}
        and r["disbursement_date"] <= AS_OF
        and (r["closed_date"] is None or r["closed_date"] > AS_OF)
    }
    assert len(expected) > LOANS // 3
    snapshot = lake_table(book, "loan_snapshot", AS_OF)
    assert set(snapshot["loan_id"].to_pylist()) == expected
    assert snapshot.num_rows == len(expected)


def test_ledger_counts_reconcile_and_second_run_builds_on_the_first(book: Book) -> None:
    rows = [r for r in ledger(book) if r["status"] == "SUCCEEDED"]
    assert [r["as_of_date"] for r in rows] == [MONTH_END, AS_OF]
    first, second = rows
    assert first["previous_as_of_date"] is None and second["previous_as_of_date"] == MONTH_END
    for row in rows:
        inputs, accepted, refused = (dict(row[k]) for k in ("input_rows", "accepted_rows", "quarantined_rows"))
        for name, delivered in inputs.items():
            assert delivered == accepted[name] + refused.get(name, 0), name
        # Rows delivered, counted from the files themselves.
        for name in ("loans", "schedule", "repayments"):
            assert inputs[name] == landing_table(book, name).num_rows
        quarantine = lake_table(book, "quarantine", row["as_of_date"])
        assert quarantine.num_rows == sum(refused.values()) > 0
        snapshot = lake_table(book, "loan_snapshot", row["as_of_date"])
        assert dict(row["output_rows"])["loan_snapshot"] == snapshot.num_rows
        assert dict(row["summary"])["loans"] == snapshot.num_rows
    # Versions recorded by each run read back the same rows (what the API serves).
    version = dict(second["table_versions"])["loan_snapshot"]
    pinned = DeltaTable(str(book.lake / "loan_snapshot"), version=version).to_pyarrow_table()
    assert pinned.filter(pc.equal(pinned["as_of_date"], pa.scalar(AS_OF, pa.date32()))).num_rows == (
        lake_table(book, "loan_snapshot", AS_OF).num_rows
    )


def test_every_table_of_the_date_is_recorded_and_counted_in_the_ledger(book: Book) -> None:
    run = next(r for r in reversed(ledger(book)) if r["status"] == "SUCCEEDED" and r["as_of_date"] == AS_OF)
    versions, counts = dict(run["table_versions"]), dict(run["output_rows"])
    dated = [t for t in LAKE_TABLES if t.name != "run_ledger"]
    assert set(versions) == set(counts) == {t.name for t in dated}
    for table in dated:
        rows = DeltaTable(str(book.lake / table.name), version=versions[table.name]).to_pyarrow_table()
        on_date = rows.filter(pc.equal(rows["as_of_date"], pa.scalar(AS_OF, pa.date32())))
        assert on_date.num_rows == counts[table.name], table.name
    # The inspection counts in the summary are those of the table itself.
    tasks = lake_table(book, "inspection_tasks", AS_OF).to_pylist()
    summary = dict(run["summary"])
    assert summary["tasks"] == len(tasks) > 0
    for status in {t["status"] for t in tasks}:
        assert summary[f"tasks_{status.lower()}"] == sum(t["status"] == status for t in tasks)
    assert summary["settled_loans"] == lake_table(book, "settled_loans", AS_OF).num_rows


def test_later_tables_reconcile_with_the_loan_snapshot(book: Book) -> None:
    snapshot = lake_table(book, "loan_snapshot", AS_OF).to_pylist()
    on_book = {r["loan_id"]: r for r in snapshot}
    # Head-office portfolio row: every loan and every yuan of the snapshot, counted by hand here.
    metrics = lake_table(book, "portfolio_metrics", AS_OF).to_pylist()
    hq = next(m for m in metrics if m["grouping"] == "HQ")
    assert hq["loan_count"] == len(snapshot)
    assert hq["outstanding_balance"] == sum(r["outstanding_principal"] for r in snapshot)
    assert hq["overdue_count"] == sum(r["dpd"] > 0 for r in snapshot)
    npl = {"SUBSTANDARD", "DOUBTFUL", "LOSS"}
    assert hq["npl_count"] == sum(r["risk_class"] in npl for r in snapshot)
    # Tier-1 rows partition the head office.
    tier1 = [m for m in metrics if m["grouping"] == "TIER1_BRANCH"]
    assert sum(m["loan_count"] for m in tier1) == hq["loan_count"]
    assert sum(m["outstanding_balance"] for m in tier1) == hq["outstanding_balance"]
    # Collection cases and placements name loans on the book and agree with their dpd.
    cases = lake_table(book, "collection_cases", AS_OF).to_pylist()
    assert cases and all(c["loan_id"] in on_book and c["dpd"] == on_book[c["loan_id"]]["dpd"] for c in cases)
    assert {c["loan_id"] for c in cases} >= {r["loan_id"] for r in snapshot if r["dpd"] > 30}
    agencies = {r["agency_id"]: r["status"] for r in landing_table(book, "agencies").to_pylist()}
    placements = lake_table(book, "agency_placements", AS_OF).to_pylist()
    placed_today = [p for p in placements if p["placed_date"] == AS_OF]
    assert all(agencies.get(p["agency_id"]) == "ACTIVE" for p in placed_today)
    # Inspection tasks are owned and name loans that exist.
    loans = set(landing_table(book, "loans")["loan_id"].to_pylist())
    tasks = lake_table(book, "inspection_tasks", AS_OF).to_pylist()
    assert all(t["loan_id"] in loans for t in tasks if t["loan_id"] is not None)


def test_history_records_changes_between_the_two_runs(book: Book) -> None:
    before = {r["loan_id"]: r["risk_class"] for r in lake_table(book, "loan_snapshot", MONTH_END).to_pylist()}
    after = {r["loan_id"]: r["risk_class"] for r in lake_table(book, "loan_snapshot", AS_OF).to_pylist()}
    expected = {loan: (before.get(loan), cls) for loan, cls in after.items() if before.get(loan) != cls}
    history = {
        r["loan_id"]: (r["from_class"], r["to_class"])
        for r in lake_table(book, "classification_history", AS_OF).to_pylist()
    }
    assert history == expected
    assert any(v[0] is not None for v in history.values())


def test_book_has_every_bucket_and_class(book: Book) -> None:
    snapshot = lake_table(book, "loan_snapshot", AS_OF)
    # 600 loans (seed 5) reach every class but DOUBTFUL (270-360 days past due) on this date.
    assert {"NORMAL", "SPECIAL_MENTION", "SUBSTANDARD", "LOSS"} <= set(snapshot["risk_class"].to_pylist())
    assert {"M0", "M1", "M7+"} <= set(snapshot["bucket"].to_pylist())
    assert all(reasons for reasons in snapshot["risk_reasons"].to_pylist())


def test_backfill_of_both_dates_gives_the_content_the_nightly_runs_gave(
    book: Book, conf_dir: Path, tmp_path: Path
) -> None:
    """`postloan backfill` over the range reruns each month-end in order: every table of every
    date comes out as the nightly runs wrote it (the rerun replaces the date, never appends)."""

    def content(name: str, day: dt.date) -> list[tuple]:
        rows = lake_table(book, name, day)
        # run_id names the run itself (quarantine rows), so it differs between runs by design.
        if "run_id" in rows.column_names:
            rows = rows.drop_columns(["run_id"])
        return sorted(tuple(sorted((k, repr(v)) for k, v in r.items())) for r in rows.to_pylist())

    dated = [t.name for t in LAKE_TABLES if t.name != "run_ledger"]
    before = {(name, day): content(name, day) for name in dated for day in (MONTH_END, AS_OF)}
    runs_before = len([r for r in ledger(book) if r["status"] == "SUCCEEDED"])
    argv = ["backfill", "--from", "2026-09-01", "--to", AS_OF.isoformat(), "--every", "month-end"]
    conf = conf_copy(conf_dir, tmp_path / "conf")
    paths = ["--landing", str(book.landing), "--lake", str(book.lake), "--conf", str(conf)]
    assert cli_main([*argv, *paths]) == 0
    succeeded = [r for r in ledger(book) if r["status"] == "SUCCEEDED"]
    assert [r["as_of_date"] for r in succeeded[runs_before:]] == [MONTH_END, AS_OF]
    for (name, day), rows in before.items():
        assert content(name, day) == rows, (name, day)


def test_structurally_bad_input_leaves_the_lake_untouched(spark: SparkSession, book: Book, tmp_path: Path) -> None:
    broken = tmp_path / "landing"
    shutil.copytree(book.landing, broken)
    for part in (broken / "repayments").glob("*.parquet"):
        table = ds.dataset(part, format="parquet").to_table().drop(["amount"])
        pq.write_table(table, part)

    def files() -> dict[str, float]:
        return {str(p): p.stat().st_mtime for p in book.lake.rglob("*") if p.is_file()}

    before = files()
    with pytest.raises(LandingError, match=r"repayments/.*\.parquet: missing column amount"):
        run_nightly(spark, book.config, AS_OF, broken, book.lake)
    assert files() == before
