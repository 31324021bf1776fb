"""Settings of the inspections stage (conf/inspections.yaml, docs/inspections.md).

Scalar fields (numbers, ratios, flags, the holiday roll) may be overridden per tier-1 branch and
product (`overrides` in conf/postloan.yaml, as `inspections.<name>`); the stage reads them per loan
as `param("inspections", name)`. Tuples and mappings apply to the whole bank.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

HolidayRoll = Literal["PREVIOUS", "NEXT"]

DEFAULT_PRIORITIES: Mapping[str, int] = {
    "SIGNAL_VERIFICATION": 1,
    "RISK_EXIT_VISIT": 1,
    "FIRST_CALLBACK": 2,
    "MONTHLY_SAMPLE": 2,
    "MATURITY_NOTICE": 2,
    "COLLATERAL_RELEASE": 2,
    "PURPOSE_CHECK": 3,
    "PERIODIC_CHECK": 3,
    "LOW_RISK_CHECK": 3,
    "CHANNEL_CHECK": 3,
}


@dataclass(frozen=True)
class InspectionsConfig:
    """Frequencies, ratios and lead times of the post-loan checks. Every field has a default."""

    # First call-back (首次回訪), calendar days after disbursement; 100% of new loans.
    callback_days: int = 7
    callback_days_autonomous: int = 3
    # Monthly on-site sample of last month's new loans, per customer manager, ledger due on this day.
    sample_ratio: float = 0.10
    sample_due_day: int = 20
    # Loan-purpose check of autonomous-payment loans: every N months, on this share of them.
    purpose_check_months: int = 3
    purpose_check_ratio: float = 1.0
    # Products (per managing branch, or bank-wide) whose new-loan NPL rate exceeds the ratio:
    # non-instalment loans checked every N months.
    high_npl_ratio: float = 0.01
    high_npl_check_months: int = 6
    npl_rate_lookback_months: int = 36
    npl_rate_by_branch: bool = True
    # Low-credit-risk products: every N months (0 = no fixed frequency), collateral first.
    low_risk_check_months: int = 12
    # Clients on the risk-exit list: on-site visit every N months.
    risk_exit_visit_months: int = 1
    # Major risk signal: on-site verification by the risk manager within N calendar days.
    signal_verification_days: int = 7
    # Maturity notice: N business days before maturity; on the worklist from M days before that.
    maturity_notice_business_days: int = 5
    maturity_notice_open_days: int = 30
    # Collateral release after full repayment, within N calendar days of closing.
    collateral_release_days: int = 7
    # Cooperation channels: on-site check every N months (per tier-1 branch: a channel has no product).
    channel_check_months: int = 3
    # A calendar-anchored due date (the 20th, a period end) on a non-business day moves to the
    # PREVIOUS or the NEXT business day.
    holiday_roll: HolidayRoll = "PREVIOUS"
    # DONE tasks stay listed until the end of the N-th month after completion (and their due date).
    done_retention_months: int = 1
    # Obligations due before the first day of the month N months back are no longer listed.
    horizon_months: int = 12
    # settled_loans lists the current month and the N-1 months before it.
    settled_list_months: int = 2

    # Bank-wide (not overridable).
    instalment_methods: tuple[str, ...] = ("EQUAL_INSTALLMENT", "EQUAL_PRINCIPAL")
    maturity_notice_methods: tuple[str, ...] = ("BULLET", "INTEREST_ONLY")
    # MAJOR signals of these types put the client on the risk-exit list (RISK_EXIT_LIST always does).
    risk_exit_signal_types: tuple[str, ...] = ("FRAUD", "BORROWER_MISSING", "OFF_PURPOSE_USE")
    # Collateral types whose release is a task when the loan is repaid.
    released_collateral_types: tuple[str, ...] = ("MORTGAGE", "PLEDGE")
    priorities: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_PRIORITIES))

    def __post_init__(self) -> None:
        for name in ("sample_ratio", "purpose_check_ratio", "high_npl_ratio"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"inspections.{name}: must be between 0 and 1, got {value}")
        if not 1 <= self.sample_due_day <= 31:
            raise ValueError(f"inspections.sample_due_day: must be a day of the month, got {self.sample_due_day}")
        if self.settled_list_months < 1:
            raise ValueError("inspections.settled_list_months: must be at least 1")
        unknown = sorted(set(self.priorities) - set(DEFAULT_PRIORITIES))
        if unknown:
            raise ValueError(f"inspections.priorities: unknown task type(s) {', '.join(unknown)}")
