"""Risk classification (DOMAIN.md section 2) on hand-made loans; expected values worked by hand.

Business date 2024-06-30 throughout. Each test classifies one multi-row book and compares the
whole result (the columns it is about) in one assertion, to keep the number of Spark jobs small.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.testing import assertDataFrameEqual

from jobs.classification import OUTPUT_COLUMNS, classification_changes, classify
from jobs.config import AppConfig, load_config
from jobs.params import params_frame, with_params
from schemas.base import BOOL, DATE, INT, MONEY, STRING
from schemas.lake import CLASSIFICATION_HISTORY, LOAN_SNAPSHOT
from schemas.landing import OVERRIDES, PRODUCTS, RISK_SIGNALS, SCHEDULE

D = dt.date
AS_OF = D(2024, 6, 30)
NEW_YEAR, JUNE_FIRST, YEAR_END = D(2024, 1, 1), D(2024, 6, 1), D(2024, 12, 31)

SM, SUB, DBT = "SPECIAL_MENTION", "SUBSTANDARD", "DOUBTFUL"
OVERDUE, OVER_SUB, OVER_DBT, OVER_LOSS = (
    "DPD_OVERDUE",
    "DPD_OVER_SUBSTANDARD",
    "DPD_OVER_DOUBTFUL",
    "DPD_OVER_LOSS",
)

INPUT_SCHEMA = T.StructType(
    [
        T.StructField(name, dtype)
        for name, dtype in (
            ("as_of_date", DATE),
            ("loan_id", STRING),
            ("borrower_id", STRING),
            ("branch_id", STRING),
            ("tier1_branch_id", STRING),
            ("product_code", STRING),
            ("collateral_type", STRING),
            ("repayment_method", STRING),
            ("disbursement_date", DATE),
            ("maturity_date", DATE),
            ("principal", MONEY),
            ("restructured_date", DATE),
            ("restructure_count", INT),
            ("restructured_from_npl", BOOL),
            ("outstanding_principal", MONEY),
            ("overdue_principal", MONEY),
            ("overdue_interest", MONEY),
            ("overdue_installments", INT),
            ("dpd", INT),
            ("bucket", STRING),
            ("max_dpd_ever", INT),
            ("mob", INT),
            ("first_payment_default", BOOL),
            ("last_overdue_date", DATE),
        )
    ]
)
PREVIOUS_SCHEMA = "loan_id string, risk_class string, risk_grade string"


# ------------------------------------------------------------------------------------------------
# Builders


def loan(loan_id: str, dpd: int = 0, **fields: Any) -> dict[str, Any]:
    """A loan on the book; an overdue one owes one instalment and was overdue on the date."""
    row: dict[str, Any] = {
        "as_of_date": AS_OF,
        "loan_id": loan_id,
        "borrower_id": f"B-{loan_id}",
        "branch_id": "BR-01",
        "tier1_branch_id": "T1-01",
        "product_code": "CONSUMER",
        "collateral_type": "CREDIT",
        "repayment_method": "EQUAL_INSTALLMENT",
        "disbursement_date": D(2023, 1, 15),
        "maturity_date": D(2026, 1, 15),
        "principal": Decimal("120000.00"),
        "restructured_date": None,
        "restructure_count": None,
        "restructured_from_npl": None,
        "outstanding_principal": Decimal("100000.00"),
        "overdue_principal": Decimal("1000.00") if dpd else Decimal("0.00"),
        "overdue_interest": Decimal("50.00") if dpd else Decimal("0.00"),
        "overdue_installments": 1 if dpd else 0,
        "dpd": dpd,
        "bucket": "M1" if dpd else "M0",
        "max_dpd_ever": dpd,
        "mob": 17,
        "first_payment_default": False,
        "last_overdue_date": AS_OF if dpd else None,
    }
    unknown = set(fields) - set(row)
    assert not unknown, unknown
    row.update(fields)
    return row


def book(spark: SparkSession, config: AppConfig, rows: Sequence[dict[str, Any]]) -> DataFrame:
    """Loans joined with their resolved parameters, as the delinquency stage hands them over."""
    source = spark.createDataFrame([tuple(r[f.name] for f in INPUT_SCHEMA) for r in rows], INPUT_SCHEMA)
    params = params_frame(spark, config, {r["tier1_branch_id"] for r in rows}, {r["product_code"] for r in rows})
    return source.transform(with_params(params))


def months_after(start: dt.date, months: int) -> dt.date:
    index = start.month - 1 + months
    return start.replace(year=start.year + index // 12, month=index % 12 + 1)


def instalments(loan_id: str, first: dt.date, count: int, every_months: int = 1) -> list[tuple[Any, ...]]:
    return [
        (loan_id, n + 1, months_after(first, n * every_months), Decimal("900.00"), Decimal("100.00"))
        for n in range(count)
    ]


def signal(
    signal_id: str,
    loan_id: str | None,
    borrower_id: str,
    signal_type: str,
    *,
    signal_date: dt.date = NEW_YEAR,
    cleared: dt.date | None = None,
    days_overdue: int | None = None,
    has_estate: bool | None = None,
) -> tuple[Any, ...]:
    return (signal_id, loan_id, borrower_id, signal_type, "MAJOR", signal_date, cleared, days_overdue, has_estate)


def override(
    override_id: str,
    loan_id: str,
    risk_class: str,
    approved: dt.date = JUNE_FIRST,
    expiry: dt.date = YEAR_END,
) -> tuple[Any, ...]:
    return (override_id, loan_id, risk_class, "review", "RM-01", approved, expiry)


PRODUCT_ROWS = [
    ("CONSUMER", "Consumer loan", "CONSUMER", False, False),
    ("REFI", "Refinancing loan", "BUSINESS", False, True),
    ("NOFLAG", "Old product", "BUSINESS", False, None),
    ("MORTGAGE", "Housing loan", "MORTGAGE", True, False),
]


def run(
    spark: SparkSession,
    config: AppConfig,
    loans: Sequence[dict[str, Any]] | DataFrame,
    *,
    schedule: Iterable[tuple[Any, ...]] = (),
    signals: Iterable[tuple[Any, ...]] = (),
    overrides: Iterable[tuple[Any, ...]] = (),
    previous: Iterable[tuple[str, str, str]] | None = None,
) -> DataFrame:
    frame = loans if isinstance(loans, DataFrame) else book(spark, config, loans)
    transform = classify(
        AS_OF,
        config.profile,
        spark.createDataFrame(list(schedule), SCHEDULE.schema),
        spark.createDataFrame(list(signals), RISK_SIGNALS.schema),
        spark.createDataFrame(list(overrides), OVERRIDES.schema),
        spark.createDataFrame(PRODUCT_ROWS, PRODUCTS.schema),
        None if previous is None else spark.createDataFrame(list(previous), PREVIOUS_SCHEMA),
    )
    return frame.transform(transform)


def expect(spark: SparkSession, actual: DataFrame, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
    """Whole-frame equality on `columns`, typed as in the loan_snapshot contract."""
    schema = T.StructType([LOAN_SNAPSHOT.column(c).field() for c in columns])
    assertDataFrameEqual(actual.select(*columns), spark.createDataFrame(rows, schema))


@pytest.fixture(scope="module")
def config(conf_dir: Path) -> AppConfig:
    return load_config(conf_dir)


# ------------------------------------------------------------------------------------------------
# Rule 1: days past due


def test_dpd_floors_at_every_2023_boundary(spark: SparkSession, config: AppConfig) -> None:
    rows = [loan(f"D-{d:03d}", d) for d in (0, 1, 90, 270, 271, 360, 361)]
    # Collateral does not keep a loan over 90 days out of NPL.
    rows.append(loan("D-091", 91, collateral_type="MORTGAGE"))
    actual = run(spark, config, rows)
    expect(
        spark,
        actual,
        ["loan_id", "rule_class", "risk_class", "is_npl", "risk_reasons", "risk_grade"],
        [
            ("D-000", "NORMAL", "NORMAL", False, ["PERFORMING"], "A2"),
            ("D-001", SM, SM, False, [OVERDUE], "B2"),
            ("D-090", SM, SM, False, [OVERDUE], "B3"),
            ("D-091", SUB, SUB, True, [OVERDUE, OVER_SUB], "C1"),
            ("D-270", SUB, SUB, True, [OVERDUE, OVER_SUB], "C2"),
            ("D-271", DBT, DBT, True, [OVERDUE, OVER_DBT, OVER_SUB], "D1"),
            ("D-360", DBT, DBT, True, [OVERDUE, OVER_DBT, OVER_SUB], "D2"),
            ("D-361", "LOSS", "LOSS", True, [OVERDUE, OVER_DBT, OVER_LOSS, OVER_SUB], "E"),
        ],
    )


def test_legacy_exam_profile_moves_doubtful_and_loss_boundaries(spark: SparkSession, conf_dir: Path) -> None:
    legacy = load_config(conf_dir, profile="legacy_exam")
    actual = run(spark, legacy, [loan(f"L-{d:04d}", d) for d in (90, 91, 360, 361, 1080, 1081)])
    expect(
        spark,
        actual,
        ["loan_id", "risk_class", "risk_reasons"],
        [
            ("L-0090", SM, [OVERDUE]),
            ("L-0091", SUB, [OVERDUE, OVER_SUB]),
            ("L-0360", SUB, [OVERDUE, OVER_SUB]),
            ("L-0361", DBT, [OVERDUE, OVER_DBT, OVER_SUB]),
            ("L-1080", DBT, [OVERDUE, OVER_DBT, OVER_SUB]),
            ("L-1081", "LOSS", [OVERDUE, OVER_DBT, OVER_LOSS, OVER_SUB]),
        ],
    )


def test_technical_grace_comes_from_the_parameter_columns(spark: SparkSession, config: AppConfig) -> None:
    # A profile with a 7-day grace, and the shipped one (grace 0, but 3 days for tier-1 branch T1-03
    # in conf/postloan.yaml). The thresholds travel as columns, so both books classify together.
    graced = dataclasses.replace(config, profile=dataclasses.replace(config.profile, technical_grace_days=7))
    seven = book(spark, graced, [loan("G7-7", 7), loan("G7-8", 8)])
    shipped = book(
        spark,
        config,
        [
            loan("T3-3", 3, tier1_branch_id="T1-03"),
            loan("T3-4", 4, tier1_branch_id="T1-03"),
            loan("T1-3", 3, tier1_branch_id="T1-01"),
        ],
    )
    actual = run(spark, config, seven.unionByName(shipped))
    expect(
        spark,
        actual,
        ["loan_id", "risk_class", "risk_reasons"],
        [
            ("G7-7", "NORMAL", ["PERFORMING", "TECHNICAL_OVERDUE"]),
            ("G7-8", SM, [OVERDUE]),
            ("T3-3", "NORMAL", ["PERFORMING", "TECHNICAL_OVERDUE"]),
            ("T3-4", SM, [OVERDUE]),
            ("T1-3", SM, [OVERDUE]),
        ],
    )


# ------------------------------------------------------------------------------------------------
# Rule 2: risk signals


def test_signal_floors(spark: SparkSession, config: AppConfig) -> None:
    ids = [
        "S-OFF",
        "S-REF",
        "S-REFD",
        "S-REFN",
        "S-OB29",
        "S-OB30",
        "S-CD",
        "S-FRAUD",
        "S-DEAD",
        "S-DEADN",
        "S-DEADE",
        "S-MISS",
        "S-MISSE",
        "S-LOST",
        "S-LOSTE",
        "S-EXIT",
        "S-CLR",
        "S-CLR1",
        "S-TODAY",
        "S-TMRW",
        "S-TWO",
    ]
    products = {"S-REFD": "REFI", "S-REFN": "NOFLAG"}
    rows = [loan(i, product_code=products.get(i, "CONSUMER")) for i in ids]
    rows += [
        loan("S-LIT1", borrower_id="B-LIT"),
        loan("S-LIT2", borrower_id="B-LIT"),
        loan("S-SIB1", borrower_id="B-SIB"),
        loan("S-SIB2", borrower_id="B-SIB"),
    ]
    signals = [
        signal("1", "S-OFF", "B-S-OFF", "OFF_PURPOSE_USE"),
        signal("2", "S-REF", "B-S-REF", "REFINANCE_OLD_WITH_NEW"),
        signal("3", "S-REFD", "B-S-REFD", "REFINANCE_OLD_WITH_NEW"),
        signal("4", "S-REFN", "B-S-REFN", "REFINANCE_OLD_WITH_NEW"),
        signal("5", "S-OB29", "B-S-OB29", "OTHER_BANK_OVERDUE", days_overdue=29),
        signal("6", "S-OB30", "B-S-OB30", "OTHER_BANK_OVERDUE", days_overdue=30),
        signal("7", "S-CD", "B-S-CD", "CREDIT_DOWNGRADE"),
        signal("8", "S-FRAUD", "B-S-FRAUD", "FRAUD"),
        signal("9", "S-DEAD", "B-S-DEAD", "BORROWER_DECEASED", has_estate=False),
        signal("10", "S-DEADN", "B-S-DEADN", "BORROWER_DECEASED", has_estate=None),
        signal("11", "S-DEADE", "B-S-DEADE", "BORROWER_DECEASED", has_estate=True),
        signal("12", "S-MISS", "B-S-MISS", "BORROWER_MISSING", has_estate=False),
        signal("13", "S-MISSE", "B-S-MISSE", "BORROWER_MISSING", has_estate=True),
        signal("14", "S-LOST", "B-S-LOST", "LOST_CAPACITY", has_estate=False),
        signal("15", "S-LOSTE", "B-S-LOSTE", "LOST_CAPACITY", has_estate=True),
        signal("16", "S-EXIT", "B-S-EXIT", "RISK_EXIT_LIST"),  # not in signal_floors: no floor
        signal("17", "S-CLR", "B-S-CLR", "LITIGATION", cleared=AS_OF),  # cleared today: not in force
        signal("18", "S-CLR1", "B-S-CLR1", "LITIGATION", cleared=D(2024, 7, 1)),
        signal("19", "S-TODAY", "B-S-TODAY", "LITIGATION", signal_date=AS_OF),
        signal("20", "S-TMRW", "B-S-TMRW", "LITIGATION", signal_date=D(2024, 7, 1)),
        signal("21", "S-TWO", "B-S-TWO", "FRAUD"),
        signal("22", "S-TWO", "B-S-TWO", "LITIGATION"),
        signal("23", None, "B-LIT", "LITIGATION"),  # on the borrower: every loan of theirs
        signal("24", "S-SIB1", "B-SIB", "OFF_PURPOSE_USE"),  # on one loan only
    ]
    actual = run(spark, config, rows, signals=signals)
    # Grades: NORMAL with no signal floor and never overdue on credit A2; SM at 0 dpd B1; SUB C1.
    expect(
        spark,
        actual,
        ["loan_id", "risk_class", "risk_reasons", "risk_grade"],
        [
            ("S-OFF", SM, ["SIGNAL_OFF_PURPOSE_USE"], "B1"),
            ("S-REF", SM, ["SIGNAL_REFINANCE_OLD_WITH_NEW"], "B1"),
            ("S-REFD", "NORMAL", ["PERFORMING"], "A2"),
            ("S-REFN", SM, ["SIGNAL_REFINANCE_OLD_WITH_NEW"], "B1"),
            ("S-OB29", "NORMAL", ["PERFORMING"], "A2"),
            ("S-OB30", SM, ["SIGNAL_OTHER_BANK_OVERDUE"], "B1"),
            ("S-CD", SM, ["SIGNAL_CREDIT_DOWNGRADE"], "B1"),
            ("S-FRAUD", SUB, ["SIGNAL_FRAUD"], "C1"),
            ("S-DEAD", "LOSS", ["SIGNAL_BORROWER_DECEASED"], "E"),
            ("S-DEADN", "LOSS", ["SIGNAL_BORROWER_DECEASED"], "E"),
            ("S-DEADE", SUB, ["SIGNAL_BORROWER_DECEASED"], "C1"),
            ("S-MISS", "LOSS", ["SIGNAL_BORROWER_MISSING"], "E"),
            ("S-MISSE", SUB, ["SIGNAL_BORROWER_MISSING"], "C1"),
            ("S-LOST", "LOSS", ["SIGNAL_LOST_CAPACITY"], "E"),
            ("S-LOSTE", SUB, ["SIGNAL_LOST_CAPACITY"], "C1"),
            ("S-EXIT", "NORMAL", ["PERFORMING"], "A2"),
            ("S-CLR", "NORMAL", ["PERFORMING"], "A2"),
            ("S-CLR1", SM, ["SIGNAL_LITIGATION"], "B1"),
            ("S-TODAY", SM, ["SIGNAL_LITIGATION"], "B1"),
            ("S-TMRW", "NORMAL", ["PERFORMING"], "A2"),
            ("S-TWO", SUB, ["SIGNAL_FRAUD", "SIGNAL_LITIGATION"], "C1"),
            ("S-LIT1", SM, ["SIGNAL_LITIGATION"], "B1"),
            ("S-LIT2", SM, ["SIGNAL_LITIGATION"], "B1"),
            ("S-SIB1", SM, ["SIGNAL_OFF_PURPOSE_USE"], "B1"),
            ("S-SIB2", "NORMAL", ["PERFORMING"], "A2"),
        ],
    )


# ------------------------------------------------------------------------------------------------
# Rule 3: restructuring observation (2023 profile: 2 periods and 12 months, whichever ends later)


def test_restructuring_observation_period(spark: SparkSession, config: AppConfig) -> None:
    monthly_2023 = D(2023, 2, 15)  # 36 monthly instalments on the 15th, Feb 2023 .. Jan 2026
    rows = [
        # Start 2024-01-15; ends 2025-01-15 (12 months, later than 2 periods: 2024-03-15).
        loan("R-OBS", restructured_date=D(2024, 1, 10), restructure_count=1, restructured_from_npl=False),
        loan("R-AGAIN", restructured_date=D(2024, 1, 10), restructure_count=2),
        loan("R-NPL", restructured_date=D(2024, 1, 10), restructured_from_npl=True),
        # Start 2023-06-15; 12 months end 2024-06-15 <= as_of: over.
        loan("R-MONTHS-DONE", restructured_date=D(2023, 6, 10)),
        # Start 2023-07-01 (due on the 1st); 12 months end 2024-07-01, tomorrow: still observed.
        loan("R-ENDS-TMRW", restructured_date=D(2023, 6, 20)),
        # Start 2023-06-30; 12 months end 2024-06-30 = as_of: over on the end date itself.
        loan("R-ENDS-TODAY", restructured_date=D(2023, 6, 25)),
        # Annual schedule: start 2023-03-01; 12 months end 2024-03-01 (passed) but 2 periods end
        # 2025-03-01, the later, so still observed.
        loan("R-PERIODS", restructured_date=D(2023, 2, 1)),
        # Annual: start 2022-03-01; periods end 2024-03-01, months 2023-03-01: both passed.
        loan("R-PERIODS-DONE", restructured_date=D(2022, 2, 1)),
        # Restructured 2023-01-10 would end 2024-01-15, but a missed payment on 2023-09-20 restarts
        # the period at 2023-10-15, so it ends 2024-10-15.
        loan("R-RESTART", restructured_date=D(2023, 1, 10), last_overdue_date=D(2023, 9, 20)),
        # Overdue only before the restructuring: no restart, over since 2024-01-15.
        loan("R-OLD-MISS", restructured_date=D(2023, 1, 10), last_overdue_date=D(2022, 12, 20)),
        # One bullet instalment: the end-by-periods due date does not exist, so the floor stays.
        loan("R-BULLET", restructured_date=D(2024, 1, 10), repayment_method="BULLET"),
        loan("R-NOSCHED", restructured_date=D(2020, 1, 10)),
        # Start 2022-02-15 and 12 months long past, but the schedule stops before a second period.
        loan("R-SHORT", restructured_date=D(2022, 1, 10)),
        # Restructured after the business date: not yet.
        loan("R-LATER", restructured_date=D(2024, 7, 5)),
        # Restructured, first repayment date still ahead: observed from the restructuring date.
        loan("R-PRESTART", restructured_date=D(2024, 6, 20)),
    ]
    schedule = [
        *instalments("R-OBS", monthly_2023, 36),
        *instalments("R-AGAIN", monthly_2023, 36),
        *instalments("R-NPL", monthly_2023, 36),
        *instalments("R-MONTHS-DONE", monthly_2023, 36),
        *instalments("R-ENDS-TMRW", D(2023, 2, 1), 36),
        *[
            ("R-ENDS-TODAY", n + 1, due, Decimal("900.00"), Decimal("100.00"))
            for n, due in enumerate([D(2023, 5, 30), D(2023, 6, 30), D(2023, 7, 30), D(2023, 8, 30)])
        ],
        *instalments("R-PERIODS", D(2022, 3, 1), 5, every_months=12),
        *instalments("R-PERIODS-DONE", D(2021, 3, 1), 6, every_months=12),
        *instalments("R-RESTART", D(2022, 2, 15), 48),
        *instalments("R-OLD-MISS", D(2022, 2, 15), 48),
        ("R-BULLET", 1, D(2027, 1, 10), Decimal("120000.00"), Decimal("9000.00")),
        *instalments("R-SHORT", D(2022, 2, 15), 2),
        *instalments("R-LATER", monthly_2023, 36),
        *instalments("R-PRESTART", D(2024, 7, 15), 24),
    ]
    actual = run(spark, config, rows, schedule=schedule)
    observed = ["RESTRUCTURED_OBSERVATION"]
    expect(
        spark,
        actual,
        ["loan_id", "rule_class", "risk_class", "risk_reasons"],
        [
            ("R-OBS", SM, SM, observed),
            ("R-AGAIN", SUB, SUB, observed),
            ("R-NPL", SUB, SUB, observed),
            ("R-MONTHS-DONE", "NORMAL", "NORMAL", ["PERFORMING"]),
            ("R-ENDS-TMRW", SM, SM, observed),
            ("R-ENDS-TODAY", "NORMAL", "NORMAL", ["PERFORMING"]),
            ("R-PERIODS", SM, SM, observed),
            ("R-PERIODS-DONE", "NORMAL", "NORMAL", ["PERFORMING"]),
            ("R-RESTART", SM, SM, observed),
            ("R-OLD-MISS", "NORMAL", "NORMAL", ["PERFORMING"]),
            ("R-BULLET", SM, SM, observed),
            ("R-NOSCHED", SM, SM, observed),
            ("R-SHORT", SM, SM, observed),
            ("R-LATER", "NORMAL", "NORMAL", ["PERFORMING"]),
            ("R-PRESTART", SM, SM, observed),
        ],
    )


# ------------------------------------------------------------------------------------------------
# Rule 4: upgrade out of NPL (2023 profile: 2 due dates and 6 months of normal payment)


def test_upgrade_out_of_npl_needs_both_periods_and_months(spark: SparkSession, config: AppConfig) -> None:
    rows = [
        # Normal since 2023-12-11: 6 months on 2024-06-11 and 7 due dates (12-15 .. 06-15) passed.
        loan("U-BOTH", last_overdue_date=D(2023, 12, 10), max_dpd_ever=120),
        # Normal since 2024-04-02: 3 due dates passed but 6 months only on 2024-10-02: held.
        loan("U-PERIODS", last_overdue_date=D(2024, 4, 1), max_dpd_ever=120),
        # Annual schedule, normal since 2023-11-02: 6 months passed, one due date (2024-03-01): held.
        loan("U-MONTHS", last_overdue_date=D(2023, 11, 1), max_dpd_ever=120),
        # Normal since 2023-12-30: 6 months reached on 2024-06-30, the business date itself.
        loan("U-6M-TODAY", last_overdue_date=D(2023, 12, 29), max_dpd_ever=120),
        # Normal since 2024-01-01: 6 months only tomorrow.
        loan("U-6M-TMRW", last_overdue_date=D(2023, 12, 31), max_dpd_ever=120),
        # Arrears left (within tolerance, so dpd 0): not all repaid.
        loan("U-ARREARS", overdue_interest=Decimal("10.00"), last_overdue_date=D(2023, 6, 1)),
        # Never overdue (NPL for another reason before): normal since disbursement 2023-01-15.
        loan("U-NEVER"),
        # DOUBTFUL to SUBSTANDARD is an upgrade too: held while overdue.
        loan("U-DOUBT", 100),
        loan("U-WORSE", 280),
        loan("U-SAME", 100),
        # SPECIAL_MENTION is not NPL: no hold.
        loan("U-SM"),
        # Upgrade allowed to the signal's floor.
        loan("U-SIG", last_overdue_date=D(2023, 12, 10), max_dpd_ever=120),
        loan("U-NEW"),
        # Normal since disbursement 2023-01-15, annual due dates 2023-03-01, 2024-03-01 (both by the
        # date: exactly the 2 periods needed) and 2025-03-01 (after the date, not counted).
        loan("U-2-PERIODS"),
        # Two instalments both due 2024-03-01, a third 2025-03-01: one period by the date, so held.
        loan("U-1-PERIOD-TWICE"),
    ]
    schedule = [
        *(
            r
            for i in ("U-BOTH", "U-PERIODS", "U-6M-TODAY", "U-6M-TMRW", "U-ARREARS", "U-NEVER", "U-SIG")
            for r in instalments(i, D(2023, 2, 15), 36)
        ),
        *instalments("U-MONTHS", D(2023, 3, 1), 3, every_months=12),
        *instalments("U-2-PERIODS", D(2023, 3, 1), 3, every_months=12),
        ("U-1-PERIOD-TWICE", 1, D(2024, 3, 1), Decimal("900.00"), Decimal("100.00")),
        ("U-1-PERIOD-TWICE", 2, D(2024, 3, 1), Decimal("900.00"), Decimal("100.00")),
        ("U-1-PERIOD-TWICE", 3, D(2025, 3, 1), Decimal("900.00"), Decimal("100.00")),
    ]
    previous = [
        (i, SUB, "C1")
        for i in (
            "U-BOTH",
            "U-PERIODS",
            "U-MONTHS",
            "U-6M-TODAY",
            "U-6M-TMRW",
            "U-ARREARS",
            "U-NEVER",
            "U-WORSE",
            "U-SAME",
            "U-SIG",
            "U-2-PERIODS",
            "U-1-PERIOD-TWICE",
        )
    ] + [("U-DOUBT", DBT, "D1"), ("U-SM", SM, "B1")]
    signals = [signal("1", "U-SIG", "B-U-SIG", "LITIGATION")]
    actual = run(spark, config, rows, schedule=schedule, signals=signals, previous=previous)
    upgraded, pending = ["NPL_UPGRADED", "PERFORMING"], ["NPL_UPGRADE_PENDING"]
    expect(
        spark,
        actual,
        ["loan_id", "previous_risk_class", "rule_class", "risk_class", "risk_reasons"],
        [
            ("U-BOTH", SUB, "NORMAL", "NORMAL", upgraded),
            ("U-PERIODS", SUB, SUB, SUB, pending),
            ("U-MONTHS", SUB, SUB, SUB, pending),
            ("U-6M-TODAY", SUB, "NORMAL", "NORMAL", upgraded),
            ("U-6M-TMRW", SUB, SUB, SUB, pending),
            ("U-ARREARS", SUB, SUB, SUB, pending),
            ("U-NEVER", SUB, "NORMAL", "NORMAL", upgraded),
            ("U-DOUBT", DBT, DBT, DBT, [OVERDUE, OVER_SUB, "NPL_UPGRADE_PENDING"]),
            ("U-WORSE", SUB, DBT, DBT, [OVERDUE, OVER_DBT, OVER_SUB]),
            ("U-SAME", SUB, SUB, SUB, [OVERDUE, OVER_SUB]),
            ("U-SM", SM, "NORMAL", "NORMAL", ["PERFORMING"]),
            ("U-SIG", SUB, SM, SM, ["NPL_UPGRADED", "SIGNAL_LITIGATION"]),
            ("U-NEW", None, "NORMAL", "NORMAL", ["PERFORMING"]),
            ("U-2-PERIODS", SUB, "NORMAL", "NORMAL", upgraded),
            ("U-1-PERIOD-TWICE", SUB, SUB, SUB, pending),
        ],
    )


# ------------------------------------------------------------------------------------------------
# Rule 5: manual overrides (2023 profile: at most 1 notch up, never out of NPL over 90 dpd)


def test_manual_overrides_in_force_and_bounded(spark: SparkSession, config: AppConfig) -> None:
    loose = dataclasses.replace(
        config,
        profile=dataclasses.replace(config.profile, override_max_upgrade_notches=2, override_keeps_npl_dpd_floor=False),
    )
    strict_ids = [
        "O-DOWN",
        "O-UP1",
        "O-UP2",
        "O-EXP-TODAY",
        "O-EXPIRED",
        "O-FUTURE",
        "O-APPR-TODAY",
        "O-MULTI",
        "O-TIE",
    ]
    loans = book(
        spark,
        config,
        [
            *(loan(i) for i in strict_ids),
            loan("O-NPL", 100),
        ],
    ).unionByName(book(spark, loose, [loan("O-LOOSE", 100), loan("O-LOOSE3", 280)]))
    signals = [signal("1", "O-UP1", "B-O-UP1", "FRAUD"), signal("2", "O-UP2", "B-O-UP2", "FRAUD")]
    overrides = [
        override("OV-DOWN", "O-DOWN", DBT),
        override("OV-UP1", "O-UP1", SM),
        override("OV-UP2", "O-UP2", "NORMAL"),
        override("OV-NPL", "O-NPL", SM),
        override("OV-EXP-TODAY", "O-EXP-TODAY", SM, D(2024, 1, 1), AS_OF),
        override("OV-EXPIRED", "O-EXPIRED", SM, D(2024, 1, 1), D(2024, 6, 29)),
        override("OV-FUTURE", "O-FUTURE", SM, D(2024, 7, 1), D(2024, 12, 31)),
        override("OV-APPR-TODAY", "O-APPR-TODAY", SM, AS_OF, D(2024, 12, 31)),
        # Latest approval wins over a higher id; an expired later one does not count.
        override("OV-M9", "O-MULTI", SM, D(2024, 5, 1)),
        override("OV-M1", "O-MULTI", DBT, D(2024, 6, 1)),
        override("OV-M5", "O-MULTI", "LOSS", D(2024, 6, 10), D(2024, 6, 20)),
        # Same approval date: the higher id wins.
        override("OV-TA", "O-TIE", "LOSS", D(2024, 6, 1)),
        override("OV-TB", "O-TIE", SM, D(2024, 6, 1)),
        override("OV-LOOSE", "O-LOOSE", "NORMAL"),
        override("OV-LOOSE3", "O-LOOSE3", "NORMAL"),
    ]
    actual = run(spark, config, loans, signals=signals, overrides=overrides)
    manual, bounded = "MANUAL_OVERRIDE", "OVERRIDE_BOUNDED"
    columns = ["loan_id", "rule_class", "risk_class", "is_npl", "risk_reasons", "override_id", "risk_grade"]
    expect(
        spark,
        actual,
        columns,
        [
            ("O-DOWN", "NORMAL", DBT, True, [manual, "PERFORMING"], "OV-DOWN", "D1"),
            ("O-UP1", SUB, SM, False, [manual, "SIGNAL_FRAUD"], "OV-UP1", "B1"),
            # NORMAL is two notches above SUBSTANDARD: clipped to SPECIAL_MENTION.
            ("O-UP2", SUB, SM, False, [manual, bounded, "SIGNAL_FRAUD"], "OV-UP2", "B1"),
            # One notch would be allowed, but 100 dpd keeps it NPL.
            ("O-NPL", SUB, SUB, True, [OVERDUE, OVER_SUB, manual, bounded], "OV-NPL", "C1"),
            ("O-EXP-TODAY", "NORMAL", SM, False, [manual, "PERFORMING"], "OV-EXP-TODAY", "B1"),
            ("O-EXPIRED", "NORMAL", "NORMAL", False, ["PERFORMING"], None, "A2"),
            ("O-FUTURE", "NORMAL", "NORMAL", False, ["PERFORMING"], None, "A2"),
            ("O-APPR-TODAY", "NORMAL", SM, False, [manual, "PERFORMING"], "OV-APPR-TODAY", "B1"),
            ("O-MULTI", "NORMAL", DBT, True, [manual, "PERFORMING"], "OV-M1", "D1"),
            ("O-TIE", "NORMAL", SM, False, [manual, "PERFORMING"], "OV-TB", "B1"),
            # Two notches allowed and no NPL DPD floor: out of NPL despite 100 dpd (max_dpd_ever 100: A4).
            ("O-LOOSE", SUB, "NORMAL", False, [OVERDUE, OVER_SUB, manual], "OV-LOOSE", "A4"),
            # DOUBTFUL minus two notches is SPECIAL_MENTION (280 dpd: B3).
            ("O-LOOSE3", DBT, SM, False, [OVERDUE, OVER_DBT, OVER_SUB, manual, bounded], "OV-LOOSE3", "B3"),
        ],
    )


# ------------------------------------------------------------------------------------------------
# Rule 7: grades


def test_grades_follow_the_first_matching_rule_of_the_class(spark: SparkSession, config: AppConfig) -> None:
    rows = [
        loan("G-A1", collateral_type="MORTGAGE"),
        loan("G-A1-PLEDGE", collateral_type="PLEDGE"),
        loan("G-A1-EXIT", collateral_type="MORTGAGE"),  # a signal that sets no floor
        loan("G-A2", collateral_type="GUARANTEE"),
        loan("G-A3", collateral_type="MORTGAGE", max_dpd_ever=30),
        loan("G-A4", max_dpd_ever=31),
        loan("G-B1"),
        loan("G-B2", 60),
        loan("G-B3", 61),
        loan("G-C1", 180),
        loan("G-C2", 181),
        loan("G-D1", 315),
        loan("G-D2", 316),
        loan("G-E", 400),
        # Overridden to SPECIAL_MENTION: graded within that class.
        loan("G-OVR", collateral_type="MORTGAGE"),
        # Overridden up to NORMAL, but a signal floor fired: neither A1 nor A2.
        loan("G-OVR-SIG", collateral_type="MORTGAGE"),
    ]
    signals = [
        signal("1", "G-A1-EXIT", "B-G-A1-EXIT", "RISK_EXIT_LIST"),
        signal("2", "G-B1", "B-G-B1", "LITIGATION"),
        signal("3", "G-OVR-SIG", "B-G-OVR-SIG", "LITIGATION"),
    ]
    overrides = [override("OV-1", "G-OVR", SM), override("OV-2", "G-OVR-SIG", "NORMAL")]
    actual = run(spark, config, rows, signals=signals, overrides=overrides)
    expect(
        spark,
        actual,
        ["loan_id", "risk_class", "risk_grade"],
        [
            ("G-A1", "NORMAL", "A1"),
            ("G-A1-PLEDGE", "NORMAL", "A1"),
            ("G-A1-EXIT", "NORMAL", "A1"),
            ("G-A2", "NORMAL", "A2"),
            ("G-A3", "NORMAL", "A3"),
            ("G-A4", "NORMAL", "A4"),
            ("G-B1", SM, "B1"),
            ("G-B2", SM, "B2"),
            ("G-B3", SM, "B3"),
            ("G-C1", SUB, "C1"),
            ("G-C2", SUB, "C2"),
            ("G-D1", DBT, "D1"),
            ("G-D2", DBT, "D2"),
            ("G-E", "LOSS", "E"),
            ("G-OVR", SM, "B1"),
            ("G-OVR-SIG", "NORMAL", "A3"),
        ],
    )


# ------------------------------------------------------------------------------------------------
# Output contract and history


def test_output_is_the_input_plus_the_contract_columns(spark: SparkSession, config: AppConfig) -> None:
    loans = book(spark, config, [loan("X-1")])
    actual = run(spark, config, loans, previous=[])
    assert actual.columns == [*loans.columns, *OUTPUT_COLUMNS]
    types = {f.name: f.dataType for f in actual.schema.fields}
    assert {c: types[c] for c in OUTPUT_COLUMNS} == {c: LOAN_SNAPSHOT.column(c).dtype for c in OUTPUT_COLUMNS}

    history = actual.withColumn("branch_path", F.array(F.lit("HQ"))).transform(classification_changes(AS_OF, None))
    assert [(f.name, f.dataType) for f in history.schema.fields] == [
        (c.name, c.dtype) for c in CLASSIFICATION_HISTORY.columns
    ]


def test_input_without_parameter_columns_is_refused(spark: SparkSession, config: AppConfig) -> None:
    bare = spark.createDataFrame([tuple(loan("X-1")[f.name] for f in INPUT_SCHEMA)], INPUT_SCHEMA)
    with pytest.raises(ValueError, match="classification__dpd_special_mention_above"):
        run(spark, config, bare)


def test_profile_without_grades_is_refused(spark: SparkSession, config: AppConfig) -> None:
    gradeless = dataclasses.replace(config, profile=dataclasses.replace(config.profile, grades={}))
    with pytest.raises(ValueError, match="no grades for NORMAL"):
        run(spark, gradeless, [loan("X-1")])


def branch_path() -> Column:
    return F.array(F.lit("HQ"), F.col("tier1_branch_id"), F.col("branch_id"))


def history_expected(spark: SparkSession, rows: list[tuple[Any, ...]]) -> DataFrame:
    return spark.createDataFrame(rows, CLASSIFICATION_HISTORY.schema)


def test_changes_record_downgrades_upgrades_and_new_loans(spark: SparkSession, config: AppConfig) -> None:
    loans = book(spark, config, [loan("E-DOWN", 100), loan("E-UP"), loan("E-SAME", 10), loan("E-NEW")])
    loans = loans.withColumn("branch_path", branch_path())
    previous = [("E-DOWN", SM, "B3"), ("E-UP", SM, "B2"), ("E-SAME", SM, "B1"), ("E-GONE", SUB, "C1")]
    previous_frame = spark.createDataFrame(previous, PREVIOUS_SCHEMA)
    snapshot = run(spark, config, loans, previous=previous)
    actual = snapshot.transform(classification_changes(AS_OF, D(2024, 6, 29), previous_frame))
    where = ("BR-01", ["HQ", "T1-01", "BR-01"], Decimal("100000.00"))
    day_before = D(2024, 6, 29)
    # E-SAME moved from B1 to B2 within SPECIAL_MENTION: no change of class, no row.
    assertDataFrameEqual(
        actual,
        history_expected(
            spark,
            [
                (AS_OF, "E-DOWN", day_before, SM, SUB, "B3", "C1", "DOWNGRADE", [OVERDUE, OVER_SUB], *where),
                (AS_OF, "E-UP", day_before, SM, "NORMAL", "B2", "A2", "UPGRADE", ["PERFORMING"], *where),
                (AS_OF, "E-NEW", day_before, None, "NORMAL", None, "A2", "NEW", ["PERFORMING"], *where),
            ],
        ),
    )


def test_first_run_records_every_loan_as_new(spark: SparkSession, config: AppConfig) -> None:
    loans = book(spark, config, [loan("F-1", 100), loan("F-2")])
    loans = loans.withColumn("branch_path", branch_path())
    actual = run(spark, config, loans).transform(classification_changes(AS_OF, None))
    where = ("BR-01", ["HQ", "T1-01", "BR-01"], Decimal("100000.00"))
    assertDataFrameEqual(
        actual,
        history_expected(
            spark,
            [
                (AS_OF, "F-1", None, None, SUB, None, "C1", "NEW", [OVERDUE, OVER_SUB], *where),
                (AS_OF, "F-2", None, None, "NORMAL", None, "A2", "NEW", ["PERFORMING"], *where),
            ],
        ),
    )
