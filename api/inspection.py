"""Post-loan inspections (schemas/inspections.py): the task list and the settled-loans list."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from enum import Enum
from typing import Any

import strawberry

from api.rows import from_row
from schemas.inspections import INSPECTION_TASKS, SETTLED_LOANS

# Tasks are listed by due date (then id): the worklist order.
ORDER: dict[str, tuple[str, ...]] = {
    INSPECTION_TASKS.name: ("due_date", "task_id"),
    SETTLED_LOANS.name: ("loan_id",),
}


@strawberry.enum(description="Status of an inspection task on the business date.")
class TaskStatus(Enum):
    OPEN = "OPEN"
    DONE = "DONE"
    OVERDUE = "OVERDUE"


@strawberry.type(description="A post-loan check the rules require (inspection_tasks).")
class InspectionTask:
    as_of_date: dt.date
    task_id: strawberry.ID
    task_type: str
    loan_id: str | None
    channel_id: str | None
    borrower_id: str | None
    product_code: str | None
    obligation_key: str
    reason: str
    window_start: dt.date
    due_date: dt.date
    officer_id: str | None
    owner_role: str
    branch_id: str
    tier1_branch_id: str | None
    priority: int
    status: TaskStatus
    done_date: dt.date | None
    inspection_id: str | None
    days_overdue: int

    @classmethod
    def from_lake(cls, row: dict[str, Any]) -> InspectionTask:
        return from_row(cls, row)


@strawberry.input(description="Restricts the tasks listed (a branch caller's subtree always applies).")
class InspectionTaskFilter:
    branch_id: str | None = strawberry.field(default=None, description="Only tasks owned in this branch's subtree.")
    officer_id: str | None = None
    task_type: str | None = None
    status: TaskStatus | None = None
    loan_id: str | None = None
    due_on_or_before: dt.date | None = None


@strawberry.type(description="A loan repaid in full, on the monthly settled-loans list (settled_loans).")
class SettledLoan:
    as_of_date: dt.date
    list_month: dt.date
    loan_id: str
    borrower_id: str
    product_code: str
    branch_id: str
    tier1_branch_id: str | None
    officer_id: str
    principal: Decimal
    disbursement_date: dt.date
    maturity_date: dt.date
    closed_date: dt.date
    collateral_type: str
    collateral_count: int
    release_required: bool
    release_task_id: str | None
    release_due_date: dt.date | None
    release_status: TaskStatus | None
    release_done_date: dt.date | None

    @classmethod
    def from_lake(cls, row: dict[str, Any]) -> SettledLoan:
        return from_row(cls, row)
