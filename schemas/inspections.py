"""Lake tables of the inspections stage (貸後檢查): the nightly task list and the settled-loans list.

`inspection_tasks` holds, for each business date, every post-loan check the rules require that is
open, overdue, or done recently (docs/inspections.md): the customer manager's worklist and the
compliance view of headquarters. `settled_loans` is the monthly list of loans repaid in full
(結清名單, seed part 1 art. 44(2)), with the collateral-release task of each.
"""

from __future__ import annotations

from schemas.base import BOOL, DATE, INT, MONEY, STRING, STRINGS, Column, Table
from schemas.lake import AS_OF, BORROWER_ID, BRANCH_ID, BRANCH_PATH, LOAN_ID, OFFICER_ID, PRODUCT_CODE
from schemas.landing import COLLATERAL_TYPES, OFFICER_ROLES

# Task types, in the order docs/inspections.md lists them. Staff record completions with these
# names (landing completed_inspections.task_type).
FIRST_CALLBACK = "FIRST_CALLBACK"
MONTHLY_SAMPLE = "MONTHLY_SAMPLE"
PURPOSE_CHECK = "PURPOSE_CHECK"
PERIODIC_CHECK = "PERIODIC_CHECK"
LOW_RISK_CHECK = "LOW_RISK_CHECK"
RISK_EXIT_VISIT = "RISK_EXIT_VISIT"
SIGNAL_VERIFICATION = "SIGNAL_VERIFICATION"
MATURITY_NOTICE = "MATURITY_NOTICE"
COLLATERAL_RELEASE = "COLLATERAL_RELEASE"
CHANNEL_CHECK = "CHANNEL_CHECK"

TASK_TYPES: tuple[str, ...] = (
    FIRST_CALLBACK,
    MONTHLY_SAMPLE,
    PURPOSE_CHECK,
    PERIODIC_CHECK,
    LOW_RISK_CHECK,
    RISK_EXIT_VISIT,
    SIGNAL_VERIFICATION,
    MATURITY_NOTICE,
    COLLATERAL_RELEASE,
    CHANNEL_CHECK,
)
TASK_STATUSES: tuple[str, ...] = ("OPEN", "DONE", "OVERDUE")


INSPECTION_TASKS = Table(
    name="inspection_tasks",
    comment=(
        "Post-loan checks (貸後檢查) the rules require, one row per obligation: every task that is "
        "open or overdue on the business date, and those done recently (kept until the end of the "
        "month after completion, and at least until their due date). Status is reconciled against "
        "the completed inspections staff recorded. See docs/inspections.md."
    ),
    key=("as_of_date", "task_id"),
    partition_by=("as_of_date",),
    columns=(
        AS_OF,
        Column(
            "task_id",
            STRING,
            "Stable id of the obligation: SHA-256 of task_type|subject|obligation_key (same on every run)",
            nullable=False,
        ),
        Column("task_type", STRING, "Kind of check (docs/inspections.md)", nullable=False, allowed=TASK_TYPES),
        Column("loan_id", STRING, "Loan to check (null for channel checks)"),
        Column("channel_id", STRING, "Cooperation channel to check (channel checks only)"),
        Column("borrower_id", STRING, "Borrower of the loan (null for channel checks)"),
        Column("product_code", STRING, "Product of the loan (null for channel checks)"),
        Column(
            "obligation_key",
            STRING,
            "What makes the obligation unique beside type and subject: period start (yyyy-MM), sample "
            "month, signal id, maturity or closing date",
            nullable=False,
        ),
        Column("reason", STRING, "Why the task exists: the rule and the facts that triggered it", nullable=False),
        Column(
            "window_start",
            DATE,
            "First date a completion counts for the task (disbursement, period start, signal date...)",
            nullable=False,
        ),
        Column("due_date", DATE, "Date by which the check must be done", nullable=False),
        Column("officer_id", STRING, "Owner: the staff member responsible (null: no risk manager on file)"),
        Column("owner_role", STRING, "Role of the owner", nullable=False, allowed=OFFICER_ROLES),
        Column("branch_id", STRING, "Owning branch: the loan's managing branch, or the channel's", nullable=False),
        Column("tier1_branch_id", STRING, "Tier-1 branch (一級分行) above the owning branch"),
        Column(
            "branch_path",
            STRINGS,
            "Branch ids from head office down to the owning branch (filter by subtree)",
            nullable=False,
        ),
        Column("priority", INT, "1 = most urgent .. 3; an overdue task moves up one level", nullable=False),
        Column("status", STRING, "OPEN, DONE or OVERDUE on the business date", nullable=False, allowed=TASK_STATUSES),
        Column("done_date", DATE, "Completion date of the inspection that closed the task (DONE only)"),
        Column("inspection_id", STRING, "Landing completed_inspections record that closed the task (DONE only)"),
        Column(
            "days_overdue",
            INT,
            "Days past the due date: business date minus due date when OVERDUE, completion minus due "
            "date when DONE late, else 0",
            nullable=False,
            non_negative=True,
        ),
    ),
    notes=(
        "Rebuilt in full each night from the landing tables and the snapshot: it does not depend "
        "on the previous night's rows.",
    ),
)

SETTLED_LOANS = Table(
    name="settled_loans",
    comment=(
        "Monthly list of loans repaid in full (結清名單, seed part 1 art. 44(2)): loans settled in the "
        "current month up to the business date and in the previous month(s) configured, with the "
        "collateral-release task of each secured loan."
    ),
    key=("as_of_date", "loan_id"),
    partition_by=("as_of_date",),
    columns=(
        AS_OF,
        Column(
            "list_month", DATE, "First day of the month the loan settled in (the list it belongs to)", nullable=False
        ),
        LOAN_ID,
        BORROWER_ID,
        PRODUCT_CODE,
        BRANCH_ID,
        Column("tier1_branch_id", STRING, "Tier-1 branch above the managing branch"),
        BRANCH_PATH,
        OFFICER_ID,
        Column("principal", MONEY, "Contract principal", nullable=False, non_negative=True),
        Column("disbursement_date", DATE, "Disbursement date", nullable=False),
        Column("maturity_date", DATE, "Contract maturity date", nullable=False),
        Column("closed_date", DATE, "Date the loan was repaid in full", nullable=False),
        Column("collateral_type", STRING, "Main security", nullable=False, allowed=COLLATERAL_TYPES),
        Column("collateral_count", INT, "Collateral items on file for the loan", nullable=False, non_negative=True),
        Column(
            "release_required",
            BOOL,
            "Secured by mortgage or pledge: the collateral must be released (抵押權證出庫, 注銷抵押登記)",
            nullable=False,
        ),
        Column("release_task_id", STRING, "The COLLATERAL_RELEASE task in inspection_tasks, if required"),
        Column("release_due_date", DATE, "Due date of the release task"),
        Column("release_status", STRING, "Status of the release task", allowed=TASK_STATUSES),
        Column("release_done_date", DATE, "Date the release was recorded done"),
    ),
)

INSPECTION_TABLES: tuple[Table, ...] = (INSPECTION_TASKS, SETTLED_LOANS)

__all__ = [
    "CHANNEL_CHECK",
    "COLLATERAL_RELEASE",
    "FIRST_CALLBACK",
    "INSPECTION_TABLES",
    "INSPECTION_TASKS",
    "LOW_RISK_CHECK",
    "MATURITY_NOTICE",
    "MONTHLY_SAMPLE",
    "PERIODIC_CHECK",
    "PURPOSE_CHECK",
    "RISK_EXIT_VISIT",
    "SETTLED_LOANS",
    "SIGNAL_VERIFICATION",
    "TASK_STATUSES",
    "TASK_TYPES",
]
