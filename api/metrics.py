"""Metrics tables of the nightly batch (schemas/metrics.py): migration and roll rates, vintage
curves, KPI breaches, channel scorecards and the early-warning list.

Grouped rows carry the `branch_path` of their group: a BRANCH caller sees only the groups that lie
wholly inside its subtree (a product row spanning the whole bank is not one of them).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from enum import Enum
from typing import Any

import strawberry

from api.portfolio import GroupBy, RiskClass
from api.rows import from_row, money_or_zero
from schemas.lake import BUCKETS
from schemas.landing import RISK_CLASSES
from schemas.metrics import CHANNEL_SCORECARD as CHANNEL_SCORECARD_TABLE
from schemas.metrics import (
    EARLY_WARNINGS,
    EXIT_STATES,
    KPI_BREACHES,
    MIGRATION_RATES,
    ROLL_RATES,
    VINTAGE,
    state_column,
)

# Table -> the key its rows are sorted by (and keyset cursors name).
ORDER: dict[str, tuple[str, ...]] = {
    MIGRATION_RATES.name: ("period_type", "grouping", "group_key", "from_class"),
    ROLL_RATES.name: ("grouping", "group_key", "from_bucket"),
    VINTAGE.name: ("product_code", "disbursement_month", "mob"),
    KPI_BREACHES.name: ("metric", "grouping", "group_key"),
    CHANNEL_SCORECARD_TABLE.name: ("channel_id",),
    EARLY_WARNINGS.name: ("loan_id", "warning_type", "signal_id"),
}


@strawberry.enum(description="Migration-rate period: since the previous month-, quarter- or year-end.")
class PeriodType(Enum):
    MONTH = "MONTH"
    QUARTER = "QUARTER"
    YEAR = "YEAR"


@strawberry.enum(description="KPI with a configured target.")
class KpiMetric(Enum):
    OVERDUE_RATIO = "OVERDUE_RATIO"
    NPL_RATIO = "NPL_RATIO"
    M1_CURE_RATE = "M1_CURE_RATE"


@strawberry.enum(description="Kind of early warning.")
class WarningType(Enum):
    NEW_SIGNAL = "NEW_SIGNAL"
    DOWNGRADE = "DOWNGRADE"
    FIRST_PAYMENT_DEFAULT = "FIRST_PAYMENT_DEFAULT"


@strawberry.type(description="Where the loans of a row stand at the period end: a class, bucket or exit state.")
class Transition:
    to_state: str
    loan_count: int
    balance: Decimal = strawberry.field(description="Period-start balance of those loans.")


def _transitions(row: dict[str, Any], states: tuple[str, ...]) -> list[Transition]:
    return [
        Transition(
            to_state=state,
            loan_count=int(row.get(f"to_{state_column(state)}_count") or 0),
            balance=money_or_zero(row.get(f"to_{state_column(state)}_balance")),
        )
        for state in states
    ]


@strawberry.type(description="Regulatory migration rate (遷徙率) of one start class in one group (migration_rates).")
class MigrationRate:
    as_of_date: dt.date
    period_type: PeriodType
    period_start_date: dt.date
    is_period_end: bool
    grouping: str
    key: str
    label: str | None
    from_class: str = strawberry.field(description="Start class, or NORMAL_LOANS (NORMAL + SPECIAL_MENTION).")
    loan_count: int
    start_balance: Decimal
    exited_count: int
    exited_balance: Decimal
    repaid_balance: Decimal
    decrease_balance: Decimal
    denominator_balance: Decimal
    moved_down_count: int
    moved_down_balance: Decimal
    moved_down_end_balance: Decimal
    migration_rate: float | None
    transitions: list[Transition]

    @classmethod
    def from_lake(cls, row: dict[str, Any]) -> MigrationRate:
        return from_row(
            cls,
            row,
            key=row["group_key"],
            label=row["group_label"],
            transitions=_transitions(row, (*RISK_CLASSES, *EXIT_STATES)),
        )


@strawberry.type(description="Roll rate of one delinquency bucket since the previous month-end (roll_rates).")
class RollRate:
    as_of_date: dt.date
    period_start_date: dt.date
    is_period_end: bool
    grouping: str
    key: str
    label: str | None
    from_bucket: str
    from_count: int
    from_balance: Decimal
    transitions: list[Transition]
    cure_balance: Decimal
    cure_rate: float | None = strawberry.field(description="On the M1 row: the M1 conversion rate (M1轉化率).")
    roll_forward_balance: Decimal
    roll_forward_rate: float | None

    @classmethod
    def from_lake(cls, row: dict[str, Any]) -> RollRate:
        return from_row(
            cls,
            row,
            key=row["group_key"],
            label=row["group_label"],
            transitions=_transitions(row, (*BUCKETS, *EXIT_STATES)),
        )


@strawberry.type(description="One point of a vintage curve: cohort (product, disbursement month) at a MOB.")
class VintagePoint:
    as_of_date: dt.date
    product_code: str
    product_name: str | None
    disbursement_month: dt.date
    mob: int
    loan_count: int
    disbursed_amount: Decimal
    ever_dpd30_count: int
    ever_dpd30_amount: Decimal
    ever_dpd30_rate: float | None
    ever_dpd90_count: int
    ever_dpd90_amount: Decimal
    ever_dpd90_rate: float | None
    is_complete: bool

    @classmethod
    def from_lake(cls, row: dict[str, Any]) -> VintagePoint:
        return from_row(cls, row)


@strawberry.type(description="A group breaching a configured KPI target (kpi_breaches).")
class KpiBreach:
    as_of_date: dt.date
    metric: KpiMetric
    grouping: str
    key: str
    label: str | None
    branch_id: str | None
    product_code: str | None
    tier1_branch_id: str | None
    value: float
    target: float
    comparison: str = strawberry.field(description="AT_MOST (ratios) or AT_LEAST (cure rate).")
    gap: float
    base_balance: Decimal
    period_start_date: dt.date | None
    target_tier1_branch_id: str | None

    @classmethod
    def from_lake(cls, row: dict[str, Any]) -> KpiBreach:
        return from_row(cls, row, key=row["group_key"], label=row["group_label"])


@strawberry.type(description="A cooperation channel's score and rating (channel_scorecard).")
class ChannelScore:
    as_of_date: dt.date
    month_start: dt.date
    channel_id: str
    channel_name: str | None
    channel_status: str | None
    branch_id: str | None
    manager_officer_id: str | None
    originated_count: int
    originated_amount: Decimal
    loan_count: int
    outstanding_balance: Decimal
    overdue_balance: Decimal
    overdue_ratio: float | None
    npl_balance: Decimal
    npl_ratio: float | None
    fpd_observed_count: int
    fpd_observed_amount: Decimal
    fpd_count: int
    fpd_amount: Decimal
    fpd_rate: float | None
    score: float | None
    rating: str | None
    flagged_for_exit: bool

    @classmethod
    def from_lake(cls, row: dict[str, Any]) -> ChannelScore:
        return from_row(cls, row)


@strawberry.type(description="An early warning raised for a loan since the previous run (early_warnings).")
class EarlyWarning:
    as_of_date: dt.date
    loan_id: str
    warning_type: WarningType
    signal_id: str | None
    detail: str
    severity: str
    event_date: dt.date
    borrower_id: str
    branch_id: str
    officer_id: str
    product_code: str
    channel_id: str | None
    risk_class: RiskClass
    previous_risk_class: RiskClass | None
    dpd: int
    outstanding_principal: Decimal
    previous_as_of_date: dt.date | None

    @classmethod
    def from_lake(cls, row: dict[str, Any]) -> EarlyWarning:
        return from_row(cls, row)


@strawberry.input(description="Restricts the early warnings listed (a branch caller's subtree always applies).")
class EarlyWarningFilter:
    branch_id: str | None = None
    officer_id: str | None = None
    warning_type: WarningType | None = None
    severity: str | None = None


__all__ = [
    "ChannelScore",
    "EarlyWarning",
    "EarlyWarningFilter",
    "GroupBy",
    "KpiBreach",
    "KpiMetric",
    "MigrationRate",
    "PeriodType",
    "RollRate",
    "VintagePoint",
]
