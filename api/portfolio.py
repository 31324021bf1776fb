"""Portfolio rows: loans, balance, overdue and NPL figures and the class mix, per group.

Served from `portfolio_metrics` when the run wrote it (whole bank, no filter), otherwise from the
loan book's pre-aggregated figures (`api/store.py`), which also serve every scoped or filtered
question. Either way a BRANCH caller's figures count only loans in its own subtree.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from enum import Enum
from typing import Any

import numpy as np
import strawberry

from api.frames import decimal_cents, money, ratio
from api.lake import DateData, TableData
from api.store import NONE_KEY, Block, LoanFilterValues
from schemas.lake import NPL_CLASSES, RISK_CLASSES


@strawberry.enum(description="Dimension a portfolio (or metrics) row is grouped by.")
class GroupBy(Enum):
    HQ = "HQ"
    TIER1_BRANCH = "TIER1_BRANCH"
    TIER2_BRANCH = "TIER2_BRANCH"
    BRANCH = "BRANCH"
    PRODUCT = "PRODUCT"
    CHANNEL = "CHANNEL"
    OFFICER = "OFFICER"


@strawberry.enum(description="Five-category risk classification (五級分類).")
class RiskClass(Enum):
    NORMAL = "NORMAL"
    SPECIAL_MENTION = "SPECIAL_MENTION"
    SUBSTANDARD = "SUBSTANDARD"
    DOUBTFUL = "DOUBTFUL"
    LOSS = "LOSS"


@strawberry.input(description="Restricts the loans counted. A branch caller's own subtree always applies as well.")
class PortfolioFilter:
    branch_id: str | None = strawberry.field(default=None, description="Only loans in this branch's subtree.")
    product_code: str | None = None
    channel_id: str | None = None
    officer_id: str | None = None

    def values(self) -> LoanFilterValues:
        return LoanFilterValues(
            branch_id=self.branch_id,
            product_code=self.product_code,
            channel_id=self.channel_id,
            officer_id=self.officer_id,
        )


@strawberry.type(description="Loans of one risk class within a row.")
class ClassFigure:
    risk_class: RiskClass
    loan_count: int
    balance: Decimal


@strawberry.type(description="Loans of one delinquency bucket within a row.")
class BucketFigure:
    bucket: str
    loan_count: int
    balance: Decimal


@strawberry.type(description="Portfolio figures of one group. Money is outstanding principal, in yuan.")
class PortfolioRow:
    as_of_date: dt.date
    key: str = strawberry.field(description="Group value: branch id, product code, channel id, officer id; HQ; NONE.")
    label: str = strawberry.field(description="Name of the group where the lake knows it, else the key.")
    loan_count: int
    balance: Decimal
    overdue_count: int
    overdue_balance: Decimal = strawberry.field(description="Outstanding principal of loans with dpd > 0.")
    overdue_ratio: float | None = strawberry.field(description="overdueBalance / balance; null when balance is 0.")
    npl_count: int
    npl_balance: Decimal = strawberry.field(description="Outstanding principal of SUBSTANDARD, DOUBTFUL, LOSS loans.")
    npl_ratio: float | None = strawberry.field(description="nplBalance / balance; null when balance is 0.")
    by_class: list[ClassFigure]
    by_bucket: list[BucketFigure]


def rows_from_block(
    block: Block, as_of: dt.date, classes: tuple[str, ...], buckets: tuple[str, ...], labels: dict[str, str]
) -> list[PortfolioRow]:
    rows: list[PortfolioRow] = []
    for i, key in enumerate(block.keys):
        balance = int(block.balance[i])
        rows.append(
            PortfolioRow(
                as_of_date=as_of,
                key=key,
                label=labels.get(key, key),
                loan_count=int(block.loan_count[i]),
                balance=money(balance),
                overdue_count=int(block.overdue_count[i]),
                overdue_balance=money(block.overdue_balance[i]),
                overdue_ratio=ratio(int(block.overdue_balance[i]), balance),
                npl_count=int(block.npl_count[i]),
                npl_balance=money(block.npl_balance[i]),
                npl_ratio=ratio(int(block.npl_balance[i]), balance),
                by_class=[
                    ClassFigure(
                        risk_class=RiskClass(c),
                        loan_count=int(block.class_count[i, j]),
                        balance=money(block.class_balance[i, j]),
                    )
                    for j, c in enumerate(classes)
                ],
                by_bucket=[
                    BucketFigure(
                        bucket=b, loan_count=int(block.bucket_count[i, j]), balance=money(block.bucket_balance[i, j])
                    )
                    for j, b in enumerate(buckets)
                ],
            )
        )
    rows.sort(key=lambda r: (r.key == NONE_KEY, r.key))
    return rows


def rows_from_metrics(
    metrics: TableData, grouping: str, as_of: dt.date, buckets: tuple[str, ...]
) -> list[PortfolioRow]:
    """portfolio_metrics rows of a grouping (whole bank), as written by the nightly batch."""
    codes = metrics.encoded("grouping")
    idx = np.flatnonzero(codes.equals(grouping))
    rows: list[PortfolioRow] = []
    for r in metrics.rows.take(idx).to_pylist():
        balance = decimal_cents(r["outstanding_balance"])

        def figure(stem: str, r: dict[str, Any] = r) -> tuple[int, Decimal]:
            return int(r.get(f"{stem}_count") or 0), r.get(f"{stem}_balance") or Decimal("0.00")

        rows.append(
            PortfolioRow(
                as_of_date=as_of,
                key=r["group_key"],
                label=r["group_label"] or r["group_key"],
                loan_count=int(r["loan_count"]),
                balance=money(balance),
                overdue_count=int(r["overdue_count"]),
                overdue_balance=money(decimal_cents(r["overdue_balance"])),
                overdue_ratio=None if r["overdue_ratio"] is None else float(r["overdue_ratio"]),
                npl_count=int(r["npl_count"]),
                npl_balance=money(decimal_cents(r["npl_balance"])),
                npl_ratio=None if r["npl_ratio"] is None else float(r["npl_ratio"]),
                by_class=[
                    ClassFigure(
                        risk_class=RiskClass(c),
                        loan_count=figure(c.lower())[0],
                        balance=money(decimal_cents(figure(c.lower())[1])),
                    )
                    for c in RISK_CLASSES
                ],
                by_bucket=[
                    BucketFigure(
                        bucket=b,
                        loan_count=figure(b.lower().replace("+", "plus"))[0],
                        balance=money(decimal_cents(figure(b.lower().replace("+", "plus"))[1])),
                    )
                    for b in buckets
                ],
            )
        )
    rows.sort(key=lambda r: (r.key == NONE_KEY, r.key))
    return rows


def labels_from_metrics(metrics: TableData | None, grouping: str) -> dict[str, str]:
    if metrics is None or metrics.n == 0:
        return {}
    idx = np.flatnonzero(metrics.encoded("grouping").equals(grouping))
    keys = metrics.rows.column("group_key").take(idx).to_pylist()
    names = metrics.rows.column("group_label").take(idx).to_pylist()
    return {k: v for k, v in zip(keys, names, strict=True) if v}


def portfolio_rows(
    data: DateData, metrics: TableData | None, grouping: str, caller_scope: str | None, f: LoanFilterValues
) -> list[PortfolioRow]:
    book = data.loans
    as_of = data.run.as_of_date
    if metrics is not None and caller_scope is None and f == LoanFilterValues():
        return data.cached(
            ("portfolio_metrics", grouping), lambda: rows_from_metrics(metrics, grouping, as_of, book.buckets)
        )
    block = book.portfolio.block(grouping, caller_scope, f)
    if block is None:
        return []
    labels = data.cached(("labels", grouping), lambda: labels_from_metrics(metrics, grouping))
    key = ("portfolio", grouping, book.effective_scope(caller_scope, f.branch_id), f.beyond_branch and f)
    return data.cached(key, lambda: rows_from_block(block, as_of, book.classes, book.buckets, labels))


__all__ = ["NPL_CLASSES", "GroupBy", "PortfolioFilter", "PortfolioRow", "RiskClass", "portfolio_rows"]
