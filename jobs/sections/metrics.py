"""Settings of the metrics stage (conf/metrics.yaml, docs/metrics.md).

The metrics aggregate across branches and products, so every setting is bank-wide: the stage reads
this object, never the per-loan parameter columns, and refuses `metrics.*` entries in `overrides`.
A tier-1 branch sets its own KPI targets (seed part 1 art. 51: 考核辦法由各一級分行確定) with a
`targets` entry naming it; the most specific target for a group wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from jobs.config import ConfigError

Grouping = Literal["HQ", "TIER1_BRANCH", "TIER2_BRANCH", "BRANCH", "PRODUCT", "CHANNEL", "OFFICER", "BRANCH_PRODUCT"]
PeriodType = Literal["MONTH", "QUARTER", "YEAR"]
KpiMetric = Literal["OVERDUE_RATIO", "NPL_RATIO", "M1_CURE_RATE"]
ScoreMetric = Literal["OVERDUE_RATIO", "NPL_RATIO", "FPD_RATE"]
MigrationNumerator = Literal["PERIOD_START", "PERIOD_END"]

ALL_GROUPINGS: tuple[Grouping, ...] = (
    "HQ",
    "TIER1_BRANCH",
    "TIER2_BRANCH",
    "BRANCH",
    "PRODUCT",
    "CHANNEL",
    "OFFICER",
    "BRANCH_PRODUCT",
)
_WHERE = "metrics"


@dataclass(frozen=True)
class KpiTarget:
    """A target: OVERDUE_RATIO and NPL_RATIO at most `limit`, M1_CURE_RATE at least `limit`."""

    metric: KpiMetric
    limit: Decimal
    groupings: tuple[Grouping, ...] = ("OFFICER",)
    # Only groups inside this tier-1 branch; such a target beats the bank-wide one (tier1_branch empty).
    tier1_branch: str | None = None


@dataclass(frozen=True)
class ScoreComponent:
    """One part of the channel score: 100 points at 0, falling linearly to 0 points at `zero_at`."""

    metric: ScoreMetric
    weight: Decimal
    zero_at: Decimal


@dataclass(frozen=True)
class RatingBand:
    """A channel rating: the first band (highest min_score first) whose min_score the score reaches."""

    rating: str
    min_score: Decimal


# Seed part 4, section 1(4): 業務代表 ... 按逾期率(3%)、不良率(1%)考核; section 1(3): M1轉化率不得低於92%.
DEFAULT_TARGETS: tuple[KpiTarget, ...] = (
    KpiTarget("OVERDUE_RATIO", Decimal("0.03"), ("OFFICER", "BRANCH", "PRODUCT")),
    KpiTarget("NPL_RATIO", Decimal("0.01"), ("OFFICER", "BRANCH", "PRODUCT")),
    KpiTarget("M1_CURE_RATE", Decimal("0.92"), ("OFFICER", "BRANCH", "PRODUCT")),
)
# A channel at the 3% / 1% targets scores 50 on that component (zero points at twice the target).
DEFAULT_SCORE_COMPONENTS: tuple[ScoreComponent, ...] = (
    ScoreComponent("OVERDUE_RATIO", Decimal("40"), Decimal("0.06")),
    ScoreComponent("NPL_RATIO", Decimal("30"), Decimal("0.02")),
    ScoreComponent("FPD_RATE", Decimal("30"), Decimal("0.05")),
)
DEFAULT_RATING_BANDS: tuple[RatingBand, ...] = (
    RatingBand("A", Decimal("85")),
    RatingBand("B", Decimal("70")),
    RatingBand("C", Decimal("60")),
    RatingBand("D", Decimal("0")),
)


@dataclass(frozen=True)
class MetricsConfig:
    """Groupings, periods, KPI targets and channel scoring of the portfolio metrics. All defaulted."""

    # Groupings published in portfolio_metrics, migration_rates and roll_rates.
    portfolio_groupings: tuple[Grouping, ...] = ALL_GROUPINGS
    migration_groupings: tuple[Grouping, ...] = ("HQ", "TIER1_BRANCH", "TIER2_BRANCH", "BRANCH", "PRODUCT")
    roll_groupings: tuple[Grouping, ...] = (
        "HQ",
        "TIER1_BRANCH",
        "TIER2_BRANCH",
        "BRANCH",
        "PRODUCT",
        "CHANNEL",
        "OFFICER",
    )
    # Migration periods: from the previous month-, quarter- or year-end to the business date.
    migration_periods: tuple[PeriodType, ...] = ("MONTH", "QUARTER", "YEAR")
    # Numerator of the migration rate: period-START balance of the loans that moved down (default),
    # or their period-END balance (some 1104 implementations read 期末餘額).
    migration_numerator: MigrationNumerator = "PERIOD_START"
    # The period-start snapshot is the last successful run on or before the period end, at most this
    # many days before it (0 = the period end itself). No such run: no migration / roll rows.
    period_start_lookback_days: int = 7
    # KPI targets and when they are checked.
    targets: tuple[KpiTarget, ...] = DEFAULT_TARGETS
    # The M1 conversion rate is a monthly figure: check it on calendar month-ends only.
    cure_target_month_end_only: bool = True
    # Loans of a customer manager who left (officers.active = false) are managed by the phone-collection
    # desk (seed part 4, 1(4)1): no breach rows for departed officers.
    exclude_departed_officers: bool = True
    # Vintage: "ever 30+ / 90+" means dpd reached at least these days; MOBs published up to max_mob.
    vintage_dpd30_days: int = 30
    vintage_dpd90_days: int = 90
    vintage_max_mob: int = 60
    # Channel scorecard (seed part 4, section 2: 打分、評級、退出).
    channel_fpd_lookback_months: int = 12
    channel_score_components: tuple[ScoreComponent, ...] = DEFAULT_SCORE_COMPONENTS
    channel_rating_bands: tuple[RatingBand, ...] = DEFAULT_RATING_BANDS
    channel_exit_ratings: tuple[str, ...] = ("D",)

    def __post_init__(self) -> None:
        check_metrics_config(self)

    @property
    def bands_by_score(self) -> tuple[RatingBand, ...]:
        return tuple(sorted(self.channel_rating_bands, key=lambda b: b.min_score, reverse=True))


def check_metrics_config(c: MetricsConfig) -> None:
    """Refuse settings that cannot give a meaningful figure (ConfigError names the key)."""
    for name in ("portfolio_groupings", "migration_groupings", "roll_groupings"):
        values = getattr(c, name)
        if len(set(values)) != len(values):
            raise ConfigError(_WHERE, name, "lists a grouping twice")
    if c.vintage_dpd30_days < 1 or c.vintage_dpd90_days <= c.vintage_dpd30_days:
        raise ConfigError(_WHERE, "vintage_dpd90_days", "needs 1 <= vintage_dpd30_days < vintage_dpd90_days")
    seen: set[tuple[str, str, str | None]] = set()
    for i, t in enumerate(c.targets):
        if not t.groupings:
            raise ConfigError(_WHERE, f"targets[{i}].groupings", "names no grouping")
        if t.limit > 1:
            raise ConfigError(_WHERE, f"targets[{i}].limit", f"is a ratio between 0 and 1, got {t.limit}")
        for g in t.groupings:
            if (t.metric, g, t.tier1_branch) in seen:
                raise ConfigError(_WHERE, f"targets[{i}]", f"a second {t.metric} target for {g}")
            seen.add((t.metric, g, t.tier1_branch))
    metrics = [s.metric for s in c.channel_score_components]
    if len(set(metrics)) != len(metrics):
        raise ConfigError(_WHERE, "channel_score_components", "lists a metric twice")
    for i, s in enumerate(c.channel_score_components):
        if s.zero_at <= 0:
            raise ConfigError(_WHERE, f"channel_score_components[{i}].zero_at", "must be above 0")
    if c.channel_score_components and sum(s.weight for s in c.channel_score_components) <= 0:
        raise ConfigError(_WHERE, "channel_score_components", "weights add up to 0")
    ratings = [b.rating for b in c.channel_rating_bands]
    if len(set(ratings)) != len(ratings):
        raise ConfigError(_WHERE, "channel_rating_bands", "lists a rating twice")
    if not any(b.min_score == 0 for b in c.channel_rating_bands):
        raise ConfigError(_WHERE, "channel_rating_bands", "needs a band with min_score 0 (every score gets a rating)")
    if any(b.min_score > 100 for b in c.channel_rating_bands):
        raise ConfigError(_WHERE, "channel_rating_bands", "min_score is at most 100")
    unknown = [r for r in c.channel_exit_ratings if r not in ratings]
    if unknown:
        raise ConfigError(_WHERE, "channel_exit_ratings", f"{', '.join(unknown)} is not a rating band")
