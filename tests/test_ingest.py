"""Ingest: every landing row is accepted or quarantined with its reason; structure errors stop."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import DataFrame, SparkSession

from jobs.ingest import checked_counts, ingest, unreconciled
from jobs.io import LandingError, count_landing, read_landing
from jobs.pipeline import settle
from jobs.stages import settle_partitioned
from schemas.landing import BORROWERS, BRANCHES, GUARANTORS, LANDING_TABLES, LOAN_CHILDREN, LOANS, SCHEDULE
from tests.helpers import AS_OF, text_frame

LOAN = {
    "loan_id": "L1",
    "borrower_id": "B1",
    "product_code": "P1",
    "branch_id": "S1",
    "officer_id": "O1",
    "channel_id": None,
    "principal": "1000.00",
    "disbursement_date": "2026-01-10",
    "maturity_date": "2027-01-10",
    "repayment_method": "EQUAL_INSTALLMENT",
    "payment_mode": "ENTRUSTED",
    "annual_rate": "0.05",
    "collateral_type": "CREDIT",
    "restructured_date": None,
    "restructure_count": None,
    "restructured_from_npl": None,
    "status": "ACTIVE",
    "closed_date": None,
}


def raw_book(spark: SparkSession, **tables: list[dict[str, str | None]]) -> dict[str, DataFrame]:
    base: dict[str, list[dict[str, str | None]]] = {
        "branches": [
            {"branch_id": "HQ", "parent_id": None, "level": "HQ", "name": "總行", "region_code": "R0"},
            {"branch_id": "S1", "parent_id": "HQ", "level": "SUB", "name": "支行", "region_code": "R1"},
        ],
        "products": [
            {
                "product_code": "P1",
                "name": "消費貸",
                "category": "CONSUMER",
                "low_risk": "false",
                "refinance_designed": None,
            }
        ],
        "borrowers": [
            {
                "borrower_id": "B1",
                "name": "張三豐",
                "id_number": "110101199003071234",
                "phone": "13800138000",
                "region_code": "R1",
            }
        ],
        "agencies": [{"agency_id": "A1", "name": "催收一", "region_codes": "R1", "capacity": "10", "status": "ACTIVE"}],
    }
    base.update(tables)
    return {t.name: text_frame(spark, t, base.get(t.name, [])) for t in LANDING_TABLES}


def quarantined(result_quarantine: DataFrame) -> list[tuple[str, str | None, str, str]]:
    return sorted(
        (r["source_table"], r["record_key"], r["reason_code"], r["reason_detail"]) for r in result_quarantine.collect()
    )


def test_bad_rows_are_quarantined_with_reasons_and_counts_reconcile(spark: SparkSession) -> None:
    loans = [
        LOAN,
        {**LOAN, "loan_id": None},
        {**LOAN, "loan_id": "L2", "principal": "-5.00"},
        {**LOAN, "loan_id": "L3", "disbursement_date": "2026-13-45"},
        {**LOAN, "loan_id": "L4", "repayment_method": "BALLOON"},
        {**LOAN, "loan_id": "L5"},
        {**LOAN, "loan_id": "L5", "principal": "2000.00"},  # same id, different content
        {**LOAN, "loan_id": "L6"},
        {**LOAN, "loan_id": "L6"},  # identical copy
        {**LOAN, "loan_id": "L7", "branch_id": "NOWHERE"},
        {**LOAN, "loan_id": "L8", "maturity_date": "2025-01-01"},
    ]
    schedule = [
        {"loan_id": "L1", "installment_no": "1", "due_date": "2026-02-10", "principal_due": "500", "interest_due": "5"},
        {"loan_id": "L1", "installment_no": "2", "due_date": "2026-01-01", "principal_due": "500", "interest_due": "5"},
        {"loan_id": "L2", "installment_no": "1", "due_date": "2026-02-10", "principal_due": "500", "interest_due": "5"},
        {"loan_id": "ZZ", "installment_no": "1", "due_date": "2026-02-10", "principal_due": "500", "interest_due": "5"},
        {"loan_id": "L6", "installment_no": "1", "due_date": "2026-02-10", "principal_due": "x", "interest_due": "5"},
    ]
    repayments = [
        {"txn_id": "T1", "loan_id": "L1", "value_date": "2026-02-10", "amount": "505.00"},
        {"txn_id": "T2", "loan_id": "L1", "value_date": "2026-02-11", "amount": "-505.00"},
        {"txn_id": "T3", "loan_id": "L5", "value_date": "2026-02-11", "amount": "10.00"},
        {"txn_id": None, "loan_id": "L1", "value_date": "2026-02-11", "amount": "10.00"},
    ]
    raw = raw_book(spark, loans=loans, schedule=schedule, repayments=repayments)
    result = ingest(raw, "run-1", AS_OF)
    got = quarantined(result.quarantine())
    assert got == sorted(
        [
            ("loans", "", "NULL_KEY", "NULL_KEY:loan_id"),
            ("loans", "L2", "NEGATIVE_AMOUNT", "NEGATIVE_AMOUNT:principal"),
            ("loans", "L3", "UNPARSABLE_VALUE", "UNPARSABLE_VALUE:disbursement_date"),
            ("loans", "L4", "INVALID_VALUE", "INVALID_VALUE:repayment_method"),
            ("loans", "L5", "DUPLICATE_KEY", "DUPLICATE_KEY:loan_id"),
            ("loans", "L5", "DUPLICATE_KEY", "DUPLICATE_KEY:loan_id"),
            ("loans", "L6", "DUPLICATE_ROW", "DUPLICATE_ROW:loan_id"),
            ("loans", "L7", "UNKNOWN_REFERENCE", "UNKNOWN_REFERENCE:branch_id"),
            ("loans", "L8", "MATURITY_BEFORE_DISBURSEMENT", "MATURITY_BEFORE_DISBURSEMENT:maturity_date"),
            ("schedule", "L1|2", "DUE_BEFORE_DISBURSEMENT", "DUE_BEFORE_DISBURSEMENT:due_date"),
            ("schedule", "L2|1", "LOAN_QUARANTINED", "LOAN_QUARANTINED:loan_id"),
            ("schedule", "ZZ|1", "UNKNOWN_LOAN", "UNKNOWN_LOAN:loan_id"),
            ("schedule", "L6|1", "UNPARSABLE_VALUE", "UNPARSABLE_VALUE:principal_due"),
            ("repayments", "T3", "LOAN_QUARANTINED", "LOAN_QUARANTINED:loan_id"),
            ("repayments", "", "NULL_KEY", "NULL_KEY:txn_id"),
        ]
    )
    accepted = {name: frame.count() for name, frame in result.tables.items()}
    assert accepted["loans"] == 2  # L1 and one copy of L6
    assert accepted["schedule"] == 1 and accepted["repayments"] == 2
    inputs = {name: frame.count() for name, frame in raw.items()}
    by_source: dict[str, int] = {}
    for source, *_ in got:
        by_source[source] = by_source.get(source, 0) + 1
    assert unreconciled(inputs, accepted, by_source) == []


def _plans_a_shuffle(frame: DataFrame) -> bool:
    return "Exchange" in frame._jdf.queryExecution().executedPlan().toString()


def test_loan_children_kept_by_loan_are_grouped_by_loan_without_a_shuffle(spark: SparkSession) -> None:
    """The pipeline settles the loan children keeping their loan_id partitioning: the
    delinquency's windows and aggregates by loan then move none of their rows again."""
    loans = [LOAN, {**LOAN, "loan_id": "L2"}]
    schedule = [
        {"loan_id": "L1", "installment_no": "1", "due_date": "2026-02-10", "principal_due": "500", "interest_due": "5"},
        {"loan_id": "L1", "installment_no": "2", "due_date": "2026-03-10", "principal_due": "500", "interest_due": "5"},
        {"loan_id": "L2", "installment_no": "1", "due_date": "2026-02-10", "principal_due": "900", "interest_due": "9"},
        {"loan_id": "ZZ", "installment_no": "1", "due_date": "2026-02-10", "principal_due": "500", "interest_due": "5"},
    ]
    repayments = [
        {"txn_id": "T1", "loan_id": "L1", "value_date": "2026-02-10", "amount": "505.00"},
        {"txn_id": "T2", "loan_id": "L2", "value_date": "2026-02-11", "amount": "909.00"},
    ]
    raw = raw_book(spark, loans=loans, schedule=schedule, repayments=repayments)
    # As the nightly runs (conf/spark): adaptive execution on; its coalescing off, so that these
    # few rows are not packed into one partition, which any grouping accepts as it is.
    session = {"spark.sql.adaptive.enabled": "true", "spark.sql.adaptive.coalescePartitions.enabled": "false"}
    before = {key: spark.conf.get(key) for key in session}
    try:
        for key, value in session.items():
            spark.conf.set(key, value)
        kept = ingest(raw, "run-1", AS_OF, settle, settle_partitioned)
        plain = ingest(raw, "run-1", AS_OF, settle)
        assert spark.conf.get("spark.sql.adaptive.enabled") == "true"
        for name in ("schedule", "repayments"):
            assert not _plans_a_shuffle(kept.accepted(name).groupBy("loan_id").count()), name
            # Settled from an adaptive plan, the same grouping shuffles the rows again.
            assert _plans_a_shuffle(plain.accepted(name).groupBy("loan_id").count()), name
    finally:
        for key, value in before.items():
            spark.conf.set(key, value)
    # Same rows either way; ZZ is an unknown loan.
    per_loan = {r["loan_id"]: r["count"] for r in kept.accepted("schedule").groupBy("loan_id").count().collect()}
    assert per_loan == {"L1": 2, "L2": 1}
    assert sorted(r["txn_id"] for r in kept.accepted("repayments").collect()) == ["T1", "T2"]
    assert checked_counts(kept, "schedule") == (3, 1) == checked_counts(plain, "schedule")


def test_every_loan_child_is_checked_against_the_loans_aggregated_once(spark: SparkSession) -> None:
    """The children are checked against one row per loan id (a copy accepted? disbursed when?),
    kept once by loan and in loan order: no child's checks aggregate, shuffle or sort the loans
    again (at 10M loans each of the eight children did, 12 s for a table of 29k rows)."""
    loans = [LOAN, {**LOAN, "loan_id": "L2", "principal": "0"}]
    schedule = [
        {"loan_id": "L1", "installment_no": "1", "due_date": "2026-02-10", "principal_due": "500", "interest_due": "5"},
        {"loan_id": "L2", "installment_no": "1", "due_date": "2026-02-10", "principal_due": "900", "interest_due": "9"},
        {"loan_id": "ZZ", "installment_no": "1", "due_date": "2026-02-10", "principal_due": "500", "interest_due": "5"},
    ]
    repayments = [
        {"txn_id": "T1", "loan_id": "L1", "value_date": "2026-02-10", "amount": "505.00"},
        {"txn_id": "T2", "loan_id": "ZZ", "value_date": "2026-02-11", "amount": "909.00"},
    ]
    raw = raw_book(spark, loans=loans, schedule=schedule, repayments=repayments)
    plans: list[str] = []

    def recording(frame: DataFrame) -> DataFrame:
        # The physical plan as settle_partitioned runs it: without adaptive execution.
        adaptive = spark.conf.get("spark.sql.adaptive.enabled")
        spark.conf.set("spark.sql.adaptive.enabled", "false")
        try:
            plans.append(frame._jdf.queryExecution().executedPlan().toString())
        finally:
            spark.conf.set("spark.sql.adaptive.enabled", adaptive or "false")
        return settle_partitioned(frame)

    ingested = ingest(raw, "run-1", AS_OF, settle, recording)
    status, *children = plans
    assert "HashAggregate" in status and "Sort [_seen" in status
    assert len(children) == len(LOAN_CHILDREN)
    for child, plan in zip(LOAN_CHILDREN, children, strict=True):
        assert "HashAggregate" not in plan, child.name
        assert "Sort [_seen" not in plan, child.name
        # Its own moves only: by loan, and first by its key unless the key starts with the loan.
        assert plan.count("Exchange") == (1 if child.key[0] == "loan_id" else 2), child.name
    # L2 (principal 0) is refused, so its instalment is too; ZZ is no loan at all.
    assert checked_counts(ingested, "schedule") == (1, 2)
    assert checked_counts(ingested, "repayments") == (1, 1)
    reasons = {r["reason_code"] for r in ingested.quarantine().where("source_table != 'loans'").collect()}
    assert reasons == {"LOAN_QUARANTINED", "UNKNOWN_LOAN"}


def test_quarantined_personal_data_is_masked(spark: SparkSession) -> None:
    borrowers = [
        {
            "borrower_id": "B1",
            "name": "張三豐",
            "id_number": "110101199003071234",
            "phone": "13800138000",
            "region_code": "R1",
        },
        {
            "borrower_id": "B2",
            "name": "李四",
            "id_number": "110101199003075678",
            "phone": "13900139000",
            "region_code": None,
        },
    ]
    result = ingest(raw_book(spark, borrowers=borrowers), "run-1", AS_OF)
    rows = result.quarantine().where("source_table = 'borrowers'").collect()
    assert [r["reason_code"] for r in rows] == ["MISSING_VALUE"]
    record = json.loads(rows[0]["raw_record"])
    assert record == {
        "borrower_id": "B2",
        "name": "李*",
        "id_number": "110101********5678",
        "phone": "139****9000",
        "region_code": None,
    }
    assert "13900139000" not in rows[0]["raw_record"]


def test_amounts_of_a_trillion_yuan_or_more_are_refused_in_either_sign(spark: SparkSession) -> None:
    # The bound is 1,000,000,000,000.00 yuan: one cent below it is accepted, the bound itself not;
    # a reversal (negative repayment) is bounded by its size.
    loans = [
        {**LOAN, "loan_id": "L1", "principal": "999999999999.99"},
        {**LOAN, "loan_id": "L2", "principal": "1000000000000.00"},
    ]
    repayments = [
        {"txn_id": "T1", "loan_id": "L1", "value_date": "2026-02-10", "amount": "-999999999999.99"},
        {"txn_id": "T2", "loan_id": "L1", "value_date": "2026-02-10", "amount": "-1000000000000.00"},
        {"txn_id": "T3", "loan_id": "L1", "value_date": "2026-02-10", "amount": "1000000000000.01"},
    ]
    result = ingest(raw_book(spark, loans=loans, repayments=repayments), "run-1", AS_OF)
    assert quarantined(result.quarantine()) == [
        ("loans", "L2", "AMOUNT_OUT_OF_RANGE", "AMOUNT_OUT_OF_RANGE:principal"),
        ("repayments", "T2", "AMOUNT_OUT_OF_RANGE", "AMOUNT_OUT_OF_RANGE:amount"),
        ("repayments", "T3", "AMOUNT_OUT_OF_RANGE", "AMOUNT_OUT_OF_RANGE:amount"),
    ]
    assert [r["txn_id"] for r in result.tables["repayments"].collect()] == ["T1"]


def test_a_row_refused_after_parsing_is_recorded_as_delivered(spark: SparkSession, tmp_path: Path) -> None:
    # Rows that parse cleanly travel without their raw values and are rebuilt for the record: a
    # typed Parquet value reads back as delivered; a text "500" does not ("500.00"), so it is kept.
    folder = tmp_path / "schedule"
    folder.mkdir()
    money = pa.decimal128(18, 2)
    typed = pa.table(
        {
            "loan_id": pa.array(["ZZ"]),
            "installment_no": pa.array([3], pa.int32()),
            "due_date": pa.array([dt.date(2026, 2, 10)]),
            "principal_due": pa.array([Decimal("500.00")], money),
            "interest_due": pa.array([Decimal("5.10")], money),
        }
    )
    pq.write_table(typed, folder / "part-0.parquet")
    text = [
        {"loan_id": "YY", "installment_no": "1", "due_date": "2026-02-10", "principal_due": "500", "interest_due": "5"}
    ]
    typed_book = {**raw_book(spark), "schedule": read_landing(spark, tmp_path, SCHEDULE)}
    text_book = raw_book(spark, schedule=text)
    records = {
        r["record_key"]: (r["reason_code"], json.loads(r["raw_record"]))
        for book in (typed_book, text_book)
        for r in ingest(book, "run-1", AS_OF).quarantine().where("source_table = 'schedule'").collect()
    }
    assert records == {
        "ZZ|3": (
            "UNKNOWN_LOAN",
            {
                "loan_id": "ZZ",
                "installment_no": "3",
                "due_date": "2026-02-10",
                "principal_due": "500.00",
                "interest_due": "5.10",
            },
        ),
        "YY|1": (
            "UNKNOWN_LOAN",
            {
                "loan_id": "YY",
                "installment_no": "1",
                "due_date": "2026-02-10",
                "principal_due": "500",
                "interest_due": "5",
            },
        ),
    }


def test_missing_required_table_names_the_folder(spark: SparkSession, tmp_path: Path) -> None:
    with pytest.raises(LandingError, match=r"landing/loans: missing table folder"):
        read_landing(spark, tmp_path / "landing", LOANS)


def test_missing_column_names_the_file_and_column(spark: SparkSession, tmp_path: Path) -> None:
    folder = tmp_path / "schedule"
    folder.mkdir()
    table = pa.table({"loan_id": ["L1"], "installment_no": [1], "due_date": ["2026-01-01"], "principal_due": [1.0]})
    pq.write_table(table, folder / "part-0.parquet")
    with pytest.raises(LandingError, match=r"schedule/part-0.parquet: missing column interest_due"):
        read_landing(spark, tmp_path, SCHEDULE)


def test_unreadable_parquet_names_the_file(spark: SparkSession, tmp_path: Path) -> None:
    folder = tmp_path / "borrowers"
    folder.mkdir()
    (folder / "part-0.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(LandingError, match=r"borrowers/part-0.parquet: unreadable Parquet file"):
        read_landing(spark, tmp_path, BORROWERS)


def test_csv_missing_column_names_the_file(spark: SparkSession, tmp_path: Path) -> None:
    folder = tmp_path / "borrowers"
    folder.mkdir()
    (folder / "b.csv").write_text("borrower_id,name,id_number,region_code\nB1,x,y,R1\n", encoding="utf-8")
    with pytest.raises(LandingError, match=r"borrowers/b.csv: missing column phone"):
        read_landing(spark, tmp_path, BORROWERS)


# The quarantine records of the two borrowers whose text is not UTF-8, delivered alike in the CSV
# and the Parquet test: stray bytes shown as \xNN, a delivered backslash doubled, PII masked.
BAD_BORROWER_RECORDS = [
    {
        "borrower_id": "B2",
        "name": "\\" + "*" * 15,
        "id_number": "110101********5678",
        "phone": None,
        "region_code": "R1",
    },
    {
        "borrower_id": "B3",
        "name": "王********",
        "id_number": "110101***********\\xff",
        "phone": "139****9000",
        "region_code": "R\\2",
    },
]


def test_parquet_text_whose_bytes_are_not_utf8_is_quarantined_not_the_file(spark: SparkSession, tmp_path: Path) -> None:
    # A writer that does not check its strings (pyarrow does not on write either): the bytes reach
    # Spark unchecked, and would reach the lake, where delta-rs refuses the whole date.
    def text(values: list[bytes | None]) -> pa.Array:
        return pa.array(values, pa.binary()).view(pa.string())

    people = tmp_path / "borrowers"
    people.mkdir()
    table = pa.table(
        {
            "borrower_id": text([b"B1", b"B2", b"B3", b"B4"]),
            # B2: a name exported in GBK; B3: a name cut inside its last character; B4: U+FFFD
            # delivered as valid UTF-8 is text like any other
            "name": text(["張三豐".encode(), "李四".encode("gbk"), "王五".encode()[:-1], "\ufffd名".encode()]),
            # B3: a stray byte in the ID number, and a backslash in its region delivered as text
            "id_number": text([b"110101199003071234", b"110101199003075678", b"11010119900307901\xff", b"1101011990"]),
            "phone": text([b"13800138000", None, b"13900139000", None]),
            "region_code": text([b"R1", b"R1", b"R\\2", b"R1"]),
        }
    )
    pq.write_table(table, people / "part-0.parquet")
    raw = raw_book(spark, loans=[LOAN])
    raw["borrowers"] = read_landing(spark, tmp_path, BORROWERS)
    result = ingest(raw, "run-1", AS_OF, settle)

    rows = sorted(result.quarantine().collect(), key=lambda r: r["record_key"])
    assert [(r["record_key"], r["reason_code"], r["reason_detail"]) for r in rows] == [
        ("B2", "INVALID_ENCODING", "INVALID_ENCODING:name"),
        ("B3", "INVALID_ENCODING", "INVALID_ENCODING:name; INVALID_ENCODING:id_number"),
    ]
    # As in CSV: stray bytes shown as \xNN, a delivered backslash doubled, personal data masked.
    assert [json.loads(r["raw_record"]) for r in rows] == BAD_BORROWER_RECORDS
    assert sorted(r["borrower_id"] for r in result.accepted("borrowers").collect()) == ["B1", "B4"]
    assert checked_counts(result, "borrowers") == (2, 2)
    assert count_landing(spark, tmp_path, BORROWERS, raw["borrowers"]) == 4


def test_csv_row_whose_bytes_are_not_utf8_is_quarantined_not_the_file(spark: SparkSession, tmp_path: Path) -> None:
    people, guarantors = tmp_path / "borrowers", tmp_path / "guarantors"
    people.mkdir()
    guarantors.mkdir()
    # Byte-order mark and CRLF line ends, as some exports write them.
    (people / "part-0.csv").write_bytes(
        b"\xef\xbb\xbfborrower_id,name,id_number,phone,region_code\r\n"
        + "B1,張三豐,110101199003071234,13800138000,R1\r\n".encode()
        # A name exported in GBK into a UTF-8 extract.
        + b"B2,"
        + "李四".encode("gbk")
        + b",110101199003075678,,R1\r\n"
        # A name cut inside its last character, a stray byte in the ID number, a backslash.
        + b"B3,"
        + "王五".encode()[:-1]
        + b",11010119900307901\xff,13900139000,R\\2\r\n"
        # U+FFFD delivered as valid UTF-8 is text like any other.
        + "B4,\ufffd名,110101199003071111,,R1\r\n".encode()
    )
    (people / "part-1.csv").write_bytes(
        "borrower_id,name,id_number,phone,region_code\nB5,趙六,1101011990,,R2\n".encode()
    )
    (guarantors / "part-0.csv").write_bytes(
        "guarantor_id,loan_id,name,id_number,phone\nG1,L1,錢七,110101198001011234,\n".encode()
        + b"G2,L\x9f1,ok,110101198001015678,\n"
    )
    raw = raw_book(spark, loans=[LOAN])
    raw["borrowers"] = read_landing(spark, tmp_path, BORROWERS)
    raw["guarantors"] = read_landing(spark, tmp_path, GUARANTORS)
    # Settled as in the nightly run: unsettled, every query replans the whole ingest (3x slower).
    result = ingest(raw, "run-1", AS_OF, settle)

    rows = sorted(result.quarantine().collect(), key=lambda r: (r["source_table"], r["record_key"]))
    assert [(r["source_table"], r["record_key"], r["reason_code"], r["reason_detail"]) for r in rows] == [
        ("borrowers", "B2", "INVALID_ENCODING", "INVALID_ENCODING:name"),
        ("borrowers", "B3", "INVALID_ENCODING", "INVALID_ENCODING:name; INVALID_ENCODING:id_number"),
        ("guarantors", "G2", "INVALID_ENCODING", "INVALID_ENCODING:loan_id"),
    ]
    # Stray bytes shown as \xNN (personal data still masked); no U+FFFD invented.
    assert [json.loads(r["raw_record"]) for r in rows] == [
        *BAD_BORROWER_RECORDS,
        {"guarantor_id": "G2", "loan_id": "L\\x9f1", "name": "o*", "id_number": "110101********5678", "phone": None},
    ]
    assert sorted((r["borrower_id"], r["name"]) for r in result.accepted("borrowers").collect()) == [
        ("B1", "張三豐"),
        ("B4", "\ufffd名"),
        ("B5", "趙六"),
    ]
    assert [r["guarantor_id"] for r in result.accepted("guarantors").collect()] == ["G1"]
    assert checked_counts(result, "borrowers") == (3, 2)
    assert checked_counts(result, "guarantors") == (1, 1)
    assert count_landing(spark, tmp_path, BORROWERS, raw["borrowers"]) == 5


def test_csv_files_with_their_columns_in_different_orders_are_read_by_name(spark: SparkSession, tmp_path: Path) -> None:
    folder = tmp_path / "branches"
    folder.mkdir()
    (folder / "a.csv").write_text("branch_id,parent_id,level,name,region_code\nHQ,,HQ,總行,R0\n", encoding="utf-8")
    (folder / "b.csv").write_text("branch_id,level,parent_id,name,region_code\nS1,SUB,HQ,支行,R1\n", encoding="utf-8")
    rows = sorted(tuple(r) for r in read_landing(spark, tmp_path, BRANCHES).collect())
    # Read as one, Spark took b.csv's order for both: head office got parent HQ and no level.
    assert rows == [("HQ", None, "HQ", "總行", "R0"), ("S1", "HQ", "SUB", "支行", "R1")]


def test_csv_column_delivered_twice_names_the_file(spark: SparkSession, tmp_path: Path) -> None:
    folder = tmp_path / "borrowers"
    folder.mkdir()
    (folder / "b.csv").write_text(
        "borrower_id,name,id_number,phone,region_code,name\nB1,x,y,z,R1,w\n", encoding="utf-8"
    )
    with pytest.raises(LandingError, match=r"borrowers/b.csv: column name appears 2 times"):
        read_landing(spark, tmp_path, BORROWERS)
