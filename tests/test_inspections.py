"""Post-loan inspection scheduling (DOMAIN.md section 3, docs/inspections.md) on a hand-made book.

One book holds a small scenario per rule, each with its own loans, customer managers and branches
so that the rules do not see each other's loans. The stage runs on Monday 15 June 2026 (A) and on
Tuesday 16 June 2026 (B); the tests read the collected results (module fixtures), which keeps the
suite at a handful of Spark jobs. Expected values are worked out by hand in each test.

Calendar used by hand: 2026-06-19 (Friday) is a holiday, so Saturday 20 June rolls back to
Thursday 18 June (PREVIOUS) or forward to Monday 22 June (NEXT); 31 May 2026 is a Sunday.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import shutil
from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql import types as T

from jobs.config import AppConfig, load_config
from jobs.inspections import (
    build_inspections,
    business_calendar,
    inspection_summary,
    reconcile,
    with_due_dates,
)
from jobs.params import params_frame
from jobs.sections.inspections import InspectionsConfig
from jobs.stages import StageContext
from schemas.inspections import INSPECTION_TASKS, SETTLED_LOANS
from schemas.lake import LOAN_SNAPSHOT
from schemas.landing import (
    BRANCHES,
    CHANNELS,
    COLLATERAL,
    COMPLETED_INSPECTIONS,
    GUARANTORS,
    LOANS,
    OFFICERS,
    PRODUCTS,
    RISK_SIGNALS,
)

D = dt.date
A = D(2026, 6, 15)  # Monday
B = D(2026, 6, 16)  # Tuesday
HOLIDAYS = (D(2026, 1, 1), D(2026, 6, 19))

BRANCH_ROWS = [
    ("HQ", None, "HQ", "Head office", "R0"),
    ("T1-01", "HQ", "TIER1", "Tier-1 one", "R1"),
    ("T1-02", "HQ", "TIER1", "Tier-1 two", "R2"),
    ("BR-01", "T1-01", "SUB", "Branch one", "R1"),
    ("BR-02", "T1-02", "SUB", "Branch two", "R2"),
]
PATHS = {"BR-01": ["HQ", "T1-01", "BR-01"], "BR-02": ["HQ", "T1-02", "BR-02"]}
TIER1 = {"BR-01": "T1-01", "BR-02": "T1-02"}

PRODUCT_ROWS = [
    ("CONSUMER", "Consumer loan", "CONSUMER", False, False),
    ("BIZ", "Business loan", "BUSINESS", False, False),
    ("SAFE", "Secured low-risk loan", "MORTGAGE", True, False),
]

OFFICER_ROWS = [
    ("RM-T1", "Risk manager T1-01", "T1-01", "RISK_MANAGER", True),
    ("RM-T2", "Risk manager T1-02", "T1-02", "RISK_MANAGER", True),
    ("RM-B2", "Risk manager BR-02", "BR-02", "RISK_MANAGER", True),
    ("RM-A", "Former risk manager BR-02", "BR-02", "RISK_MANAGER", False),
    ("CHM-1", "Channel manager", "BR-01", "CHANNEL_MANAGER", True),
]


@dataclasses.dataclass(frozen=True)
class Loan:
    loan_id: str
    officer: str
    disbursed: dt.date
    branch: str = "BR-01"
    product: str = "CONSUMER"
    method: str = "EQUAL_INSTALLMENT"
    mode: str = "ENTRUSTED"
    collateral: str = "CREDIT"
    maturity: dt.date = dt.date(2028, 1, 1)
    status: str = "ACTIVE"
    closed: dt.date | None = None
    npl: bool = False

    @property
    def borrower(self) -> str:
        return f"B-{self.loan_id}"


def _may_loans(officer: str, count: int, branch: str = "BR-01") -> list[Loan]:
    return [Loan(f"{officer}-{n:02d}", officer, D(2026, 5, n + 1), branch=branch) for n in range(count)]


BULLET = {"product": "BIZ", "method": "BULLET", "disbursed": D(2025, 3, 10)}

LOANS_BOOK: list[Loan] = [
    # First call-back: 7 days (entrusted) or 3 days (autonomous) after disbursement.
    Loan("CB-TODAY-E", "CM-CB", A),
    Loan("CB-TODAY-A", "CM-CB", A, mode="AUTONOMOUS"),
    Loan("CB-E7", "CM-CB", D(2026, 6, 8)),
    Loan("CB-E8", "CM-CB", D(2026, 6, 7)),
    Loan("CB-A3", "CM-CB", D(2026, 6, 12), mode="AUTONOMOUS"),
    Loan("CB-A4", "CM-CB", D(2026, 6, 11), mode="AUTONOMOUS"),
    Loan("CB-DONE", "CM-CB", D(2026, 6, 1)),
    # Monthly sample: 1, 9, 10 and 11 new loans in May per customer manager, and month boundaries.
    Loan("SM1-APR30", "CM-S1", D(2026, 4, 30)),
    Loan("SM1-MAY31", "CM-S1", D(2026, 5, 31)),
    Loan("SM1-JUN01", "CM-S1", D(2026, 6, 1)),
    *_may_loans("CM-S9", 9),
    *_may_loans("CM-S10", 10),
    *_may_loans("CM-S11", 11),
    *_may_loans("CM-S10B", 10, branch="BR-02"),
    # Art. 45 frequencies: BIZ at BR-01 has 3 of 6 new loans NPL (50%); at BR-02 its only NPL is
    # older than 36 months (0%).
    Loan("P-BULLET", "CM-P", **BULLET),
    Loan("P-DONE", "CM-P", **BULLET),
    Loan("P-INST", "CM-P", D(2025, 3, 10), product="BIZ"),
    Loan("P-LIT", "CM-P", npl=True, **BULLET),
    Loan("P-MC", "CM-P", npl=True, **BULLET),
    Loan("AU-LIT", "CM-AU2", D(2025, 12, 1), product="BIZ", mode="AUTONOMOUS", npl=True),
    Loan("P-OTHERBR", "CM-P2", branch="BR-02", **BULLET),
    Loan("P-OLDNPL", "CM-P2", D(2023, 6, 15), branch="BR-02", product="BIZ", method="BULLET", npl=True),
    Loan("LR-1", "CM-P", D(2025, 3, 10), product="SAFE", method="BULLET", collateral="MORTGAGE"),
    Loan("LR-INST", "CM-P", D(2025, 3, 10), product="SAFE", collateral="MORTGAGE"),
    # Autonomous payment: quarterly loan-purpose check.
    Loan("AU-1", "CM-AU", D(2026, 2, 10), mode="AUTONOMOUS"),
    *[Loan(f"AU2-{n}", "CM-AU3", D(2026, 1, 12 + n), branch="BR-02", mode="AUTONOMOUS") for n in range(3)],
    # Risk-exit list and major signals.
    Loan("X-1", "CM-X", D(2025, 1, 10)),
    Loan("X-2", "CM-X2", D(2025, 1, 10), branch="BR-02"),
    Loan("X-3", "CM-X", D(2025, 1, 10)),
    Loan("X-4", "CM-X", D(2025, 1, 10)),
    # Maturity notices.
    Loan("M-1", "CM-M", D(2025, 6, 24), method="BULLET", maturity=D(2026, 6, 24)),
    Loan("M-2", "CM-M", D(2025, 6, 24), method="BULLET", maturity=D(2026, 8, 31)),
    Loan("M-3", "CM-M", D(2025, 6, 24), maturity=D(2026, 6, 24)),
    # Settled loans and collateral release.
    Loan("S-1", "CM-ST", D(2023, 1, 10), collateral="MORTGAGE", status="SETTLED", closed=D(2026, 6, 5)),
    Loan("S-2", "CM-ST", D(2023, 1, 10), collateral="PLEDGE", status="SETTLED", closed=D(2026, 5, 20)),
    Loan("S-3", "CM-ST", D(2023, 1, 10), collateral="MORTGAGE", status="SETTLED", closed=D(2026, 4, 30)),
    Loan("S-4", "CM-ST", D(2023, 1, 10), status="SETTLED", closed=D(2026, 6, 10)),
    Loan("S-5", "CM-ST", D(2023, 1, 10), collateral="MORTGAGE", status="WRITTEN_OFF", closed=D(2026, 6, 1)),
    Loan("S-7", "CM-ST", D(2023, 1, 10), collateral="GUARANTEE", status="SETTLED", closed=D(2026, 6, 3)),
]


def signal(sid: str, loan: str | None, borrower: str, kind: str, severity: str, day: dt.date, cleared=None) -> tuple:
    return (sid, loan, borrower, kind, severity, day, cleared, None, None)


SIGNAL_ROWS = [
    signal("SIG-LIT", "P-LIT", "B-P-LIT", "LITIGATION", "MINOR", B),
    signal("SIG-MC-L", "P-MC", "B-P-MC", "LITIGATION", "MINOR", D(2026, 3, 1)),
    signal("SIG-MC", "P-MC", "B-P-MC", "MATERIAL_CHANGE", "MINOR", B),
    signal("SIG-AU", "AU-LIT", "B-AU-LIT", "LITIGATION", "MINOR", D(2026, 1, 10)),
    signal("SIG-X1", None, "B-X-1", "RISK_EXIT_LIST", "MINOR", D(2026, 5, 20)),
    signal("SIG-X2", "X-2", "B-X-2", "FRAUD", "MAJOR", D(2026, 6, 10)),
    signal("SIG-X3", "X-3", "B-X-3", "CREDIT_DOWNGRADE", "MAJOR", D(2026, 6, 1), D(2026, 6, 10)),
    signal("SIG-X4", "X-4", "B-X-4", "LOST_CAPACITY", "MAJOR", D(2026, 6, 1)),
]


def task_id(task_type: str, subject: str, key: str) -> str:
    return hashlib.sha256(f"{task_type}|{subject}|{key}".encode()).hexdigest()


def completion(iid: str, kind: str, day: dt.date, loan: str | None = None, channel: str | None = None, tid=None):
    return (iid, tid, kind, loan, channel, day, "CM", "NORMAL")


COMPLETION_ROWS = [
    completion("I-CB", "FIRST_CALLBACK", D(2026, 6, 5), loan="CB-DONE"),
    completion("I-CB8", "FIRST_CALLBACK", B, loan="CB-E8"),  # not yet known on A
    completion("I-P", "PERIODIC_CHECK", D(2026, 1, 5), loan="P-DONE"),
    completion("I-X4", "SIGNAL_VERIFICATION", D(2026, 6, 9), tid=task_id("SIGNAL_VERIFICATION", "X-4", "SIG-X4")),
    completion("I-S2", "COLLATERAL_RELEASE", D(2026, 5, 25), loan="S-2"),
    completion("I-CH1", "CHANNEL_CHECK", D(2026, 4, 2), channel="CH-1"),
]

CHANNEL_ROWS = [
    ("CH-1", "Dealer one", "BR-01", "CHM-1", "ACTIVE", D(2025, 12, 15)),
    ("CH-2", "Dealer two", "BR-01", "CHM-1", "ACTIVE", D(2025, 12, 1)),
    ("CH-3", "Dealer three", "BR-01", "CHM-1", "SUSPENDED", D(2025, 1, 1)),
    ("CH-4", "Dealer four", "BR-01", "CHM-1", "ACTIVE", D(2026, 5, 1)),
]
GUARANTOR_ROWS = [
    ("G-1", "M-1", "Guarantor one", "110101199001011234", None),
    ("G-2", "M-1", "Guarantor two", "110101199001011235", None),
]
COLLATERAL_ROWS = [("C-7", "S-7", "PLEDGE", Decimal("50000.00"), D(2024, 1, 1))]


# ------------------------------------------------------------------------------------------------
# Building the stage context


def landing_row(loan: Loan) -> tuple[Any, ...]:
    return (
        loan.loan_id, loan.borrower, loan.product, loan.branch, loan.officer, None, Decimal("100000.00"),
        loan.disbursed, loan.maturity, loan.method, loan.mode, Decimal("0.050000"), loan.collateral,
        None, None, None, loan.status, loan.closed,
    )  # fmt: skip


def snapshot_row(loan: Loan, as_of: dt.date) -> dict[str, Any]:
    return {
        "as_of_date": as_of, "loan_id": loan.loan_id, "borrower_id": loan.borrower, "branch_id": loan.branch,
        "tier1_branch_id": TIER1[loan.branch], "branch_path": PATHS[loan.branch], "product_code": loan.product,
        "officer_id": loan.officer, "repayment_method": loan.method, "payment_mode": loan.mode,
        "collateral_type": loan.collateral, "disbursement_date": loan.disbursed, "maturity_date": loan.maturity,
        "is_npl": loan.npl,
    }  # fmt: skip


SNAPSHOT_FIELDS = [
    "as_of_date", "loan_id", "borrower_id", "branch_id", "tier1_branch_id", "branch_path", "product_code",
    "officer_id", "repayment_method", "payment_mode", "collateral_type", "disbursement_date", "maturity_date",
    "is_npl",
]  # fmt: skip


def frame(spark: SparkSession, rows: Iterable[tuple[Any, ...]], table: Any, reverse: bool = False) -> DataFrame:
    data = list(rows)
    return spark.createDataFrame(data[::-1] if reverse else data, table.schema)


def context(spark: SparkSession, config: AppConfig, as_of: dt.date, reverse: bool = False) -> StageContext:
    """The stage's input on `as_of`; `reverse` delivers every table in the opposite row order."""
    on_book = [loan for loan in LOANS_BOOK if loan.disbursed <= as_of and (loan.closed is None or loan.closed > as_of)]
    snapshot_schema = LOAN_SNAPSHOT.schema
    fields = [snapshot_schema[name] for name in SNAPSHOT_FIELDS]
    snap_rows = [tuple(snapshot_row(loan, as_of)[f.name] for f in fields) for loan in on_book]
    snapshot = spark.createDataFrame(snap_rows[::-1] if reverse else snap_rows, T.StructType(fields))
    tables = {
        "loans": frame(spark, [landing_row(loan) for loan in LOANS_BOOK], LOANS, reverse),
        "branches": frame(spark, BRANCH_ROWS, BRANCHES, reverse),
        "products": frame(spark, PRODUCT_ROWS, PRODUCTS, reverse),
        "officers": frame(spark, OFFICER_ROWS, OFFICERS, reverse),
        "channels": frame(spark, CHANNEL_ROWS, CHANNELS, reverse),
        "risk_signals": frame(spark, SIGNAL_ROWS, RISK_SIGNALS, reverse),
        "completed_inspections": frame(spark, COMPLETION_ROWS, COMPLETED_INSPECTIONS, reverse),
        "guarantors": frame(spark, GUARANTOR_ROWS, GUARANTORS, reverse),
        "collateral": frame(spark, COLLATERAL_ROWS, COLLATERAL, reverse),
    }
    if reverse:
        tables = {name: df.repartition(3) for name, df in tables.items()}
    params = params_frame(spark, config, ["T1-01", "T1-02", None], [p[0] for p in PRODUCT_ROWS])
    return StageContext(
        spark=spark,
        as_of=as_of,
        run_id=f"test-{as_of}",
        config=config,
        tables=tables,
        snapshot=snapshot,
        previous_as_of=None,
        previous=lambda _table: None,
        history=lambda _table, _start, _end: None,
        params=params,
    )


@dataclasses.dataclass(frozen=True)
class Result:
    tasks: list[Row]
    settled: list[Row]


def run(spark: SparkSession, config: AppConfig, as_of: dt.date, reverse: bool = False) -> Result:
    out = build_inspections(context(spark, config, as_of, reverse))
    return Result(out[INSPECTION_TASKS].collect(), out[SETTLED_LOANS].collect())


# Compared per task: type, subject, obligation key, window start, due date, status, done date,
# days overdue, priority, owner.
Task = tuple[str, str, str, dt.date, dt.date, str, dt.date | None, int, int, str | None]


def tasks_of(result: Result, *, prefix: str | None = None, task_type: str | None = None) -> set[Task]:
    out = set()
    for r in result.tasks:
        subject = r["loan_id"] or r["channel_id"]
        if prefix is not None and not subject.startswith(prefix):
            continue
        if task_type is not None and r["task_type"] != task_type:
            continue
        out.add(
            (
                r["task_type"],
                subject,
                r["obligation_key"],
                r["window_start"],
                r["due_date"],
                r["status"],
                r["done_date"],
                r["days_overdue"],
                r["priority"],
                r["officer_id"],
            )
        )
    return out


def base_config(conf_dir: Path) -> AppConfig:
    """The repository's configuration with the stage's defaults, hand-picked holidays, no overrides."""
    config = load_config(conf_dir)
    return dataclasses.replace(
        config,
        overrides=(),
        holidays=HOLIDAYS,
        sections={**config.sections, "inspections": InspectionsConfig()},
    )


@pytest.fixture(scope="module")
def config(conf_dir: Path) -> AppConfig:
    return base_config(conf_dir)


@pytest.fixture(scope="module")
def on_a(spark: SparkSession, config: AppConfig) -> Result:
    return run(spark, config, A)


@pytest.fixture(scope="module")
def on_b(spark: SparkSession, config: AppConfig) -> Result:
    return run(spark, config, B)


# ------------------------------------------------------------------------------------------------
# Calendar


def test_due_dates_move_off_weekends_and_holidays(spark: SparkSession) -> None:
    rows = [
        # (id, raw date, rule, n): Saturday 20 June, after the Friday holiday.
        ("sat-prev", D(2026, 6, 20), "PREVIOUS", 0),
        ("sat-next", D(2026, 6, 20), "NEXT", 0),
        ("sat-exact", D(2026, 6, 20), "EXACT", 0),
        ("wed-prev", D(2026, 6, 17), "PREVIOUS", 0),
        ("sun-prev", D(2026, 5, 31), "PREVIOUS", 0),
        ("sun-next", D(2026, 5, 31), "NEXT", 0),
        # 5 business days before Wednesday 24 June: 23, 22, (19 off), 18, 17, 16.
        ("wed-5", D(2026, 6, 24), "BUSINESS_DAYS_BEFORE", 5),
        # before Monday 22 June: 18, 17, 16, 15, (19 off) 12; 1 before: Thursday 18.
        ("mon-5", D(2026, 6, 22), "BUSINESS_DAYS_BEFORE", 5),
        ("mon-1", D(2026, 6, 22), "BUSINESS_DAYS_BEFORE", 1),
        ("mon-0", D(2026, 6, 22), "BUSINESS_DAYS_BEFORE", 0),
        # Outside the calendar (10 years either side): not moved, and no count.
        ("far-prev", D(2040, 6, 2), "PREVIOUS", 0),
        ("far-5", D(2040, 6, 2), "BUSINESS_DAYS_BEFORE", 5),
    ]
    frame = spark.createDataFrame(
        [(i, raw, rule, n, 10, None) for i, raw, rule, n in rows],
        "id string, _due_raw date, _due_rule string, _due_n int, _open_days int, window_start date",
    )
    got = frame.transform(with_due_dates(business_calendar(spark, HOLIDAYS, A))).collect()
    assert {r["id"]: r["due_date"] for r in got} == {
        "sat-prev": D(2026, 6, 18),
        "sat-next": D(2026, 6, 22),
        "sat-exact": D(2026, 6, 20),
        "wed-prev": D(2026, 6, 17),
        "sun-prev": D(2026, 5, 29),
        "sun-next": D(2026, 6, 1),
        "wed-5": D(2026, 6, 16),
        "mon-5": D(2026, 6, 12),
        "mon-1": D(2026, 6, 18),
        "mon-0": D(2026, 6, 22),
        "far-prev": D(2040, 6, 2),
        "far-5": None,
    }
    # Without a window start, a task opens `_open_days` before its due date.
    assert {r["id"]: r["window_start"] for r in got}["wed-5"] == D(2026, 6, 6)


def test_a_task_is_closed_by_the_earliest_completion_in_its_window_or_naming_it(spark: SparkSession) -> None:
    as_of = D(2026, 6, 30)
    tasks = spark.createDataFrame(
        [
            # (id, type, loan, channel, obligation_key, window_start)
            ("june", "PERIODIC_CHECK", "L-1", None, "2026-06", D(2026, 6, 1)),
            ("june-2nd", "PERIODIC_CHECK", "L-1", None, "2026-06b", D(2026, 6, 2)),
            ("mid-june", "PERIODIC_CHECK", "L-1", None, "2026-06c", D(2026, 6, 15)),
            ("callback", "FIRST_CALLBACK", "L-1", None, "2026-06-01", D(2026, 6, 1)),
            ("named", "PERIODIC_CHECK", "L-2", None, "2026-06", D(2026, 6, 1)),
            ("channel", "CHANNEL_CHECK", "L-1", "CH-1", "2026-Q2", D(2026, 6, 1)),
        ],
        "id string, task_type string, loan_id string, channel_id string, obligation_key string, window_start date",
    )
    completions = frame(
        spark,
        [
            completion("I-0531", "PERIODIC_CHECK", D(2026, 5, 31), loan="L-1"),  # the day before every window
            completion("I-B", "PERIODIC_CHECK", D(2026, 6, 1), loan="L-1"),
            completion("I-A", "PERIODIC_CHECK", D(2026, 6, 1), loan="L-1"),  # same day: the lower id
            completion("I-0610", "PERIODIC_CHECK", D(2026, 6, 10), loan="L-1"),
            completion("I-0705", "PERIODIC_CHECK", D(2026, 7, 5), loan="L-1"),  # after the date: unseen
            # names the task, under another type
            completion("I-0520", "FIRST_CALLBACK", D(2026, 5, 20), tid=task_id("PERIODIC_CHECK", "L-2", "2026-06")),
            completion("I-0603", "PERIODIC_CHECK", D(2026, 6, 3), loan="L-2"),
            completion("I-CH", "CHANNEL_CHECK", D(2026, 6, 4), channel="CH-1"),
            completion("I-L1CH", "CHANNEL_CHECK", D(2026, 6, 2), loan="L-1"),  # a channel check is about the channel
        ],
        COMPLETED_INSPECTIONS,
    )
    reconciled = tasks.transform(reconcile(as_of, completions)).collect()
    # Each task gets its id: a channel check is about its channel, any other task about its loan.
    assert {r["id"]: r["task_id"] for r in reconciled} == {
        "june": task_id("PERIODIC_CHECK", "L-1", "2026-06"),
        "june-2nd": task_id("PERIODIC_CHECK", "L-1", "2026-06b"),
        "mid-june": task_id("PERIODIC_CHECK", "L-1", "2026-06c"),
        "callback": task_id("FIRST_CALLBACK", "L-1", "2026-06-01"),
        "named": task_id("PERIODIC_CHECK", "L-2", "2026-06"),
        "channel": task_id("CHANNEL_CHECK", "CH-1", "2026-Q2"),
    }
    got = {r["id"]: (r["done_date"], r["inspection_id"]) for r in reconciled}
    assert got == {
        "june": (D(2026, 6, 1), "I-A"),
        "june-2nd": (D(2026, 6, 10), "I-0610"),
        "mid-june": (None, None),
        "callback": (None, None),
        # Named by id it is closed even before its window, and the earlier of the two wins.
        "named": (D(2026, 5, 20), "I-0520"),
        "channel": (D(2026, 6, 4), "I-CH"),
    }
    # Told the tasks are periodic checks only, it matches the same completions to them.
    periodic = tasks.where("task_type = 'PERIODIC_CHECK'").transform(reconcile(as_of, completions, ["PERIODIC_CHECK"]))
    assert {r["id"]: (r["done_date"], r["inspection_id"]) for r in periodic.collect()} == {
        key: got[key] for key in ("june", "june-2nd", "mid-june", "named")
    }


# ------------------------------------------------------------------------------------------------
# First call-back


def test_first_callback_7_days_or_3_for_autonomous_and_overdue_the_day_after(on_a: Result, on_b: Result) -> None:
    cb = "FIRST_CALLBACK"
    # Every task of these loans is a call-back (instalment loans disbursed in June: no sample yet,
    # no periodic check). Due on the due date itself is still OPEN; overdue moves priority 2 -> 1.
    assert tasks_of(on_a, prefix="CB-") == {
        (cb, "CB-TODAY-E", "2026-06-15", A, D(2026, 6, 22), "OPEN", None, 0, 2, "CM-CB"),
        (cb, "CB-TODAY-A", "2026-06-15", A, D(2026, 6, 18), "OPEN", None, 0, 2, "CM-CB"),
        (cb, "CB-E7", "2026-06-08", D(2026, 6, 8), A, "OPEN", None, 0, 2, "CM-CB"),
        (cb, "CB-E8", "2026-06-07", D(2026, 6, 7), D(2026, 6, 14), "OVERDUE", None, 1, 1, "CM-CB"),
        (cb, "CB-A3", "2026-06-12", D(2026, 6, 12), A, "OPEN", None, 0, 2, "CM-CB"),
        (cb, "CB-A4", "2026-06-11", D(2026, 6, 11), D(2026, 6, 14), "OVERDUE", None, 1, 1, "CM-CB"),
        (cb, "CB-DONE", "2026-06-01", D(2026, 6, 1), D(2026, 6, 8), "DONE", D(2026, 6, 5), 0, 2, "CM-CB"),
    }
    # A day later: the two due on A are overdue; CB-E8's call-back, recorded on B, closes it 2 days late.
    assert tasks_of(on_b, prefix="CB-") == {
        (cb, "CB-TODAY-E", "2026-06-15", A, D(2026, 6, 22), "OPEN", None, 0, 2, "CM-CB"),
        (cb, "CB-TODAY-A", "2026-06-15", A, D(2026, 6, 18), "OPEN", None, 0, 2, "CM-CB"),
        (cb, "CB-E7", "2026-06-08", D(2026, 6, 8), A, "OVERDUE", None, 1, 1, "CM-CB"),
        (cb, "CB-E8", "2026-06-07", D(2026, 6, 7), D(2026, 6, 14), "DONE", B, 2, 2, "CM-CB"),
        (cb, "CB-A3", "2026-06-12", D(2026, 6, 12), A, "OVERDUE", None, 1, 1, "CM-CB"),
        (cb, "CB-A4", "2026-06-11", D(2026, 6, 11), D(2026, 6, 14), "OVERDUE", None, 2, 1, "CM-CB"),
        (cb, "CB-DONE", "2026-06-01", D(2026, 6, 1), D(2026, 6, 8), "DONE", D(2026, 6, 5), 0, 2, "CM-CB"),
    }


def test_task_ids_are_stable_across_dates_and_name_the_obligation(on_a: Result, on_b: Result) -> None:
    ids_a = {r["task_id"]: r["task_type"] for r in on_a.tasks}
    ids_b = {r["task_id"]: r["task_type"] for r in on_b.tasks}
    assert len(ids_a) == len(on_a.tasks) and len(ids_b) == len(on_b.tasks)
    callback = task_id("FIRST_CALLBACK", "CB-E8", "2026-06-07")
    assert ids_a[callback] == ids_b[callback] == "FIRST_CALLBACK"


# ------------------------------------------------------------------------------------------------
# Monthly sample


def expected_sample(officer: str, count: int, month: str, size: int) -> set[str]:
    """The rule by hand: the `size` loans with the smallest SHA-256 of loan_id|month."""
    loans = [f"{officer}-{n:02d}" for n in range(count)]
    return set(sorted(loans, key=lambda loan: (hashlib.sha256(f"{loan}|{month}".encode()).hexdigest(), loan))[:size])


def sampled(result: Result, officer: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for r in result.tasks:
        if r["task_type"] == "MONTHLY_SAMPLE" and r["officer_id"] == officer:
            out.setdefault(r["obligation_key"], set()).add(r["loan_id"])
    return out


def test_monthly_sample_is_ceil_of_ten_percent_per_customer_manager(on_a: Result) -> None:
    # ceil(10% of 9, 10, 11) = 1, 1, 2 of May's new loans, for the June sample.
    assert sampled(on_a, "CM-S9") == {"2026-06": expected_sample("CM-S9", 9, "2026-06", 1)}
    assert sampled(on_a, "CM-S10") == {"2026-06": expected_sample("CM-S10", 10, "2026-06", 1)}
    assert sampled(on_a, "CM-S11") == {"2026-06": expected_sample("CM-S11", 11, "2026-06", 2)}
    assert len(expected_sample("CM-S11", 11, "2026-06", 2)) == 2


def test_monthly_sample_month_boundaries_due_date_and_overdue_carry(on_a: Result) -> None:
    s = "MONTHLY_SAMPLE"
    # One new loan in May (31 May) -> sampled in June, due on the 20th: a Saturday after the
    # Friday holiday, so Thursday 18 June. 1 June belongs to July's sample (not yet begun).
    # The 30 April loan was May's sample, due Wednesday 20 May: not done, still listed, 26 days late.
    assert tasks_of(on_a, prefix="SM1-", task_type=s) == {
        (s, "SM1-MAY31", "2026-06", D(2026, 6, 1), D(2026, 6, 18), "OPEN", None, 0, 2, "CM-S1"),
        (s, "SM1-APR30", "2026-05", D(2026, 5, 1), D(2026, 5, 20), "OVERDUE", None, 26, 1, "CM-S1"),
    }


def test_sample_is_the_same_when_inputs_come_in_another_order(
    spark: SparkSession, config: AppConfig, on_a: Result
) -> None:
    rerun = run(spark, config, A, reverse=True)
    assert sorted(rerun.tasks) == sorted(on_a.tasks)
    assert sorted(rerun.settled) == sorted(on_a.settled)


# ------------------------------------------------------------------------------------------------
# Art. 45 frequencies: high-NPL products, low-risk products, exemptions


def test_non_instalment_loans_of_high_npl_products_are_checked_every_six_months(on_a: Result) -> None:
    p = "PERIODIC_CHECK"
    h2_2025 = ("2025-07", D(2025, 7, 1), D(2025, 12, 31))
    h1_2026 = ("2026-01", D(2026, 1, 1), D(2026, 6, 30))
    # Disbursed in H1 2025: H2 2025 (due 31 Dec, 166 days late on A) and H1 2026 (due 30 June).
    # P-DONE's check of 5 January closed H2 2025 late (dropped after the end of February) and H1 2026.
    # P-INST repays in instalments; P-MC is an NPL in litigation; AU-LIT is both: no task.
    # BR-02's BIZ loans: the only NPL there was disbursed exactly 36 months ago, outside the window.
    assert tasks_of(on_a, task_type=p) == {
        (p, "P-BULLET", *h2_2025, "OVERDUE", None, 166, 2, "CM-P"),
        (p, "P-BULLET", *h1_2026, "OPEN", None, 0, 3, "CM-P"),
        (p, "P-DONE", *h1_2026, "DONE", D(2026, 1, 5), 0, 3, "CM-P"),
        (p, "P-LIT", *h2_2025, "OVERDUE", None, 166, 2, "CM-P"),
        (p, "P-LIT", *h1_2026, "OPEN", None, 0, 3, "CM-P"),
    }
    reasons = {r["reason"] for r in on_a.tasks if r["task_type"] == p and r["loan_id"] == "P-BULLET"}
    assert reasons == {"Product BIZ: new-loan NPL rate 50.00% over 36 months above 1.00%: check every 6 months"}


def test_npl_in_litigation_becomes_exempt_and_a_material_change_brings_it_back(on_b: Result) -> None:
    p = "PERIODIC_CHECK"
    # On B, P-LIT's litigation starts: its tasks go. P-MC's material change (raised on B, after
    # its litigation) ends its exemption.
    loans = {t[1] for t in tasks_of(on_b, task_type=p)}
    assert loans == {"P-BULLET", "P-DONE", "P-MC"}
    assert tasks_of(on_b, prefix="P-MC", task_type=p) == {
        (p, "P-MC", "2025-07", D(2025, 7, 1), D(2025, 12, 31), "OVERDUE", None, 167, 2, "CM-P"),
        (p, "P-MC", "2026-01", D(2026, 1, 1), D(2026, 6, 30), "OPEN", None, 0, 3, "CM-P"),
    }


def test_low_risk_products_checked_at_the_tier1_frequency_collateral_first(on_a: Result) -> None:
    lr = "LOW_RISK_CHECK"
    # Yearly by default; disbursed in 2025, so the first check is for 2026, due Thursday 31 December.
    # The instalment loan of the same product has no fixed frequency.
    assert tasks_of(on_a, task_type=lr) == {
        (lr, "LR-1", "2026-01", D(2026, 1, 1), D(2026, 12, 31), "OPEN", None, 0, 3, "CM-P"),
    }
    (reason,) = {r["reason"] for r in on_a.tasks if r["task_type"] == lr}
    assert reason == "Low-credit-risk product SAFE: check every 12 months, collateral first (MORTGAGE)"


def test_autonomous_payment_loans_get_a_quarterly_purpose_check(on_a: Result) -> None:
    pc = "PURPOSE_CHECK"
    # AU-1 and AU2-*, disbursed in Q1: Q2's check due 30 June. AU-LIT is an NPL in litigation:
    # exempt. Autonomous loans disbursed in June (CB-*) start with Q3.
    q2 = ("2026-04", D(2026, 4, 1), D(2026, 6, 30), "OPEN", None, 0, 3)
    assert tasks_of(on_a, task_type=pc) == {
        (pc, "AU-1", *q2, "CM-AU"),
        (pc, "AU2-0", *q2, "CM-AU3"),
        (pc, "AU2-1", *q2, "CM-AU3"),
        (pc, "AU2-2", *q2, "CM-AU3"),
    }


# ------------------------------------------------------------------------------------------------
# Risk-exit list, major signals


def test_risk_exit_list_monthly_visit_and_major_signal_verification(on_a: Result) -> None:
    rx, sv = "RISK_EXIT_VISIT", "SIGNAL_VERIFICATION"
    assert tasks_of(on_a, prefix="X-") == {
        # Listed 20 May (borrower-level signal): May's visit due Friday 29 May (31st is a Sunday),
        # 17 days late; June's due Tuesday 30 June.
        (rx, "X-1", "2026-05", D(2026, 5, 1), D(2026, 5, 29), "OVERDUE", None, 17, 1, "CM-X"),
        (rx, "X-1", "2026-06", D(2026, 6, 1), D(2026, 6, 30), "OPEN", None, 0, 1, "CM-X"),
        # Major fraud: on the list from June, and verified by BR-02's active risk manager in 7 days.
        (rx, "X-2", "2026-06", D(2026, 6, 1), D(2026, 6, 30), "OPEN", None, 0, 1, "CM-X2"),
        (sv, "X-2", "SIG-X2", D(2026, 6, 10), D(2026, 6, 17), "OPEN", None, 0, 1, "RM-B2"),
        # X-3's major signal was cleared before anyone verified it: the task lapsed.
        # X-4's verification was recorded against its task_id a day late; BR-01 has no risk
        # manager, so T1-01's owns it.
        (sv, "X-4", "SIG-X4", D(2026, 6, 1), D(2026, 6, 8), "DONE", D(2026, 6, 9), 1, 1, "RM-T1"),
    }
    owners = {(r["loan_id"], r["task_type"]): (r["owner_role"], r["branch_id"]) for r in on_a.tasks}
    assert owners[("X-2", sv)] == ("RISK_MANAGER", "BR-02")
    assert owners[("X-2", rx)] == ("CUSTOMER_MANAGER", "BR-02")


# ------------------------------------------------------------------------------------------------
# Maturity notices


def test_maturity_notice_business_days_before_maturity(on_a: Result) -> None:
    mn = "MATURITY_NOTICE"
    # M-1 matures Wednesday 24 June: 5 business days before, skipping the holiday, is Tuesday 16
    # June; listed from 30 days before that. M-2's notice (24 August) is not listed yet; M-3 repays
    # in instalments.
    assert tasks_of(on_a, prefix="M-", task_type=mn) == {
        (mn, "M-1", "2026-06-24", D(2026, 5, 17), D(2026, 6, 16), "OPEN", None, 0, 2, "CM-M"),
    }
    (reason,) = {r["reason"] for r in on_a.tasks if r["task_type"] == mn}
    assert reason == "Matures on 2026-06-24: notify the borrower and 2 guarantor(s) 5 business days before"


# ------------------------------------------------------------------------------------------------
# Settled loans, collateral release


def test_repaid_loans_get_a_collateral_release_task(on_a: Result) -> None:
    cr = "COLLATERAL_RELEASE"
    assert tasks_of(on_a, task_type=cr) == {
        (cr, "S-1", "2026-06-05", D(2026, 6, 5), D(2026, 6, 12), "OVERDUE", None, 3, 1, "CM-ST"),
        (cr, "S-2", "2026-05-20", D(2026, 5, 20), D(2026, 5, 27), "DONE", D(2026, 5, 25), 0, 2, "CM-ST"),
        # April's is not released yet: it stays on the list until done.
        (cr, "S-3", "2026-04-30", D(2026, 4, 30), D(2026, 5, 7), "OVERDUE", None, 39, 1, "CM-ST"),
        # Guaranteed by contract, but a pledge is on file.
        (cr, "S-7", "2026-06-03", D(2026, 6, 3), D(2026, 6, 10), "OVERDUE", None, 5, 1, "CM-ST"),
    }


def test_settled_loans_list_this_month_and_last(on_a: Result) -> None:
    got = {
        (r["loan_id"], r["list_month"], r["closed_date"], r["collateral_count"], r["release_required"],
         r["release_status"], r["release_done_date"])
        for r in on_a.settled
    }  # fmt: skip
    # April's settlement (S-3) is off the list; a write-off (S-5) is not a settlement.
    assert got == {
        ("S-1", D(2026, 6, 1), D(2026, 6, 5), 0, True, "OVERDUE", None),
        ("S-2", D(2026, 5, 1), D(2026, 5, 20), 0, True, "DONE", D(2026, 5, 25)),
        ("S-4", D(2026, 6, 1), D(2026, 6, 10), 0, False, None, None),
        ("S-7", D(2026, 6, 1), D(2026, 6, 3), 1, True, "OVERDUE", None),
    }
    release = {r["loan_id"]: r["release_task_id"] for r in on_a.settled}
    assert release["S-1"] == task_id("COLLATERAL_RELEASE", "S-1", "2026-06-05")


# ------------------------------------------------------------------------------------------------
# Channels


def test_active_channels_get_a_quarterly_check_by_their_channel_manager(on_a: Result) -> None:
    ch = "CHANNEL_CHECK"
    assert tasks_of(on_a, task_type=ch) == {
        # CH-1's check of 2 April closed Q1 (late; dropped after May) and Q2.
        (ch, "CH-1", "2026-04", D(2026, 4, 1), D(2026, 6, 30), "DONE", D(2026, 4, 2), 0, 3, "CHM-1"),
        (ch, "CH-2", "2026-01", D(2026, 1, 1), D(2026, 3, 31), "OVERDUE", None, 76, 2, "CHM-1"),
        (ch, "CH-2", "2026-04", D(2026, 4, 1), D(2026, 6, 30), "OPEN", None, 0, 3, "CHM-1"),
        # CH-3 is suspended; CH-4 was admitted in Q2, so its first check is Q3's.
    }
    roles = {r["owner_role"] for r in on_a.tasks if r["task_type"] == ch}
    assert roles == {"CHANNEL_MANAGER"}


# ------------------------------------------------------------------------------------------------
# Reasons


def test_each_task_says_why_it_exists(on_a: Result) -> None:
    reasons = {(r["task_type"], r["loan_id"] or r["channel_id"], r["obligation_key"]): r["reason"] for r in on_a.tasks}
    assert reasons[("FIRST_CALLBACK", "CB-A3", "2026-06-12")] == (
        "First call-back 3 days after disbursement on 2026-06-12 (autonomous payment)"
    )
    assert reasons[("MONTHLY_SAMPLE", "SM1-MAY31", "2026-06")] == (
        "Monthly on-site sample for 2026-06: 1 of the customer manager's 1 new loans of 2026-05 (at least 10%)"
    )
    assert reasons[("PURPOSE_CHECK", "AU-1", "2026-04")] == (
        "Autonomous payment: loan-purpose check (vouchers, account analysis) for the 3 months from 2026-04-01"
    )
    assert reasons[("RISK_EXIT_VISIT", "X-2", "2026-06")] == (
        "On the risk-exit list since 2026-06-10 (FRAUD): on-site visit every 1 month(s)"
    )
    assert reasons[("SIGNAL_VERIFICATION", "X-2", "SIG-X2")] == (
        "Major risk signal SIG-X2 (FRAUD) raised 2026-06-10: on-site verification by the risk manager within 7 days"
    )
    assert reasons[("COLLATERAL_RELEASE", "S-7", "2026-06-03")] == (
        "Repaid in full on 2026-06-03: release the collateral (抵押權證出庫, 注銷抵押登記) within 7 days "
        "(contract security GUARANTEE, 1 collateral item(s) on file)"
    )
    assert reasons[("CHANNEL_CHECK", "CH-2", "2026-01")] == (
        "Cooperation channel CH-2: on-site check every 3 months, from 2026-01-01"
    )


# ------------------------------------------------------------------------------------------------
# Contract, summary


def test_output_fits_the_table_contracts(spark: SparkSession, on_a: Result) -> None:
    # createDataFrame checks every value against the contract's types and nullability.
    tasks = spark.createDataFrame([tuple(r) for r in on_a.tasks], INSPECTION_TASKS.schema)
    settled = spark.createDataFrame([tuple(r) for r in on_a.settled], SETTLED_LOANS.schema)
    assert list(on_a.tasks[0].asDict()) == INSPECTION_TASKS.names
    assert list(on_a.settled[0].asDict()) == SETTLED_LOANS.names
    assert {r["as_of_date"] for r in on_a.tasks} == {A}
    assert {r["branch_path"][0] for r in on_a.tasks} == {"HQ"}
    summary = inspection_summary(tasks, settled)
    assert summary["tasks"] == len(on_a.tasks)
    assert summary["tasks_open"] + summary["tasks_done"] + summary["tasks_overdue"] == len(on_a.tasks)
    assert summary["tasks_overdue_channel_check"] == 1
    assert summary["tasks_low_risk_check"] == 1
    assert summary["settled_loans"] == 4


# ------------------------------------------------------------------------------------------------
# Tier-1 branch overrides, from the configuration files


def test_tier1_branch_override_in_postloan_yaml_takes_effect(
    spark: SparkSession, conf_dir: Path, tmp_path: Path
) -> None:
    conf = tmp_path / "conf"
    shutil.copytree(conf_dir, conf)
    with (conf / "postloan.yaml").open("a", encoding="utf-8") as handle:
        handle.write(
            "  - tier1_branch: T1-02\n"
            "    set:\n"
            "      inspections.sample_ratio: 0.5\n"
            "      inspections.holiday_roll: NEXT\n"
            "      inspections.npl_rate_by_branch: false\n"
            "      inspections.purpose_check_ratio: 0.5\n"
        )
    config = load_config(conf)
    assert config.holidays and D(2026, 6, 19) in config.holidays
    result = run(spark, config, A)
    # T1-02: half of CM-S10B's 10 May loans, due on the next business day after Saturday 20 June.
    assert sampled(result, "CM-S10B") == {"2026-06": expected_sample("CM-S10B", 10, "2026-06", 5)}
    samples = [r for r in result.tasks if r["task_type"] == "MONTHLY_SAMPLE"]
    assert {r["due_date"] for r in samples if r["officer_id"] == "CM-S10B"} == {D(2026, 6, 22)}
    # T1-01 keeps the base: 1 of 10, due Thursday 18 June.
    assert {(r["loan_id"], r["due_date"]) for r in samples if r["officer_id"] == "CM-S10"} == {
        (loan, D(2026, 6, 18)) for loan in expected_sample("CM-S10", 10, "2026-06", 1)
    }
    # T1-02 checks the purpose of half its autonomous loans: ceil(0.5 x 3) = 2 of CM-AU3's, by the
    # hash of loan_id|period; T1-01's AU-1 is still checked.
    purpose = {r["loan_id"] for r in result.tasks if r["task_type"] == "PURPOSE_CHECK"}
    au2 = sorted(
        (f"AU2-{n}" for n in range(3)), key=lambda loan: hashlib.sha256(f"{loan}|2026-04".encode()).hexdigest()
    )
    assert purpose == {"AU-1", *au2[:2]}
    # T1-02 measures the NPL rate bank-wide per product: BIZ has 3 NPL of 7 new loans (43%), so
    # BR-02's bullet loan is now checked every six months.
    p = "PERIODIC_CHECK"
    assert tasks_of(result, prefix="P-OTHERBR") == {
        (p, "P-OTHERBR", "2025-07", D(2025, 7, 1), D(2025, 12, 31), "OVERDUE", None, 166, 2, "CM-P2"),
        (p, "P-OTHERBR", "2026-01", D(2026, 1, 1), D(2026, 6, 30), "OPEN", None, 0, 3, "CM-P2"),
    }
