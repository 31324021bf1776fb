"""Settings of the collections stage (conf/collections.yaml): strategy profiles, conduct limits,
agency allocation, fees and the agency scorecard (DOMAIN.md section 4, docs/collections.md).

Only the three top-level scalars (`strategy_profile`, `reminder_days_before_due`,
`missed_due_call`) may be overridden per tier-1 branch or product: a branch that needs other
numbers gets a profile of its own under `profiles` and selects it. Conduct limits, allocation and
fees are bank-wide on purpose: agencies and their capacities are shared by every branch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

from jobs.config import ConfigError, RiskClass

Mode = Literal["REMINDER", "IN_HOUSE", "OUTSOURCED", "LEGAL"]
OwnerRole = Literal["OFFICER", "COLLECTOR", "RISK_MANAGER", "AGENCY"]
ContactType = Literal["BORROWER", "GUARANTOR", "THIRD_PARTY"]
AmountBasis = Literal["OVERDUE", "OUTSTANDING"]

_WHERE = "collections"


@dataclass(frozen=True)
class ActionSpec:
    """One action of a rule, to each listed contact, within a daily window (hours, local time)."""

    action_type: str
    contacts: tuple[ContactType, ...] = ("BORROWER",)
    attempts_per_day: int = 1
    start_hour: int = 8
    end_hour: int = 22
    note: str = ""


@dataclass(frozen=True)
class CaseRule:
    """A row of a strategy table: the first rule of the profile whose conditions all hold wins.

    Conditions left unset do not restrict. `min_amount` applies to the overdue amount (overdue
    principal + interest) or to the whole debt (outstanding principal + overdue interest).
    """

    stage: str
    mode: Mode = "IN_HOUSE"
    owner: OwnerRole = "OFFICER"
    min_dpd: int = 1
    max_dpd: int | None = None
    min_amount: Decimal | None = None
    amount_basis: AmountBasis = "OVERDUE"
    risk_classes: tuple[RiskClass, ...] = ()
    signal_types: tuple[str, ...] = ()
    lost_contact: bool | None = None
    min_failed_visits: int | None = None
    actions: tuple[ActionSpec, ...] = ()


@dataclass(frozen=True)
class StrategyProfile:
    description: str = ""
    # Days of calls without reaching the borrower after which the borrower is lost contact (失聯).
    lost_contact_days: int = 5
    rules: tuple[CaseRule, ...] = ()


@dataclass(frozen=True)
class ConductLimits:
    """Constraints every generated action is clipped to, whatever a profile asks for."""

    earliest_hour: int = 8
    latest_hour: int = 22
    max_attempts_per_contact_per_day: int = 6
    # Third parties only to reach the borrower: these action types, purpose LOCATE_BORROWER.
    third_party_actions: tuple[str, ...] = ("PHONE",)


@dataclass(frozen=True)
class FeeBand:
    """Commission band by DPD at placement: the band with the highest min_dpd not above it."""

    name: str
    min_dpd: int
    rate: Decimal


@dataclass(frozen=True)
class AllocationConfig:
    placement_days: int = 90
    rotation_lookback_days: int = 180
    performance_window_days: int = 90
    challenger_share: float = 0.2
    # Agencies with fewer placements held in the performance window are challengers.
    challenger_min_cases: int = 30
    # Floor of a champion's recovery rate in its weight (keeps every weight positive).
    min_weight_rate: float = 0.01
    allocation_passes: int = 2
    balance_iterations: int = 8
    placement_amount_basis: AmountBasis = "OVERDUE"
    severe_signals: tuple[str, ...] = ("BORROWER_DECEASED", "FRAUD")
    fee_bands: tuple[FeeBand, ...] = (
        FeeBand("M1", 0, Decimal("0.08")),
        FeeBand("M2", 31, Decimal("0.12")),
        FeeBand("M3", 61, Decimal("0.18")),
        FeeBand("M4_M6", 91, Decimal("0.25")),
        FeeBand("M7_PLUS", 181, Decimal("0.35")),
    )
    # Per agency and band name, overriding the band's rate.
    agency_fee_rates: Mapping[str, Mapping[str, Decimal]] = field(default_factory=dict)
    elimination_min_cases: int = 20
    elimination_floor_rate: float = 0.02
    elimination_relative_rate: float = 0.5


def _phone(*contacts: ContactType, attempts: int = 2, note: str = "") -> ActionSpec:
    return ActionSpec("PHONE", contacts, attempts, note=note)


_SEVERE = ("BORROWER_DECEASED", "FRAUD")
_LEGAL = (ActionSpec("LEGAL", note="file suit / claim on the estate"),)

ABC_PROFILE = StrategyProfile(
    description="ABC personal-loan rules, seed part 1 art. 49(6)",
    rules=(
        CaseRule("LEGAL_SEVERE_SIGNAL", "LEGAL", "RISK_MANAGER", signal_types=_SEVERE, actions=_LEGAL),
        CaseRule("LEGAL_RECOVERY", "LEGAL", "RISK_MANAGER", min_dpd=91, actions=_LEGAL),
        CaseRule(
            "LEGAL_RECOVERY", "LEGAL", "RISK_MANAGER", min_dpd=0, risk_classes=("DOUBTFUL", "LOSS"), actions=_LEGAL
        ),
        CaseRule(
            "MEETING_FIELD_VISIT",
            min_dpd=61,
            max_dpd=90,
            actions=(ActionSpec("MEETING"), ActionSpec("FIELD_VISIT")),
        ),
        CaseRule(
            "SMS_PHONE_LETTER",
            max_dpd=60,
            actions=(ActionSpec("SMS"), _phone("BORROWER", attempts=1), ActionSpec("LETTER")),
        ),
    ),
)

WUHAN_PROFILE = StrategyProfile(
    description="Wuhan management centre rules, seed part 4 sections 1(3) and 3",
    lost_contact_days=5,
    rules=(
        CaseRule("LEGAL_SEVERE_SIGNAL", "LEGAL", "RISK_MANAGER", signal_types=_SEVERE, actions=_LEGAL),
        CaseRule(
            "LEGAL_RECOVERY", "LEGAL", "RISK_MANAGER", min_dpd=0, risk_classes=("DOUBTFUL", "LOSS"), actions=_LEGAL
        ),
        CaseRule(
            "OUTSOURCED",
            "OUTSOURCED",
            "AGENCY",
            min_dpd=31,
            actions=(_phone("BORROWER", "GUARANTOR", "THIRD_PARTY"), ActionSpec("FIELD_VISIT")),
        ),
        CaseRule(
            "EARLY_OUTSOURCED",
            "OUTSOURCED",
            "AGENCY",
            min_amount=Decimal("50000"),
            min_failed_visits=2,
            actions=(_phone("BORROWER", "GUARANTOR", "THIRD_PARTY"), ActionSpec("FIELD_VISIT")),
        ),
        CaseRule(
            "FIELD_VISIT",
            owner="OFFICER",
            min_amount=Decimal("50000"),
            actions=(ActionSpec("FIELD_VISIT", note="home or work address, with photos"), _phone("BORROWER")),
        ),
        CaseRule(
            "LOST_CONTACT_VISIT",
            owner="OFFICER",
            lost_contact=True,
            actions=(ActionSpec("FIELD_VISIT", note="lost contact: visit and repair contact data"),),
        ),
        CaseRule("M1_PHONE_T3", owner="COLLECTOR", max_dpd=3, actions=(_phone("BORROWER"),)),
        CaseRule(
            "M1_PHONE_ALL_CONTACTS",
            owner="COLLECTOR",
            min_dpd=4,
            max_dpd=30,
            actions=(_phone("BORROWER", "GUARANTOR", "THIRD_PARTY"),),
        ),
    ),
)


@dataclass(frozen=True)
class CollectionsConfig:
    """DOMAIN.md section 4; the two shipped profiles are the defaults of `profiles`."""

    # Overridable per tier-1 branch / product (conf/postloan.yaml `overrides`).
    strategy_profile: str = "wuhan"
    reminder_days_before_due: int = 3
    missed_due_call: bool = True
    profiles: Mapping[str, StrategyProfile] = field(
        default_factory=lambda: {"abc": ABC_PROFILE, "wuhan": WUHAN_PROFILE}
    )
    reminder: CaseRule = field(
        default_factory=lambda: CaseRule(
            "PRE_DUE_REMINDER", "REMINDER", "COLLECTOR", min_dpd=0, max_dpd=0, actions=(ActionSpec("SMS"),)
        )
    )
    due_call: ActionSpec = field(default_factory=lambda: ActionSpec("PHONE", note="day after the missed due date"))
    conduct: ConductLimits = field(default_factory=ConductLimits)
    contacted_outcomes: tuple[str, ...] = ("CONTACTED", "PROMISE_TO_PAY")
    failed_visit_outcomes: tuple[str, ...] = ("VISIT_FAILED",)
    lost_contact_signals: tuple[str, ...] = ("BORROWER_MISSING",)
    allocation: AllocationConfig = field(default_factory=AllocationConfig)

    def __post_init__(self) -> None:
        check_collections(self)


def _check_action(action: ActionSpec, key: str) -> None:
    if not action.action_type:
        raise ConfigError(_WHERE, f"{key}.action_type", "must not be empty")
    if not action.contacts:
        raise ConfigError(_WHERE, f"{key}.contacts", "needs at least one contact")
    if action.attempts_per_day < 1:
        raise ConfigError(_WHERE, f"{key}.attempts_per_day", "must be at least 1")
    if not 0 <= action.start_hour < action.end_hour <= 24:
        raise ConfigError(
            _WHERE, key, f"needs 0 <= start_hour < end_hour <= 24, got {action.start_hour}-{action.end_hour}"
        )


def _check_rule(rule: CaseRule, key: str) -> None:
    if (rule.mode == "OUTSOURCED") != (rule.owner == "AGENCY"):
        raise ConfigError(_WHERE, f"{key}.owner", "AGENCY owns exactly the OUTSOURCED rules")
    if rule.max_dpd is not None and rule.max_dpd < rule.min_dpd:
        raise ConfigError(_WHERE, f"{key}.max_dpd", f"is below min_dpd ({rule.min_dpd})")
    for i, action in enumerate(rule.actions):
        _check_action(action, f"{key}.actions[{i}]")


def check_collections(config: CollectionsConfig) -> None:
    """Refuse settings the stage cannot apply, naming the key (called when the section is built)."""
    if not config.profiles:
        raise ConfigError(_WHERE, "profiles", "needs at least one strategy profile")
    if config.strategy_profile not in config.profiles:
        raise ConfigError(
            _WHERE,
            "strategy_profile",
            f"{config.strategy_profile!r} is not one of {', '.join(sorted(config.profiles))}",
        )
    for name, profile in config.profiles.items():
        if not profile.rules:
            raise ConfigError(_WHERE, f"profiles.{name}.rules", "needs at least one rule")
        for i, rule in enumerate(profile.rules):
            _check_rule(rule, f"profiles.{name}.rules[{i}]")
    if config.reminder.mode != "REMINDER" or config.reminder.owner == "AGENCY":
        raise ConfigError(_WHERE, "reminder", "must have mode REMINDER and an in-house owner")
    _check_rule(config.reminder, "reminder")
    _check_action(config.due_call, "due_call")
    limits = config.conduct
    if not 0 <= limits.earliest_hour < limits.latest_hour <= 24:
        raise ConfigError(_WHERE, "conduct", "needs 0 <= earliest_hour < latest_hour <= 24")
    if limits.max_attempts_per_contact_per_day < 1:
        raise ConfigError(_WHERE, "conduct.max_attempts_per_contact_per_day", "must be at least 1")
    a = config.allocation
    if not 0.0 <= a.challenger_share <= 1.0:
        raise ConfigError(_WHERE, "allocation.challenger_share", "must be between 0 and 1")
    if a.placement_days < 1 or a.allocation_passes < 1:
        raise ConfigError(_WHERE, "allocation", "placement_days and allocation_passes must be at least 1")
    if not 0.0 < a.min_weight_rate <= 1.0:
        raise ConfigError(_WHERE, "allocation.min_weight_rate", "must be above 0 and at most 1")
    if not a.fee_bands or a.fee_bands[0].min_dpd != 0:
        raise ConfigError(_WHERE, "allocation.fee_bands", "the first band must start at min_dpd 0")
    for i in range(1, len(a.fee_bands)):
        if a.fee_bands[i].min_dpd <= a.fee_bands[i - 1].min_dpd:
            raise ConfigError(_WHERE, f"allocation.fee_bands[{i}].min_dpd", "bands must be in increasing min_dpd")
    names = {b.name for b in a.fee_bands}
    for agency, rates in a.agency_fee_rates.items():
        for band in rates:
            if band not in names:
                raise ConfigError(_WHERE, f"allocation.agency_fee_rates.{agency}.{band}", "is not a fee band name")
