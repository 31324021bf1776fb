"""Configuration: parsed once, refused with file, key and reason; overrides by specificity."""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
from decimal import Decimal
from pathlib import Path

import pytest

from jobs.config import ConfigError, OverrideRule, load_config
from jobs.params import resolve
from jobs.pipeline import backfill_dates
from schemas.dictionary import render

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def conf_copy(tmp_path: Path, conf_dir: Path) -> Path:
    target = tmp_path / "conf"
    shutil.copytree(conf_dir, target)
    return target


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new), encoding="utf-8")


def test_shipped_configuration_loads_with_both_profiles(conf_dir: Path) -> None:
    default = load_config(conf_dir)
    assert default.profile.name == "cbirc_2023"
    assert (default.profile.dpd_substandard_above, default.profile.dpd_doubtful_above) == (90, 270)
    assert default.profile.dpd_loss_above == 360
    legacy = load_config(conf_dir, "legacy_exam")
    assert (legacy.profile.dpd_doubtful_above, legacy.profile.dpd_loss_above) == (360, 1080)
    assert default.source_hash != legacy.source_hash


@pytest.mark.parametrize(
    ("file", "old", "new", "message"),
    [
        (
            "postloan.yaml",
            "fpd_days: 30",
            "fpd_days: thirty",
            r"postloan.yaml: delinquency.fpd_days: expected a whole number",
        ),
        (
            "postloan.yaml",
            "bucket_count: 6",
            "bucket_count: 6\n  bucket_colour: red",
            r"delinquency.bucket_colour: unknown key",
        ),
        (
            "postloan.yaml",
            "profile: cbirc_2023",
            "profile: basel9",
            r"postloan.yaml: profile: no rule profile 'basel9'",
        ),
        (
            "profiles/cbirc_2023.yaml",
            "dpd_doubtful_above: 270",
            "dpd_doubtful_above: 80",
            r"cbirc_2023.yaml: dpd_doubtful_above: must be above dpd_substandard_above \(90\), got 80",
        ),
        (
            "profiles/cbirc_2023.yaml",
            "LITIGATION: SPECIAL_MENTION",
            "LITIGATION: WORRYING",
            r"cbirc_2023.yaml: signal_floors.LITIGATION: 'WORRYING' is not one of",
        ),
        (
            "profiles/cbirc_2023.yaml",
            "technical_grace_days: 0",
            "technical_grace_days: 10",
            r"technical_grace_days: technical overdue grace is at most 7 days",
        ),
        (
            "postloan.yaml",
            "classification.technical_grace_days: 3",
            "classification.no_such_key: 3",
            r"overrides\[0\].set.classification.no_such_key: not an overridable setting",
        ),
        (
            "postloan.yaml",
            "tolerance_amount: 0.00 ",
            "tolerance_amount: -1 ",
            r"delinquency.tolerance_amount: expected a non-negative",
        ),
        # Statistics: a misspelt column would silently leave the tables without any.
        (
            "operations.yaml",
            "[loan_id, borrower_id,",
            "[loan_idd, borrower_id,",
            r"operations.yaml: layout.statistics_columns: 'loan_idd' is not a column of any date-partitioned",
        ),
        (
            "operations.yaml",
            "[loan_id, borrower_id,",
            "[branch_path, loan_id, borrower_id,",
            r"layout.statistics_columns: loan_snapshot.branch_path is array<string>: statistics need a plain",
        ),
        (
            "operations.yaml",
            "[loan_id, borrower_id, branch_id,",
            "[loan_id, borrower_id,",
            r"maintenance.zorder_by.collection_cases: branch_id is not among layout.statistics_columns",
        ),
        (
            "operations.yaml",
            "[loan_id, borrower_id, branch_id, tier1_branch_id, product_code, agency_id, source_table, reason_code]",
            "[]",
            r"operations.yaml: layout: statistics_columns must name at least one column",
        ),
    ],
)
def test_bad_configuration_is_refused_with_file_key_and_reason(
    conf_copy: Path, file: str, old: str, new: str, message: str
) -> None:
    edit(conf_copy / file, old, new)
    with pytest.raises(ConfigError, match=message):
        load_config(conf_copy)


def test_unparsable_yaml_is_refused_with_the_file(conf_copy: Path) -> None:
    (conf_copy / "postloan.yaml").write_text("profile: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"postloan.yaml: \(file\): not valid YAML"):
        load_config(conf_copy)


def test_overrides_apply_most_specific_last(conf_dir: Path) -> None:
    config = load_config(conf_dir)
    rules = (
        OverrideRule(product="P1", set={"classification.technical_grace_days": 1}),
        OverrideRule(tier1_branch="T1", set={"classification.technical_grace_days": 2}),
        OverrideRule(tier1_branch="T1", product="P1", set={"classification.technical_grace_days": 3}),
        OverrideRule(tier1_branch="T2", set={"delinquency.tolerance_amount": Decimal("5.00")}),
    )
    rows = resolve(dataclasses.replace(config, overrides=rules), ["T1", "T2", None], ["P1", "P2"])
    got = {
        (r["tier1_branch_id"], r["product_code"]): (
            r["classification__technical_grace_days"],
            r["delinquency__tolerance_amount"],
        )
        for r in rows
    }
    base_tolerance = config.delinquency.tolerance_amount
    assert got == {
        ("T1", "P1"): (3, base_tolerance),
        ("T1", "P2"): (2, base_tolerance),
        ("T2", "P1"): (1, Decimal("5.00")),
        ("T2", "P2"): (0, Decimal("5.00")),
        (None, "P1"): (1, base_tolerance),
        (None, "P2"): (0, base_tolerance),
    }


def test_data_dictionary_in_docs_matches_the_contracts() -> None:
    committed = (REPO / "docs" / "data-dictionary.md").read_text(encoding="utf-8")
    assert committed == render(), "regenerate: .venv/bin/python -m schemas.dictionary > docs/data-dictionary.md"


def test_backfill_dates_are_every_day_or_every_month_end_of_the_range_oldest_first() -> None:
    # 2028 is a leap year: February ends on the 29th.
    assert backfill_dates(dt.date(2028, 1, 30), dt.date(2028, 3, 31), "month-end") == [
        dt.date(2028, 1, 31),
        dt.date(2028, 2, 29),
        dt.date(2028, 3, 31),
    ]
    assert backfill_dates(dt.date(2026, 2, 27), dt.date(2026, 3, 2), "day") == [
        dt.date(2026, 2, 27),
        dt.date(2026, 2, 28),
        dt.date(2026, 3, 1),
        dt.date(2026, 3, 2),
    ]
    assert backfill_dates(dt.date(2026, 3, 1), dt.date(2026, 3, 30), "month-end") == []
    assert backfill_dates(dt.date(2026, 3, 31), dt.date(2026, 3, 31), "month-end") == [dt.date(2026, 3, 31)]
    with pytest.raises(ValueError, match="before --from"):
        backfill_dates(dt.date(2026, 3, 2), dt.date(2026, 3, 1), "day")


def test_configuration_hash_names_the_rules_not_the_api_settings(conf_copy: Path) -> None:
    conf = conf_copy
    before = load_config(conf).source_hash
    api = conf / "api.yaml"
    api.write_text(api.read_text(encoding="utf-8") + "\n# a new port does not change a run's rules\n", "utf-8")
    assert load_config(conf).source_hash == before
    rules = conf / "inspections.yaml"
    rules.write_text(rules.read_text(encoding="utf-8") + "\n# any edit of a rules file does\n", "utf-8")
    assert load_config(conf).source_hash != before


def test_spark_settings_are_chosen_per_run_without_changing_the_rules(conf_dir: Path, conf_copy: Path) -> None:
    local = load_config(conf_dir)
    cluster = load_config(conf_dir, spark_profile="cluster")
    assert local.spark.master == "local[2]"
    # On a cluster spark-submit names the master; the settings file leaves it open.
    assert cluster.spark.master is None and cluster.spark.conf["spark.sql.shuffle.partitions"] == "400"
    # Where a run computes is not a rule: both runs record the same configuration hash.
    assert cluster.source_hash == local.source_hash
    with pytest.raises(ConfigError, match=r"postloan.yaml: spark: no Spark settings 'yarn' in .*spark"):
        load_config(conf_dir, spark_profile="yarn")
    edit(conf_copy / "postloan.yaml", "spark: local", "spark: cluster")
    assert load_config(conf_copy).spark == cluster.spark


def test_the_large_book_settings_are_the_local_ones_with_a_larger_heap_and_more_partitions(conf_dir: Path) -> None:
    local = load_config(conf_dir).spark
    large = load_config(conf_dir, spark_profile="large").spark
    sized = {"spark.driver.memory", "spark.sql.shuffle.partitions"}
    assert large.master == local.master == "local[2]"
    # Everything but the sizes stays in step with local.yaml: the same plans, serializer, protocol.
    assert {k: v for k, v in large.conf.items() if k not in sized} == {
        k: v for k, v in local.conf.items() if k not in sized
    }
    # 12 GB of 24 (the machine's): room for the JVM's own overhead, the Python driver, the page cache.
    assert (large.conf["spark.driver.memory"], local.conf["spark.driver.memory"]) == ("12g", "8g")
    # Eight times the partitions for ten times the book: tasks of about a 1M book's partition.
    assert (large.conf["spark.sql.shuffle.partitions"], local.conf["spark.sql.shuffle.partitions"]) == ("64", "8")
