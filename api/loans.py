"""Loans: the loan on a business date, its borrower (masked), its history and class changes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import anyio
import numpy as np
import pyarrow as pa
import strawberry

from api.context import Context
from api.errors import TimeBudgetExceeded
from api.fields import resolver
from api.lake import DateData, LoanDetails, Run
from api.portfolio import RiskClass
from api.relay import Connection, paginate
from api.store import LoanFilterValues
from jobs.masking import mask_value
from schemas.base import Table
from schemas.lake import CLASSIFICATION_HISTORY, LOAN_SNAPSHOT

LOAN_CURSOR = "loans"


@strawberry.input(description="Restricts the loans listed. A branch caller's own subtree always applies as well.")
class LoanFilter:
    branch_id: str | None = strawberry.field(default=None, description="Only loans in this branch's subtree.")
    product_code: str | None = None
    officer_id: str | None = None
    channel_id: str | None = None
    risk_class: RiskClass | None = None
    bucket: str | None = strawberry.field(default=None, description="Delinquency bucket: M0, M1 .. M7+.")
    min_dpd: int | None = None
    max_dpd: int | None = None

    def values(self) -> LoanFilterValues:
        return LoanFilterValues(
            branch_id=self.branch_id,
            product_code=self.product_code,
            officer_id=self.officer_id,
            channel_id=self.channel_id,
            risk_class=self.risk_class.value if self.risk_class is not None else None,
            bucket=self.bucket,
            min_dpd=self.min_dpd,
            max_dpd=self.max_dpd,
        )


@strawberry.type(
    description="The borrower. Name, ID number and phone are masked unless the token allows personal data."
)
class Borrower:
    borrower_id: strawberry.ID
    name: str | None
    id_number: str | None
    phone: str | None
    region_code: str | None
    masked: bool = strawberry.field(description="True when the personal data above is masked.")

    @classmethod
    def from_row(cls, row: dict[str, Any], pii: bool) -> Borrower:
        def shown(field: str) -> str | None:
            value = row.get(field)
            return value if pii else mask_value(field, value)

        return cls(
            borrower_id=strawberry.ID(row["borrower_id"]),
            name=shown("name"),
            id_number=shown("id_number"),
            phone=shown("phone"),
            region_code=row.get("region_code"),
            masked=not pii,
        )


@strawberry.type(description="The loan's state on one business date.")
class LoanDay:
    as_of_date: dt.date
    run_id: str
    dpd: int
    bucket: str
    risk_class: RiskClass
    risk_grade: str
    outstanding_principal: Decimal
    branch_id: str


@strawberry.type(description="A change of risk class recorded by a nightly run (classification_history).")
class ClassificationChange:
    as_of_date: dt.date
    previous_as_of_date: dt.date | None
    from_class: RiskClass | None
    to_class: RiskClass
    from_grade: str | None
    to_grade: str
    direction: str = strawberry.field(description="DOWNGRADE, UPGRADE or NEW.")
    risk_reasons: list[str]
    outstanding_principal: Decimal


@strawberry.type(description="A loan on the book on a business date (loan_snapshot).")
class Loan:
    as_of_date: dt.date
    loan_id: strawberry.ID
    branch_id: str
    branch_path: list[str]
    tier1_branch_id: str | None
    tier2_branch_id: str | None
    product_code: str
    officer_id: str
    channel_id: str | None
    region_code: str | None
    repayment_method: str
    payment_mode: str
    collateral_type: str
    disbursement_date: dt.date
    maturity_date: dt.date
    principal: Decimal
    outstanding_principal: Decimal
    overdue_principal: Decimal
    overdue_interest: Decimal
    overdue_installments: int
    dpd: int
    bucket: str
    max_dpd_ever: int
    mob: int
    first_payment_default: bool
    risk_class: RiskClass
    risk_grade: str
    is_npl: bool
    rule_class: RiskClass = strawberry.field(description="Class from the rules alone, before a manual override.")
    risk_reasons: list[str] = strawberry.field(description="Codes of every rule that fired (docs/rules.md).")
    override_id: str | None
    previous_risk_class: RiskClass | None
    borrower: Borrower | None = strawberry.field(
        description="The borrower (personal data masked unless the token allows it)."
    )

    @classmethod
    def from_row(cls, row: dict[str, Any], borrower: Borrower | None) -> Loan:
        previous = row.get("previous_risk_class")
        return cls(
            as_of_date=row["as_of_date"],
            loan_id=strawberry.ID(row["loan_id"]),
            branch_id=row["branch_id"],
            branch_path=list(row["branch_path"] or []),
            tier1_branch_id=row["tier1_branch_id"],
            tier2_branch_id=row["tier2_branch_id"],
            product_code=row["product_code"],
            officer_id=row["officer_id"],
            channel_id=row["channel_id"],
            region_code=row["region_code"],
            repayment_method=row["repayment_method"],
            payment_mode=row["payment_mode"],
            collateral_type=row["collateral_type"],
            disbursement_date=row["disbursement_date"],
            maturity_date=row["maturity_date"],
            principal=row["principal"],
            outstanding_principal=row["outstanding_principal"],
            overdue_principal=row["overdue_principal"],
            overdue_interest=row["overdue_interest"],
            overdue_installments=row["overdue_installments"],
            dpd=row["dpd"],
            bucket=row["bucket"],
            max_dpd_ever=row["max_dpd_ever"],
            mob=row["mob"],
            first_payment_default=row["first_payment_default"],
            risk_class=RiskClass(row["risk_class"]),
            risk_grade=row["risk_grade"],
            is_npl=row["is_npl"],
            rule_class=RiskClass(row["rule_class"]),
            risk_reasons=list(row["risk_reasons"] or []),
            override_id=row["override_id"],
            previous_risk_class=RiskClass(previous) if previous else None,
            borrower=borrower,
        )

    @resolver("The loan on every business date still in the lake, oldest first.")
    async def history(self, info: strawberry.Info[Context, None]) -> list[LoanDay]:
        ctx = info.context
        days: list[LoanDay] = []
        for run in (ctx.catalog.served[d] for d in ctx.catalog.dates):
            ctx.check_time()
            row = await loan_day(ctx, run, str(self.loan_id))
            if row is not None:
                days.append(
                    LoanDay(
                        as_of_date=run.as_of_date,
                        run_id=run.run_id,
                        dpd=row["dpd"],
                        bucket=row["bucket"],
                        risk_class=RiskClass(row["risk_class"]),
                        risk_grade=row["risk_grade"],
                        outstanding_principal=row["outstanding_principal"],
                        branch_id=row["branch_id"],
                    )
                )
        return days

    @resolver("Every recorded change of the loan's risk class, oldest first.")
    async def classification_changes(self, info: strawberry.Info[Context, None]) -> list[ClassificationChange]:
        ctx = info.context
        changes: list[ClassificationChange] = []
        for run in (ctx.catalog.served[d] for d in ctx.catalog.dates):
            ctx.check_time()
            for row in await loan_changes(ctx, run, str(self.loan_id)):
                if not visible(row.get("branch_path"), ctx.caller.scope):
                    continue
                changes.append(
                    ClassificationChange(
                        as_of_date=row["as_of_date"],
                        previous_as_of_date=row["previous_as_of_date"],
                        from_class=RiskClass(row["from_class"]) if row["from_class"] else None,
                        to_class=RiskClass(row["to_class"]),
                        from_grade=row["from_grade"],
                        to_grade=row["to_grade"],
                        direction=row["direction"],
                        risk_reasons=list(row["risk_reasons"] or []),
                        outstanding_principal=row["outstanding_principal"],
                    )
                )
        return changes


def visible(path: Sequence[str] | None, scope: str | None) -> bool:
    return scope is None or (path is not None and scope in path)


async def scan_loan(ctx: Context, contract: Table, run: Run, loan_id: str) -> pa.Table | None:
    """A per-loan scan in a worker thread, given up (never started) once the request is out of time."""
    try:
        return await anyio.to_thread.run_sync(ctx.reader.scan_loan, contract, run, loan_id, ctx.deadline)
    except TimeoutError:
        budget = ctx.settings.limits.time_budget_ms
        raise TimeBudgetExceeded(f"the request used up its time budget of {budget} ms") from None


def details(ctx: Context, run: Run) -> LoanDetails | None:
    """The run's LoanDetails if they are in memory (never waits; starts their load if needed)."""
    future = ctx.reader.loan_details(run)
    if future.done() and future.exception() is None:
        return future.result()
    return None


async def loan_day(ctx: Context, run: Run, loan_id: str) -> dict[str, Any] | None:
    """The loan's history columns on the run's date if the caller may see it: from the date's
    LoanDetails, or a predicate scan of that version until they are loaded."""
    loaded = details(ctx, run)
    if loaded is not None:
        found = loaded.day(loan_id)
    else:
        rows = await scan_loan(ctx, LOAN_SNAPSHOT, run, loan_id)
        found = rows.slice(0, 1).to_pylist()[0] if rows is not None and rows.num_rows else None
    return found if found is not None and visible(found.get("branch_path"), ctx.caller.scope) else None


async def loan_changes(ctx: Context, run: Run, loan_id: str) -> list[dict[str, Any]]:
    """The loan's class change recorded on the run's date (none or one row, before the caller's
    scope is applied): from the date's LoanDetails, or a predicate scan until they are loaded."""
    loaded = details(ctx, run)
    if loaded is not None:
        return loaded.changed(loan_id)
    rows = await scan_loan(ctx, CLASSIFICATION_HISTORY, run, loan_id)
    return [] if rows is None else rows.to_pylist()


def loan_connection(
    ctx: Context, data: DateData, f: LoanFilter | None, first: int | None, after: str | None
) -> Connection[Loan]:
    book = data.loans
    values = f.values() if f is not None else LoanFilterValues()
    if values.min_dpd is not None and values.max_dpd is not None and values.min_dpd > values.max_dpd:
        return paginate(
            ctx, LOAN_CURSOR, book.keys, book.n, np.zeros(book.n, dtype=np.bool_), first, after, lambda rows: []
        )
    mask = book.mask(ctx.caller.scope, values)
    ctx.check_time()

    return paginate(ctx, LOAN_CURSOR, book.keys, book.n, mask, first, after, lambda rows: loans_at(ctx, data, rows))


def loans_at(ctx: Context, data: DateData, positions: Sequence[int]) -> list[Loan]:
    """Loan nodes at keyset positions, their borrowers taken in the same batch."""
    if not positions:
        return []
    people = data.borrower_rows(positions)
    pii = ctx.caller.pii
    return [
        Loan.from_row(row, None if person is None else Borrower.from_row(person, pii))
        for row, person in zip(data.loans.rows(positions), people, strict=True)
    ]


def loan_on_date(ctx: Context, data: DateData, loan_id: str) -> Loan | None:
    book = data.loans
    i = book.keys.find(loan_id)
    if i is None or not book.visible(i, ctx.caller.scope):
        return None
    return loans_at(ctx, data, [i])[0]
