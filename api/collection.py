"""Collections (schemas/collections.py): the night's cases, agencies, scorecards and placements."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from enum import Enum
from typing import Any

import strawberry

from api.rows import from_row
from schemas.collections import AGENCY_PLACEMENTS, AGENCY_SCORECARD, COLLECTION_CASES

ORDER: dict[str, tuple[str, ...]] = {
    COLLECTION_CASES.name: ("loan_id",),
    AGENCY_PLACEMENTS.name: ("loan_id", "placement_id"),
    AGENCY_SCORECARD.name: ("agency_id", "month"),
}


@strawberry.enum(description="How a case is being collected.")
class CollectionMode(Enum):
    REMINDER = "REMINDER"
    IN_HOUSE = "IN_HOUSE"
    OUTSOURCED = "OUTSOURCED"
    LEGAL = "LEGAL"


@strawberry.enum(description="State of a placement with an agency.")
class PlacementStatus(Enum):
    ACTIVE = "ACTIVE"
    RECALLED = "RECALLED"
    EXPIRED = "EXPIRED"
    UNPLACED = "UNPLACED"


@strawberry.type(description="An action to take today, already within the conduct limits.")
class CollectionAction:
    action_type: str | None
    contact_type: str | None
    purpose: str | None
    attempts: int | None
    window_start: str | None
    window_end: str | None
    note: str | None


@strawberry.type(description="A loan in collection on the business date (collection_cases).")
class CollectionCase:
    as_of_date: dt.date
    loan_id: str
    borrower_id: str
    branch_id: str
    tier1_branch_id: str | None
    product_code: str
    officer_id: str
    region_code: str | None
    strategy_profile: str
    dpd: int
    bucket: str
    risk_class: str
    overdue_amount: Decimal
    outstanding_principal: Decimal
    reminder_due_date: dt.date | None
    stage: str
    mode: CollectionMode
    actions: list[CollectionAction]
    reasons: list[str]
    owner_type: str
    owner_id: str | None
    agency_id: str | None
    placement_id: str | None
    lost_contact: bool
    unreachable_days: int
    failed_visits: int
    conduct_breaches: int

    @classmethod
    def from_lake(cls, row: dict[str, Any]) -> CollectionCase:
        actions = [from_row(CollectionAction, a) for a in row.get("actions") or []]
        return from_row(cls, row, actions=actions)


@strawberry.input(description="Restricts the cases listed (a branch caller's subtree always applies).")
class CollectionCaseFilter:
    branch_id: str | None = None
    officer_id: str | None = None
    mode: CollectionMode | None = None
    stage: str | None = None
    agency_id: str | None = None
    owner_type: str | None = None
    min_dpd: int | None = None
    max_dpd: int | None = None


@strawberry.type(description="A placement of a case with an agency (agency_placements).")
class Placement:
    as_of_date: dt.date
    placement_id: str | None
    loan_id: str
    borrower_id: str
    branch_id: str
    tier1_branch_id: str | None
    product_code: str
    region_code: str | None
    agency_id: str | None
    status: PlacementStatus
    placed_date: dt.date | None
    expires_date: dt.date | None
    ended_date: dt.date | None
    recall_reason: str | None
    unplaced_reason: str | None
    amount_at_placement: Decimal
    dpd_at_placement: int
    fee_band: str
    challenger: bool | None
    excluded_agencies: list[str]
    recovered_amount: Decimal

    @classmethod
    def from_lake(cls, row: dict[str, Any]) -> Placement:
        return from_row(cls, row)


@strawberry.type(description="An agency's month: placements, recoveries, fees and rank (agency_scorecard).")
class AgencyMonth:
    as_of_date: dt.date
    month: dt.date
    period_end: dt.date
    settled: bool
    agency_status: str | None
    challenger: bool
    window_recovery_rate: float | None
    cases_placed: int
    amount_placed: Decimal
    cases_held: int
    amount_held: Decimal
    recovered_amount: Decimal
    recovery_rate: float | None
    cured_cases: int
    cure_rate: float | None
    coverage_rate: float | None
    fee_amount: Decimal
    rank: int | None
    flagged_for_elimination: bool
    elimination_reason: str | None

    @classmethod
    def from_lake(cls, row: dict[str, Any]) -> AgencyMonth:
        return from_row(cls, row)
