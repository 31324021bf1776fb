"""The landing zone contract: what the core/credit system (CMS) delivers each night.

One folder per table under the landing directory, holding Parquet files or UTF-8 CSV files with a
header. Column types below are what each value must parse as; a value that does not parse, a
missing required value, an unknown enum value, a broken reference or text whose bytes are not
UTF-8 (CSV, or Parquet from a writer that does not check its strings) send the row to quarantine.
"""

from __future__ import annotations

from decimal import Decimal

from schemas.base import BOOL, DATE, INT, MONEY, RATE, STRING, TIMESTAMP, Column, Table

# Not a delivered column: the landing reader adds it (CSV: to the rows of a file that is not UTF-8
# throughout; Parquet: to every text table), naming the columns whose bytes are not UTF-8 (ingest
# refuses those rows).
NOT_UTF8 = "_not_utf8"

# No retail amount comes near a trillion yuan (一萬億); a larger one is a broken extract (a unit or
# a scale slipped), refused as AMOUNT_OUT_OF_RANGE. The bound is also what lets the night sum a
# loan's amounts as whole cents in a long (jobs/delinquency.py, `cents`).
MAX_AMOUNT_YUAN = 1_000_000_000_000
MAX_AMOUNT = Decimal(MAX_AMOUNT_YUAN).quantize(Decimal("0.01"))

REPAYMENT_METHODS = ("EQUAL_INSTALLMENT", "EQUAL_PRINCIPAL", "BULLET", "INTEREST_ONLY")
PAYMENT_MODES = ("ENTRUSTED", "AUTONOMOUS")
COLLATERAL_TYPES = ("MORTGAGE", "PLEDGE", "GUARANTEE", "CREDIT")
LOAN_STATUSES = ("ACTIVE", "SETTLED", "WRITTEN_OFF")
BRANCH_LEVELS = ("HQ", "TIER1", "TIER2", "SUB")
AGENCY_STATUSES = ("ACTIVE", "SUSPENDED", "TERMINATED")
RISK_CLASSES = ("NORMAL", "SPECIAL_MENTION", "SUBSTANDARD", "DOUBTFUL", "LOSS")
OFFICER_ROLES = ("CUSTOMER_MANAGER", "RISK_MANAGER", "CHANNEL_MANAGER", "COLLECTOR")
CHANNEL_STATUSES = ("ACTIVE", "SUSPENDED", "EXITED")
# Risk signals from monitoring (風險預警信號). A signal names a loan, or a borrower (all their loans).
SIGNAL_TYPES = (
    "OFF_PURPOSE_USE",  # 挪用: funds used off the agreed purpose
    "REFINANCE_OLD_WITH_NEW",  # 借新還舊
    "LITIGATION",  # 涉訴
    "OTHER_BANK_OVERDUE",  # 他行逾期 (days_overdue says how long)
    "CREDIT_DOWNGRADE",  # 信用等級下降
    "BORROWER_DECEASED",  # 死亡
    "BORROWER_MISSING",  # 失蹤
    "LOST_CAPACITY",  # 喪失還款能力
    "FRAUD",  # 欺詐
    "RISK_EXIT_LIST",  # 列入風險退出名單
    "MATERIAL_CHANGE",  # 重大變化 (re-opens inspections of NPLs in litigation)
)
SIGNAL_SEVERITIES = ("MAJOR", "MINOR")
CONTACT_TYPES = ("BORROWER", "GUARANTOR", "THIRD_PARTY")

LOANS = Table(
    name="loans",
    layer="landing",
    comment="Loan contracts (貸款合同), one row per loan.",
    key=("loan_id",),
    columns=(
        Column("loan_id", STRING, "Loan contract number", nullable=False),
        Column("borrower_id", STRING, "Borrower (customer) id", nullable=False),
        Column("product_code", STRING, "Loan product", nullable=False),
        Column("branch_id", STRING, "Managing branch (經營行)", nullable=False),
        Column("officer_id", STRING, "Customer manager (客戶經理) in charge", nullable=False),
        Column("channel_id", STRING, "Cooperation channel (合作渠道) that originated it, if any"),
        Column("principal", MONEY, "Contract principal disbursed", nullable=False, non_negative=True),
        Column("disbursement_date", DATE, "Disbursement (value) date", nullable=False),
        Column("maturity_date", DATE, "Contract maturity date", nullable=False),
        Column("repayment_method", STRING, "Repayment method", nullable=False, allowed=REPAYMENT_METHODS),
        Column("payment_mode", STRING, "受托支付 or 自主支付", nullable=False, allowed=PAYMENT_MODES),
        Column("annual_rate", RATE, "Contract annual interest rate (0.045 = 4.5%)", nullable=False),
        Column("collateral_type", STRING, "Main security", nullable=False, allowed=COLLATERAL_TYPES),
        Column("restructured_date", DATE, "Date of the latest restructuring (重組), if any"),
        Column("restructure_count", INT, "How many times the loan was restructured (null = 0 or 1)"),
        Column("restructured_from_npl", BOOL, "Whether the loan was non-performing when restructured"),
        Column("status", STRING, "Contract status", nullable=False, allowed=LOAN_STATUSES),
        Column("closed_date", DATE, "Date settled or written off"),
    ),
)

SCHEDULE = Table(
    name="schedule",
    layer="landing",
    comment="Repayment schedules (還款計劃): one row per instalment.",
    key=("loan_id", "installment_no"),
    columns=(
        Column("loan_id", STRING, "Loan", nullable=False),
        Column("installment_no", INT, "Instalment number, 1 = first", nullable=False),
        Column("due_date", DATE, "Due date", nullable=False),
        Column("principal_due", MONEY, "Principal due", nullable=False, non_negative=True),
        Column("interest_due", MONEY, "Interest due", nullable=False, non_negative=True),
    ),
)

REPAYMENTS = Table(
    name="repayments",
    layer="landing",
    comment="Repayment transactions (還款流水); a negative amount reverses an earlier payment.",
    key=("txn_id",),
    columns=(
        Column("txn_id", STRING, "Transaction id", nullable=False),
        Column("loan_id", STRING, "Loan", nullable=False),
        Column("value_date", DATE, "Value date; a reversal takes effect on its own value date", nullable=False),
        Column("amount", MONEY, "Amount paid; negative = reversal", nullable=False),
    ),
)

BORROWERS = Table(
    name="borrowers",
    layer="landing",
    comment="Borrowers, with personal data (masked outside controlled tables).",
    key=("borrower_id",),
    columns=(
        Column("borrower_id", STRING, "Borrower id", nullable=False),
        Column("name", STRING, "Full name", nullable=False, pii=True),
        Column("id_number", STRING, "Resident ID number", nullable=False, pii=True),
        Column("phone", STRING, "Mobile phone", pii=True),
        Column("region_code", STRING, "Region of residence (for agency eligibility)", nullable=False),
    ),
)

BRANCHES = Table(
    name="branches",
    layer="landing",
    comment="Branch hierarchy: 總行 -> 一級分行 -> 二級分行 -> 支行/網點.",
    key=("branch_id",),
    columns=(
        Column("branch_id", STRING, "Branch id", nullable=False),
        Column("parent_id", STRING, "Parent branch; null for head office"),
        Column("level", STRING, "Level in the hierarchy", nullable=False, allowed=BRANCH_LEVELS),
        Column("name", STRING, "Branch name", nullable=False),
        Column("region_code", STRING, "Region the branch serves", nullable=False),
    ),
)

PRODUCTS = Table(
    name="products",
    layer="landing",
    comment="Loan products.",
    key=("product_code",),
    columns=(
        Column("product_code", STRING, "Product code", nullable=False),
        Column("name", STRING, "Product name", nullable=False),
        Column("category", STRING, "Product category (MORTGAGE, CONSUMER, BUSINESS, AUTO...)", nullable=False),
        Column("low_risk", BOOL, "Low-credit-risk product (低信用風險業務)", nullable=False),
        Column("refinance_designed", BOOL, "Designed with a refinancing arrangement (借新還舊 allowed)"),
    ),
)

AGENCIES = Table(
    name="agencies",
    layer="landing",
    comment="Collection agencies (催收機構).",
    key=("agency_id",),
    columns=(
        Column("agency_id", STRING, "Agency id", nullable=False),
        Column("name", STRING, "Agency name", nullable=False),
        Column("region_codes", STRING, "Regions served, comma-separated", nullable=False),
        Column("capacity", INT, "Cases the agency can hold at once", nullable=False, non_negative=True),
        Column("status", STRING, "Contract status", nullable=False, allowed=AGENCY_STATUSES),
    ),
)

OFFICERS = Table(
    name="officers",
    layer="landing",
    optional=True,
    comment="Staff: customer managers, risk managers, channel managers, collectors.",
    key=("officer_id",),
    columns=(
        Column("officer_id", STRING, "Staff id", nullable=False),
        Column("name", STRING, "Staff name", nullable=False),
        Column("branch_id", STRING, "Branch of the officer", nullable=False),
        Column("role", STRING, "Role", nullable=False, allowed=OFFICER_ROLES),
        Column("active", BOOL, "Still in post (離職 = false)", nullable=False),
    ),
)

CHANNELS = Table(
    name="channels",
    layer="landing",
    optional=True,
    comment="Cooperation channels (合作渠道).",
    key=("channel_id",),
    columns=(
        Column("channel_id", STRING, "Channel id", nullable=False),
        Column("name", STRING, "Channel name", nullable=False),
        Column("branch_id", STRING, "Branch that manages the channel", nullable=False),
        Column("manager_officer_id", STRING, "Channel manager (owner of channel checks)", nullable=False),
        Column("status", STRING, "Cooperation status", nullable=False, allowed=CHANNEL_STATUSES),
        Column("onboarded_date", DATE, "Date the channel was admitted", nullable=False),
    ),
)

RISK_SIGNALS = Table(
    name="risk_signals",
    layer="landing",
    optional=True,
    comment="Risk signals from monitoring (風險預警信號), on a loan or on a borrower.",
    key=("signal_id",),
    columns=(
        Column("signal_id", STRING, "Signal id", nullable=False),
        Column("loan_id", STRING, "Loan concerned; null = every loan of the borrower"),
        Column("borrower_id", STRING, "Borrower concerned", nullable=False),
        Column("signal_type", STRING, "Kind of signal", nullable=False, allowed=SIGNAL_TYPES),
        Column(
            "severity", STRING, "MAJOR signals need on-site verification", nullable=False, allowed=SIGNAL_SEVERITIES
        ),
        Column("signal_date", DATE, "Date raised", nullable=False),
        Column("cleared_date", DATE, "Date cleared; null while in force"),
        Column("days_overdue", INT, "OTHER_BANK_OVERDUE: days overdue at the other bank"),
        Column("has_estate", BOOL, "Death / missing / lost capacity: estate or income left to recover from"),
    ),
)

OVERRIDES = Table(
    name="overrides",
    layer="landing",
    optional=True,
    comment="Approved manual classification overrides (人工干預).",
    key=("override_id",),
    columns=(
        Column("override_id", STRING, "Override id", nullable=False),
        Column("loan_id", STRING, "Loan", nullable=False),
        Column("risk_class", STRING, "Class set by the override", nullable=False, allowed=RISK_CLASSES),
        Column("reason", STRING, "Why", nullable=False),
        Column("approver", STRING, "Approver staff id", nullable=False),
        Column("approved_date", DATE, "Effective from", nullable=False),
        Column("expiry_date", DATE, "Last day in force", nullable=False),
    ),
)

COLLATERAL = Table(
    name="collateral",
    layer="landing",
    optional=True,
    comment="Collateral (抵質押物) securing loans.",
    key=("collateral_id",),
    columns=(
        Column("collateral_id", STRING, "Collateral id", nullable=False),
        Column("loan_id", STRING, "Loan secured", nullable=False),
        Column("collateral_type", STRING, "MORTGAGE or PLEDGE", nullable=False, allowed=COLLATERAL_TYPES),
        Column("appraised_value", MONEY, "Appraised value", nullable=False, non_negative=True),
        Column("valuation_date", DATE, "Date of the appraisal", nullable=False),
    ),
)

GUARANTORS = Table(
    name="guarantors",
    layer="landing",
    optional=True,
    comment="Guarantors (保證人), with personal data.",
    key=("guarantor_id",),
    columns=(
        Column("guarantor_id", STRING, "Guarantor id", nullable=False),
        Column("loan_id", STRING, "Loan guaranteed", nullable=False),
        Column("name", STRING, "Full name", nullable=False, pii=True),
        Column("id_number", STRING, "ID number", nullable=False, pii=True),
        Column("phone", STRING, "Phone", pii=True),
    ),
)

COMPLETED_INSPECTIONS = Table(
    name="completed_inspections",
    layer="landing",
    optional=True,
    comment="Post-loan inspections recorded as done by staff (貸後檢查記錄).",
    key=("inspection_id",),
    columns=(
        Column("inspection_id", STRING, "Record id", nullable=False),
        Column("task_id", STRING, "The task it closes, when staff recorded it against one"),
        Column("task_type", STRING, "Kind of check done", nullable=False),
        Column("loan_id", STRING, "Loan checked (null for channel checks)"),
        Column("channel_id", STRING, "Channel checked (channel checks)"),
        Column("completed_date", DATE, "Date done", nullable=False),
        Column("officer_id", STRING, "Who did it", nullable=False),
        Column("outcome", STRING, "NORMAL or RISK_FOUND", nullable=False, allowed=("NORMAL", "RISK_FOUND")),
    ),
)

COLLECTION_ACTIONS = Table(
    name="collection_actions",
    layer="landing",
    optional=True,
    comment="Collection actions recorded by collectors and agencies (催收記錄).",
    key=("action_id",),
    columns=(
        Column("action_id", STRING, "Record id", nullable=False),
        Column("loan_id", STRING, "Loan", nullable=False),
        Column("action_type", STRING, "SMS, PHONE, LETTER, FIELD_VISIT, LEGAL...", nullable=False),
        Column("action_time", TIMESTAMP, "When (local time)", nullable=False),
        Column("contact_type", STRING, "Who was contacted", nullable=False, allowed=CONTACT_TYPES),
        Column("outcome", STRING, "CONTACTED, NO_ANSWER, PROMISE_TO_PAY, VISIT_FAILED, ...", nullable=False),
        Column("agency_id", STRING, "Agency that acted, if outsourced"),
    ),
)

LANDING_TABLES: tuple[Table, ...] = (
    LOANS,
    SCHEDULE,
    REPAYMENTS,
    BORROWERS,
    BRANCHES,
    PRODUCTS,
    AGENCIES,
    OFFICERS,
    CHANNELS,
    RISK_SIGNALS,
    OVERRIDES,
    COLLATERAL,
    GUARANTORS,
    COMPLETED_INSPECTIONS,
    COLLECTION_ACTIONS,
)

# Which landing table each child table's loan_id must exist in (cascade of quarantine).
LOAN_CHILDREN: tuple[Table, ...] = (
    SCHEDULE,
    REPAYMENTS,
    OVERRIDES,
    COLLATERAL,
    GUARANTORS,
    COLLECTION_ACTIONS,
    RISK_SIGNALS,
    COMPLETED_INSPECTIONS,
)
