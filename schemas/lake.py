"""Lake (output) tables of the nightly batch: delinquency, classification, quarantine, run ledger.

Later stages (inspections, collections, metrics) keep their table contracts in modules of their
own beside this one; `schemas.registry.LAKE_TABLES` lists them all.
"""

from __future__ import annotations

from schemas.base import (
    BOOL,
    COUNTS,
    DATE,
    INT,
    MONEY,
    STRING,
    STRINGS,
    TIMESTAMP,
    Column,
    Table,
)
from schemas.landing import RISK_CLASSES

BUCKETS = ("M0", "M1", "M2", "M3", "M4", "M5", "M6", "M7+")
NPL_CLASSES = ("SUBSTANDARD", "DOUBTFUL", "LOSS")
RISK_GRADES = ("A1", "A2", "A3", "A4", "B1", "B2", "B3", "C1", "C2", "D1", "D2", "E")
RUN_STATUSES = ("RUNNING", "SUCCEEDED", "FAILED")

AS_OF = Column("as_of_date", DATE, "Business date (數據日期) the row describes", nullable=False)
# The loan's identity and owners, as every loan-level lake table names them.
LOAN_ID = Column("loan_id", STRING, "Loan contract number", nullable=False)
BORROWER_ID = Column("borrower_id", STRING, "Borrower id", nullable=False)
BRANCH_ID = Column("branch_id", STRING, "Managing branch", nullable=False)
BRANCH_PATH = Column("branch_path", STRINGS, "Branch ids from head office down to the managing branch", nullable=False)
PRODUCT_CODE = Column("product_code", STRING, "Loan product", nullable=False)
OFFICER_ID = Column("officer_id", STRING, "Customer manager", nullable=False)

LOAN_SNAPSHOT = Table(
    name="loan_snapshot",
    comment=(
        "One row per loan on the book on the business date (disbursed on or before it, not closed "
        "on or before it): delinquency, risk classification and the rules that fired."
    ),
    key=("as_of_date", "loan_id"),
    partition_by=("as_of_date",),
    sort_by=("loan_id",),
    columns=(
        AS_OF,
        LOAN_ID,
        BORROWER_ID,
        BRANCH_ID,
        Column("tier1_branch_id", STRING, "Tier-1 branch (一級分行) above the managing branch"),
        Column("tier2_branch_id", STRING, "Tier-2 branch (二級分行) above the managing branch"),
        BRANCH_PATH,
        PRODUCT_CODE,
        OFFICER_ID,
        Column("channel_id", STRING, "Cooperation channel, if any"),
        Column("region_code", STRING, "Borrower's region"),
        Column("repayment_method", STRING, "EQUAL_INSTALLMENT, EQUAL_PRINCIPAL, BULLET, INTEREST_ONLY", nullable=False),
        Column("payment_mode", STRING, "ENTRUSTED or AUTONOMOUS", nullable=False),
        Column("collateral_type", STRING, "MORTGAGE, PLEDGE, GUARANTEE, CREDIT", nullable=False),
        Column("disbursement_date", DATE, "Disbursement date", nullable=False),
        Column("maturity_date", DATE, "Contract maturity date", nullable=False),
        Column("principal", MONEY, "Contract principal", nullable=False),
        Column("outstanding_principal", MONEY, "Principal not yet repaid (balance)", nullable=False),
        Column("overdue_principal", MONEY, "Principal of instalments due before the date and not paid", nullable=False),
        Column("overdue_interest", MONEY, "Interest of instalments due before the date and not paid", nullable=False),
        Column("overdue_installments", INT, "Instalments due before the date and not covered", nullable=False),
        Column("dpd", INT, "Days past due: date minus due date of the oldest uncovered instalment", nullable=False),
        Column("bucket", STRING, "Delinquency bucket M0, M1 .. M6, M7+", nullable=False),
        Column("max_dpd_ever", INT, "Highest DPD the loan reached on any day up to the date", nullable=False),
        Column("mob", INT, "Months on book: whole months since disbursement", nullable=False),
        Column("first_payment_default", BOOL, "First instalment went past the configured FPD days", nullable=False),
        Column("risk_class", STRING, "Five-category class (五級分類)", nullable=False),
        Column("risk_grade", STRING, "Twelve-level internal grade", nullable=False),
        Column("is_npl", BOOL, "SUBSTANDARD, DOUBTFUL or LOSS (不良)", nullable=False),
        Column("rule_class", STRING, "Class from the rules alone, before a manual override", nullable=False),
        Column("risk_reasons", STRINGS, "Codes of every rule that fired (see docs/rules.md)", nullable=False),
        Column("override_id", STRING, "Manual override in force, if any"),
        Column("previous_risk_class", STRING, "Class in the previous successful run, if the loan was in it"),
    ),
)

CLASSIFICATION_HISTORY = Table(
    name="classification_history",
    comment=(
        "Every change of risk class: one row per loan whose class on the date differs from the "
        "previous successful run (from_class null: first classification)."
    ),
    key=("as_of_date", "loan_id"),
    partition_by=("as_of_date",),
    sort_by=("loan_id",),
    columns=(
        AS_OF,
        Column("loan_id", STRING, "Loan", nullable=False),
        Column("previous_as_of_date", DATE, "Business date of the run compared with"),
        Column("from_class", STRING, "Class before"),
        Column("to_class", STRING, "Class after", nullable=False),
        Column("from_grade", STRING, "Grade before"),
        Column("to_grade", STRING, "Grade after", nullable=False),
        Column("direction", STRING, "DOWNGRADE, UPGRADE or NEW", nullable=False),
        Column("risk_reasons", STRINGS, "Rules that fired on the date", nullable=False),
        Column("branch_id", STRING, "Managing branch", nullable=False),
        Column("branch_path", STRINGS, "Branch ids from head office down", nullable=False),
        Column("outstanding_principal", MONEY, "Balance on the date", nullable=False),
    ),
)

QUARANTINE = Table(
    name="quarantine",
    comment=("Landing rows refused by validation, with the reason. Personal data in raw_record is masked."),
    key=("as_of_date", "source_table", "row_hash"),
    partition_by=("as_of_date",),
    columns=(
        AS_OF,
        Column("run_id", STRING, "Run that refused the row", nullable=False),
        Column("source_table", STRING, "Landing table", nullable=False),
        Column("reason_code", STRING, "Why (see docs/quarantine.md)", nullable=False),
        Column("reason_detail", STRING, "The column or value at fault", nullable=False),
        Column("record_key", STRING, "Business key of the row, as delivered"),
        Column("raw_record", STRING, "The row as delivered (JSON), personal data masked", nullable=False),
        Column("row_hash", STRING, "Hash of the raw row (stable across reruns)", nullable=False),
    ),
)

RUN_LEDGER = Table(
    name="run_ledger",
    comment=(
        "One row per state change of a nightly run (RUNNING, then SUCCEEDED or FAILED). Readers "
        "serve only SUCCEEDED runs, and read each table at the version the run recorded."
    ),
    key=("run_id", "status"),
    columns=(
        Column("run_id", STRING, "Run id", nullable=False),
        AS_OF,
        Column("status", STRING, "RUNNING, SUCCEEDED or FAILED", nullable=False),
        Column("started_at", TIMESTAMP, "Start (UTC)", nullable=False),
        Column("finished_at", TIMESTAMP, "End (UTC), null while running"),
        Column("input_rows", COUNTS, "Rows read per landing table", nullable=False),
        Column("accepted_rows", COUNTS, "Rows accepted per landing table", nullable=False),
        Column("quarantined_rows", COUNTS, "Rows quarantined per landing table", nullable=False),
        Column("output_rows", COUNTS, "Rows written per lake table for the date", nullable=False),
        Column("table_versions", COUNTS, "Delta version of each lake table after the run's write", nullable=False),
        Column("summary", COUNTS, "Stage counts (classes, buckets, tasks...)", nullable=False),
        Column("config_hash", STRING, "SHA-256 of the configuration in force", nullable=False),
        Column("code_version", STRING, "Package version and git commit", nullable=False),
        Column("error", STRING, "Failure message, for FAILED"),
        Column("previous_as_of_date", DATE, "Business date of the run whose state this run built on"),
    ),
)

LAKE_TABLES_CORE: tuple[Table, ...] = (LOAN_SNAPSHOT, CLASSIFICATION_HISTORY, QUARANTINE, RUN_LEDGER)

__all__ = [
    "BUCKETS",
    "CLASSIFICATION_HISTORY",
    "LAKE_TABLES_CORE",
    "LOAN_SNAPSHOT",
    "NPL_CLASSES",
    "QUARANTINE",
    "RISK_CLASSES",
    "RISK_GRADES",
    "RUN_LEDGER",
    "RUN_STATUSES",
]
