"""The sample loan book: deterministic, exactly the landing contract, consistent, and varied."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from jobs.cli import main as cli_main
from jobs.generate import generate_landing, parse_product_mix, product_shares
from jobs.io import find_landing
from schemas.base import Table
from schemas.landing import (
    BRANCHES,
    CHANNELS,
    LANDING_TABLES,
    LOAN_CHILDREN,
    LOANS,
    OFFICERS,
    PAYMENT_MODES,
    REPAYMENT_METHODS,
    SIGNAL_TYPES,
)

AS_OF = dt.date(2026, 10, 31)
LOANS_N = 2000


@pytest.fixture(scope="module")
def book(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    landing = tmp_path_factory.mktemp("book")
    return landing, generate_landing(spark, LOANS_N, AS_OF, 7, landing)


def read(spark: SparkSession, landing: Path, table: Table) -> DataFrame:
    return spark.read.parquet(str(landing / table.name))


def tables(spark: SparkSession, landing: Path) -> dict[str, DataFrame]:
    return {t.name: read(spark, landing, t) for t in LANDING_TABLES}


def file_digests(landing: Path) -> dict[str, str]:
    return {
        str(p.relative_to(landing)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(landing.rglob("*")) if p.is_file()
    }


def test_same_seed_gives_identical_files_and_another_seed_does_not(spark: SparkSession, tmp_path: Path) -> None:
    first = generate_landing(spark, 500, AS_OF, 11, tmp_path / "a")
    second = generate_landing(spark, 500, AS_OF, 11, tmp_path / "b")
    other = generate_landing(spark, 500, AS_OF, 12, tmp_path / "c")

    assert first == second
    assert file_digests(tmp_path / "a") == file_digests(tmp_path / "b")
    changed = {
        name for name, digest in file_digests(tmp_path / "c").items() if file_digests(tmp_path / "a").get(name) != digest
    }
    assert {"loans/part-00000.parquet", "schedule/part-00000.parquet", "repayments/part-00000.parquet"} <= changed
    assert other["loans"] == 500


def test_every_table_is_written_with_exactly_the_contract_schema(
    spark: SparkSession, book: tuple[Path, dict[str, int]]
) -> None:
    landing, counts = book
    assert set(counts) == {t.name for t in LANDING_TABLES}
    for table in LANDING_TABLES:
        actual_df = read(spark, landing, table)
        assert [(f.name, f.dataType) for f in actual_df.schema] == [(f.name, f.dataType) for f in table.schema]
        assert actual_df.count() == counts[table.name] > 0, table.name
        # The night reads it with the schema its footers give, which must be Spark's own.
        found = find_landing(landing, table)
        assert found is not None and found.schema == actual_df.schema, table.name
    assert counts["loans"] == LOANS_N


def test_keys_are_unique_and_references_resolve(spark: SparkSession, book: tuple[Path, dict[str, int]]) -> None:
    landing, _ = book
    t = tables(spark, landing)
    for table in LANDING_TABLES:
        frame = t[table.name]
        assert frame.select(*table.key).distinct().count() == frame.count(), f"duplicate key in {table.name}"

    def dangling(child: str, column: str, parent: str, key: str) -> int:
        refs = t[child].where(F.col(column).isNotNull()).select(F.col(column).alias("_ref"))
        return refs.join(t[parent], refs["_ref"] == t[parent][key], "left_anti").count()

    for child in LOAN_CHILDREN:
        assert dangling(child.name, "loan_id", "loans", "loan_id") == 0, child.name
    for column, parent, key in (
        ("borrower_id", "borrowers", "borrower_id"), ("product_code", "products", "product_code"),
        ("branch_id", "branches", "branch_id"), ("officer_id", "officers", "officer_id"),
        ("channel_id", "channels", "channel_id"),
    ):
        assert dangling("loans", column, parent, key) == 0, column
    assert dangling("risk_signals", "borrower_id", "borrowers", "borrower_id") == 0
    assert dangling("officers", "branch_id", "branches", "branch_id") == 0
    assert dangling("channels", "manager_officer_id", "officers", "officer_id") == 0
    assert dangling("branches", "parent_id", "branches", "branch_id") == 0
    assert dangling("completed_inspections", "officer_id", "officers", "officer_id") == 0
    assert dangling("collection_actions", "agency_id", "agencies", "agency_id") == 0
    assert dangling("overrides", "approver", "officers", "officer_id") == 0
    # Every loan has a schedule; loans of customer managers only.
    assert t["loans"].join(t["schedule"], "loan_id", "left_anti").count() == 0
    roles = t["loans"].join(t["officers"].select("officer_id", "role"), "officer_id")
    assert {r.role for r in roles.select("role").distinct().collect()} == {"CUSTOMER_MANAGER"}


def test_branch_hierarchy_has_four_levels_and_sub_branches_share_their_tier1_region(
    spark: SparkSession, book: tuple[Path, dict[str, int]]
) -> None:
    landing, _ = book
    branches = read(spark, landing, BRANCHES)
    levels = {r.level: r["count"] for r in branches.groupBy("level").count().collect()}
    assert levels["HQ"] == 1 and levels["TIER1"] == 6 and levels["TIER2"] >= 12 and levels["SUB"] >= 36
    b = branches.alias("b")
    p1, p2 = branches.alias("p1"), branches.alias("p2")
    subs = (
        b.where(F.col("b.level") == "SUB")
        .join(p1, F.col("b.parent_id") == F.col("p1.branch_id"))
        .join(p2, F.col("p1.parent_id") == F.col("p2.branch_id"))
        .select("b.region_code", F.col("p1.level").alias("l1"), F.col("p2.level").alias("l2"),
                F.col("p2.region_code").alias("tier1_region"))
    )
    assert subs.count() == levels["SUB"]
    assert subs.where((F.col("l1") != "TIER2") | (F.col("l2") != "TIER1")).count() == 0
    assert subs.where(F.col("region_code") != F.col("tier1_region")).count() == 0
    officers = read(spark, landing, OFFICERS)
    assert {r.role for r in officers.select("role").distinct().collect()} == {
        "CUSTOMER_MANAGER", "RISK_MANAGER", "CHANNEL_MANAGER", "COLLECTOR"}
    assert officers.where(~F.col("active")).count() > 0
    channels = read(spark, landing, CHANNELS)
    assert {r.status for r in channels.select("status").distinct().collect()} == {"ACTIVE", "SUSPENDED", "EXITED"}


def test_schedules_sum_exactly_to_principal(spark: SparkSession, book: tuple[Path, dict[str, int]]) -> None:
    landing, _ = book
    t = tables(spark, landing)
    sums = t["schedule"].groupBy("loan_id").agg(F.sum("principal_due").alias("scheduled"))
    mismatched = t["loans"].join(sums, "loan_id").where(F.col("scheduled") != F.col("principal"))
    assert mismatched.count() == 0
    numbering = t["schedule"].groupBy("loan_id").agg(
        F.min("installment_no").alias("first"), F.max("installment_no").alias("last"), F.count("*").alias("rows"))
    assert numbering.where((F.col("first") != 1) | (F.col("last") != F.col("rows"))).count() == 0
    # Instalments fall on the disbursement day of month (clamped to the month's end), monthly.
    dated = t["schedule"].join(t["loans"].select("loan_id", "disbursement_date"), "loan_id").withColumn(
        "expected", F.add_months("disbursement_date", F.col("installment_no")))
    assert dated.where(F.col("due_date") != F.col("expected")).count() == 0


def test_extract_holds_nothing_after_the_business_date(spark: SparkSession, book: tuple[Path, dict[str, int]]) -> None:
    landing, _ = book
    t = tables(spark, landing)
    day = F.lit(AS_OF)
    assert t["repayments"].where(F.col("value_date") > day).count() == 0
    assert t["loans"].where((F.col("disbursement_date") > day) | (F.col("closed_date") > day)).count() == 0
    assert t["loans"].where(F.col("closed_date") < F.col("disbursement_date")).count() == 0
    assert t["risk_signals"].where((F.col("signal_date") > day) | (F.col("cleared_date") > day)).count() == 0
    assert t["completed_inspections"].where(F.col("completed_date") > day).count() == 0
    hours = t["collection_actions"].select(
        F.min(F.hour("action_time")).alias("first"), F.max(F.hour("action_time")).alias("last"),
        F.max(F.to_date("action_time")).alias("latest")).first()
    assert hours is not None and hours.first >= 8 and hours.last < 22 and hours.latest <= AS_OF


def days_past_due(t: dict[str, DataFrame]) -> DataFrame:
    """Per loan: business date minus the oldest due date (before it) not covered by net payments."""
    paid = t["repayments"].groupBy("loan_id").agg(F.sum("amount").alias("paid"))
    cumulative = t["schedule"].withColumn(
        "cum_due",
        F.sum(F.col("principal_due") + F.col("interest_due")).over(
            Window.partitionBy("loan_id").orderBy("installment_no")),
    )
    uncovered = (
        cumulative.join(paid, "loan_id", "left")
        .where((F.col("due_date") < F.lit(AS_OF)) & (F.col("cum_due") > F.coalesce("paid", F.lit(0))))
        .groupBy("loan_id").agg(F.min("due_date").alias("oldest"))
    )
    return t["loans"].join(uncovered, "loan_id", "left").withColumn(
        "dpd", F.coalesce(F.datediff(F.lit(AS_OF), "oldest"), F.lit(0)))


def test_book_mixes_every_behaviour(spark: SparkSession, book: tuple[Path, dict[str, int]]) -> None:
    landing, _ = book
    t = tables(spark, landing)
    loans = t["loans"]

    def values(frame: DataFrame, column: str) -> set[str]:
        return {r[0] for r in frame.select(column).distinct().collect()}

    assert values(loans, "repayment_method") == set(REPAYMENT_METHODS)
    assert values(loans, "payment_mode") == set(PAYMENT_MODES)
    assert values(loans, "status") == {"ACTIVE", "SETTLED", "WRITTEN_OFF"}
    assert loans.where((F.col("status") != "ACTIVE") & F.col("closed_date").isNull()).count() == 0
    restructured = loans.where(F.col("restructured_date").isNotNull())
    assert restructured.count() > 0
    assert values(restructured, "restructure_count") == {1, 2}
    assert values(restructured, "restructured_from_npl") == {True, False}
    assert values(t["risk_signals"], "signal_type") == set(SIGNAL_TYPES)
    assert loans.where(F.col("channel_id").isNotNull()).count() > 0.2 * LOANS_N
    assert 1.1 < LOANS_N / t["borrowers"].count() < 1.3
    assert values(t["agencies"], "status") == {"ACTIVE", "SUSPENDED", "TERMINATED"}
    assert {"FIRST_CALLBACK", "MONTHLY_SAMPLE", "PURPOSE_CHECK", "CHANNEL_CHECK"} <= values(
        t["completed_inspections"], "task_type")
    actions = t["collection_actions"]
    assert {"SMS", "PHONE", "LETTER", "FIELD_VISIT"} <= values(actions, "action_type")
    assert {"CONTACTED", "NO_ANSWER", "PROMISE_TO_PAY", "VISIT_FAILED"} <= values(actions, "outcome")
    overrides = t["overrides"]
    assert overrides.where(F.col("expiry_date") < F.lit(AS_OF)).count() > 0
    assert overrides.where(F.col("expiry_date") >= F.lit(AS_OF)).count() > 0

    # Reversals: a negative amount after a payment of the same size on the same loan.
    repayments = t["repayments"]
    reversals = repayments.where(F.col("amount") < 0).alias("r")
    payments = repayments.where(F.col("amount") > 0).alias("p")
    matched = reversals.join(
        payments,
        (F.col("r.loan_id") == F.col("p.loan_id")) & (F.col("p.amount") == -F.col("r.amount"))
        & (F.col("p.value_date") < F.col("r.value_date")),
        "left_semi",
    )
    assert 0 < reversals.count() == matched.count()

    # Settled loans owe nothing; some active loans are past 360 days, and every bucket is filled.
    dpd = days_past_due(t)
    assert dpd.where((F.col("status") == "SETTLED") & (F.col("dpd") > 0)).count() == 0
    active = dpd.where(F.col("status") == "ACTIVE")
    assert active.where(F.col("dpd") > 360).count() > 0
    buckets = active.select(F.least(F.ceil(F.col("dpd") / 30), F.lit(7)).cast("int").alias("bucket"))
    assert values(buckets, "bucket") == set(range(8))


def test_personal_data_is_well_formed(spark: SparkSession, book: tuple[Path, dict[str, int]]) -> None:
    landing, _ = book
    t = tables(spark, landing)
    weights = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
    people = t["borrowers"].select("name", "id_number", "phone").union(
        t["guarantors"].select("name", "id_number", "phone")).collect()
    assert len({p.id_number for p in people}) == len(people)
    for person in people:
        number = person.id_number
        assert len(number) == 18 and number[:17].isdigit()
        assert "10X98765432"[sum(int(d) * w for d, w in zip(number[:17], weights, strict=True)) % 11] == number[17]
        assert dt.date(int(number[6:10]), int(number[10:12]), int(number[12:14])) < AS_OF
        assert person.phone is None or (len(person.phone) == 11 and person.phone.startswith("1"))
        assert 2 <= len(person.name) <= 3


def test_csv_landing_reads_with_header_and_matches_parquet(spark: SparkSession, tmp_path: Path) -> None:
    counts = generate_landing(spark, 300, AS_OF, 5, tmp_path / "csv", "csv")
    generate_landing(spark, 300, AS_OF, 5, tmp_path / "parquet")
    for table in LANDING_TABLES:
        folder = tmp_path / "csv" / table.name
        header = next(folder.glob("*.csv")).read_text(encoding="utf-8").splitlines()[0]
        assert header.replace('"', "").split(",") == table.names
        actual_df = (
            spark.read.option("header", True).option("mode", "FAILFAST").option("encoding", "UTF-8")
            .schema(table.schema).csv(str(folder))
        )
        assert actual_df.count() == counts[table.name]
        expected_df = read(spark, tmp_path / "parquet", table)
        assertDataFrameEqual(actual_df, expected_df)


def test_bad_rows_are_injected_on_request(spark: SparkSession, tmp_path: Path) -> None:
    counts = generate_landing(spark, 1000, AS_OF, 3, tmp_path, bad_rows=0.02)
    t = tables(spark, tmp_path)
    loans, schedule, repayments = t["loans"], t["schedule"], t["repayments"]
    good_ids = loans.where(F.col("loan_id").startswith("LN")).select("loan_id")

    assert counts["loans"] == 1000 + 20
    assert loans.where(F.col("loan_id").isNull()).count() > 0
    assert loans.where(F.col("principal") < 0).count() > 0
    assert loans.where(F.col("maturity_date") < F.col("disbursement_date")).count() > 0
    assert loans.where(F.col("loan_id").isNotNull()).groupBy("loan_id").count().where("count > 1").count() > 0
    assert schedule.where(F.col("loan_id").isNull()).count() > 0
    assert schedule.where(F.col("loan_id").isNotNull()).join(good_ids, "loan_id", "left_anti").count() > 0
    assert schedule.where(F.col("principal_due") < 0).count() > 0
    early = schedule.join(loans.where(F.col("loan_id").isNotNull()).dropDuplicates(["loan_id"]), "loan_id").where(
        F.col("due_date") < F.col("disbursement_date"))
    assert early.count() > 0
    assert schedule.groupBy("loan_id", "installment_no").count().where("count > 1").count() > 0
    assert repayments.where(F.col("txn_id").isNull()).count() > 0
    assert repayments.where(F.col("value_date").isNull()).count() > 0
    assert repayments.join(good_ids, "loan_id", "left_anti").count() > 0
    assert repayments.where(F.col("txn_id").isNotNull()).groupBy("txn_id").count().where("count > 1").count() > 0


def test_clean_book_has_no_bad_rows_by_default(spark: SparkSession, book: tuple[Path, dict[str, int]]) -> None:
    landing, _ = book
    t = tables(spark, landing)
    assert t["loans"].where((F.col("principal") <= 0) | (F.col("maturity_date") < F.col("disbursement_date"))).count() == 0
    assert t["schedule"].where((F.col("principal_due") < 0) | (F.col("interest_due") < 0)).count() == 0


@pytest.mark.parametrize(("loans", "fmt", "bad_rows"), [(0, "parquet", 0.0), (10, "json", 0.0), (10, "csv", 1.5)])
def test_refuses_bad_arguments(spark: SparkSession, tmp_path: Path, loans: int, fmt: str, bad_rows: float) -> None:
    with pytest.raises(ValueError):
        generate_landing(spark, loans, AS_OF, 1, tmp_path, fmt, bad_rows=bad_rows)
    assert not (tmp_path / LOANS.name).exists()


def test_a_product_mix_replaces_the_books_own(tmp_path: Path, book: tuple[Path, dict[str, int]]) -> None:
    """Shares are scaled to sum to one, products not named get no loans, and a book without the
    long mortgage schedules has fewer instalments a loan than the default one."""
    mix = parse_product_mix("CONSUMER_ONLINE=3, AGRI=1")
    assert product_shares(mix) == [0.0, 0.0, 0.75, 0.0, 0.0, 0.0, 0.25]
    counts = generate_landing(None, LOANS_N, AS_OF, 7, tmp_path, product_mix=mix)  # type: ignore[arg-type]
    products = pq.read_table(tmp_path / LOANS.name, columns=["product_code"]).column(0).to_pylist()
    assert set(products) == {"CONSUMER_ONLINE", "AGRI"}
    # 2,000 draws at 0.75: the standard deviation is sqrt(2000 * 0.75 * 0.25) = 19.4 loans.
    assert abs(products.count("CONSUMER_ONLINE") - 1500) < 80
    _, default_counts = book
    assert counts["schedule"] / LOANS_N < 0.75 * default_counts["schedule"] / LOANS_N
    assert product_shares(None) == [0.06, 0.20, 0.25, 0.17, 0.05, 0.12, 0.15]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("MORTGAGE=1,PAYDAY=1", "unknown products ['PAYDAY']"),
        ("MORTGAGE=-1,AUTO=2", "not negative"),
        ("MORTGAGE=0", "no product a share"),
        ("MORTGAGE", "not CODE=SHARE"),
        ("AUTO=half", "is not a number"),
        ("AUTO=nan", "finite"),
    ],
)
def test_a_product_mix_that_cannot_be_drawn_is_refused(text: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_product_mix(text)
    # The command refuses it as a usage error, before any Spark or file work.
    command = ["generate", "--loans", "10", "--as-of", "2026-10-31", "--landing", str(tmp_path / "cli")]
    assert cli_main([*command, "--product-mix", text]) == 2
    assert not (tmp_path / "cli").exists()
    with pytest.raises(ValueError, match="product"):
        generate_landing(None, 10, AS_OF, 1, tmp_path, product_mix={"MORTGAGE": 0.0})  # type: ignore[arg-type]
    assert not (tmp_path / LOANS.name).exists()
