"""Risk classification (風險分類, DOMAIN.md section 2): five classes, twelve grades, reason codes.

Pure, set-based transformations: nothing here reads or writes a table, loops over loans in Python
or calls a UDF, and the business date is always passed in.

Classes are handled as ranks (NORMAL 0 .. LOSS 4, `jobs.config.RISK_CLASS_ORDER`) so that "the
worst of all floors" is a `greatest` and "n notches better" is a subtraction. Every rule adds a
working rank column (null = the rule did not fire) and its reason codes; `classify` combines them.

Scalar thresholds are read from the per-loan parameter columns (`jobs.params.param`), so a tier-1
branch or product override of any of them takes effect; only the non-scalar parts of the profile
(the signal floor mapping and the grade rules) come from the `ClassificationProfile` object.

Reason codes (`risk_reasons`, sorted and distinct):
    DPD_OVERDUE, TECHNICAL_OVERDUE, DPD_OVER_SUBSTANDARD, DPD_OVER_DOUBTFUL, DPD_OVER_LOSS,
    SIGNAL_<SIGNAL_TYPE> (e.g. SIGNAL_LITIGATION, SIGNAL_BORROWER_DECEASED),
    RESTRUCTURED_OBSERVATION, NPL_UPGRADE_PENDING, NPL_UPGRADED,
    MANUAL_OVERRIDE, OVERRIDE_BOUNDED, PERFORMING.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from jobs.columns import fired_codes, no_codes
from jobs.config import RISK_CLASS_ORDER, ClassificationProfile, GradeRule, RiskClass
from jobs.params import param, param_name

Transform = Callable[[DataFrame], DataFrame]

NORMAL, SPECIAL_MENTION, SUBSTANDARD, DOUBTFUL, LOSS = range(5)
NPL_MIN_RANK = SUBSTANDARD

DPD_OVERDUE = "DPD_OVERDUE"
TECHNICAL_OVERDUE = "TECHNICAL_OVERDUE"
DPD_OVER_SUBSTANDARD = "DPD_OVER_SUBSTANDARD"
DPD_OVER_DOUBTFUL = "DPD_OVER_DOUBTFUL"
DPD_OVER_LOSS = "DPD_OVER_LOSS"
SIGNAL_PREFIX = "SIGNAL_"
RESTRUCTURED_OBSERVATION = "RESTRUCTURED_OBSERVATION"
NPL_UPGRADE_PENDING = "NPL_UPGRADE_PENDING"
NPL_UPGRADED = "NPL_UPGRADED"
MANUAL_OVERRIDE = "MANUAL_OVERRIDE"
OVERRIDE_BOUNDED = "OVERRIDE_BOUNDED"
PERFORMING = "PERFORMING"

# Signals about the borrower's person: the floor depends on whether there is an estate to recover from.
PERSON_SIGNALS = ("BORROWER_DECEASED", "BORROWER_MISSING", "LOST_CAPACITY")
OTHER_BANK_OVERDUE = "OTHER_BANK_OVERDUE"
REFINANCE_OLD_WITH_NEW = "REFINANCE_OLD_WITH_NEW"

# The input columns the rules read (the delinquency stage delivers them, with the loan contract's);
# the input may carry any others, which pass through unchanged.
REQUIRED_COLUMNS: tuple[str, ...] = (
    "loan_id",
    "borrower_id",
    "product_code",
    "collateral_type",
    "disbursement_date",
    "restructured_date",
    "restructure_count",
    "restructured_from_npl",
    "overdue_principal",
    "overdue_interest",
    "dpd",
    "max_dpd_ever",
    "last_overdue_date",
)
PARAMS_USED: tuple[str, ...] = (
    "dpd_special_mention_above",
    "dpd_substandard_above",
    "dpd_doubtful_above",
    "dpd_loss_above",
    "technical_grace_days",
    "other_bank_overdue_min_days",
    "no_estate_floor",
    "with_estate_floor",
    "restructure_floor",
    "restructure_npl_floor",
    "observation_min_periods",
    "observation_min_months",
    "upgrade_min_periods",
    "upgrade_min_months",
    "override_max_upgrade_notches",
    "override_keeps_npl_dpd_floor",
)
OUTPUT_COLUMNS: tuple[str, ...] = (
    "risk_class",
    "risk_grade",
    "is_npl",
    "rule_class",
    "risk_reasons",
    "override_id",
    "previous_risk_class",
)

# Working columns; the prefix keeps them apart from anything the input may carry.
_DPD_RANK, _DPD_REASONS = "_cl_dpd_rank", "_cl_dpd_reasons"
_SIG_RANK, _SIG_REASONS = "_cl_sig_rank", "_cl_sig_reasons"
_OBS_START, _OBS_END_PERIODS, _NORMAL_PERIODS = "_cl_obs_start", "_cl_obs_end_periods", "_cl_normal_periods"
_RST_RANK = "_cl_rst_rank"
_HELD, _UPGRADED, _RULE_RANK = "_cl_held", "_cl_upgraded", "_cl_rule_rank"
_OVR_CLASS, _RISK_RANK = "_cl_ovr_class", "_cl_risk_rank"


def _p(name: str) -> Column:
    return param("classification", name)


def _classes() -> Column:
    return F.array(*[F.lit(c) for c in RISK_CLASS_ORDER])


def class_rank(risk_class: Column) -> Column:
    """NORMAL 0, SPECIAL_MENTION 1, SUBSTANDARD 2, DOUBTFUL 3, LOSS 4; null for null or unknown."""
    position = F.array_position(_classes(), risk_class).cast("int")
    return F.when(position > 0, position - 1)


def class_name(rank: Column) -> Column:
    """The class of a rank 0..4 (inverse of `class_rank`)."""
    return F.element_at(_classes(), rank + 1)


def _as_of(as_of: dt.date) -> Column:
    return F.lit(as_of)


def _check_input(loans: DataFrame) -> None:
    present = set(loans.columns)
    missing = [c for c in REQUIRED_COLUMNS if c not in present]
    missing += [f"classification__{p}" for p in PARAMS_USED if f"classification__{p}" not in present]
    if missing:
        raise ValueError(f"classify: input lacks column(s) {', '.join(missing)}")


def _check_profile(profile: ClassificationProfile) -> None:
    # Every class needs grades: risk_grade may not be null in the contract.
    graded = {name for name, rules in profile.grades.items() if rules}
    no_grades = [c for c in RISK_CLASS_ORDER if c not in graded]
    if no_grades:
        raise ValueError(f"classify: profile {profile.name!r} has no grades for {', '.join(no_grades)}")


# --------------------------------------------------------------------------------------------
# Rule 1: days past due


def _with_dpd_floor() -> Transform:
    """DPD floors; a technical overdue within the grace sets no floor (but is reported)."""

    def transform(loans: DataFrame) -> DataFrame:
        dpd = F.col("dpd")
        overdue = dpd > _p("dpd_special_mention_above")
        technical = overdue & (dpd <= _p("technical_grace_days"))
        special = overdue & ~technical
        # The NPL floors ignore the grace and the collateral: over 90 days is NPL whatever secures it.
        substandard = dpd > _p("dpd_substandard_above")
        doubtful = dpd > _p("dpd_doubtful_above")
        loss = dpd > _p("dpd_loss_above")
        rank = F.when(loss, LOSS).when(doubtful, DOUBTFUL).when(substandard, SUBSTANDARD).when(special, SPECIAL_MENTION)
        # Every floor that fires is reported, not only the worst (a 100-day loan is also overdue).
        reasons = fired_codes(
            F.when(technical, F.lit(TECHNICAL_OVERDUE)),
            F.when(special, F.lit(DPD_OVERDUE)),
            F.when(substandard, F.lit(DPD_OVER_SUBSTANDARD)),
            F.when(doubtful, F.lit(DPD_OVER_DOUBTFUL)),
            F.when(loss, F.lit(DPD_OVER_LOSS)),
        )
        return loans.withColumns({_DPD_RANK: rank, _DPD_REASONS: reasons})

    return transform


# --------------------------------------------------------------------------------------------
# Rule 2: risk signals


def _signal_floor_class(signal_floors: Mapping[str, str]) -> Column:
    """The configured floor class of a signal row (null: the type sets no floor)."""
    signal_type = F.col("signal_type")
    estate_floor = F.when(F.col("has_estate"), _p("with_estate_floor")).otherwise(_p("no_estate_floor"))
    floor = F.when(signal_type.isin(*PERSON_SIGNALS), estate_floor)
    for kind, risk_class in sorted(signal_floors.items()):
        if kind not in PERSON_SIGNALS:
            floor = floor.when(signal_type == kind, F.lit(risk_class))
    return floor


def _with_signal_floor(
    as_of: dt.date, signal_floors: Mapping[str, str], signals: DataFrame, products: DataFrame, book: DataFrame
) -> Transform:
    """Floors from the risk signals in force on `as_of` (a signal without loan_id hits every loan
    of the borrower). The loans' keys and parameters are read from `book`, the stage's input rows,
    rather than from the frame being classified, which by then carries the previous run's classes:
    Spark would otherwise join the previous snapshot a second time for this branch alone."""

    def transform(loans: DataFrame) -> DataFrame:
        day = _as_of(as_of)
        in_force = signals.filter(
            (F.col("signal_date") <= day) & (F.col("cleared_date").isNull() | (F.col("cleared_date") > day))
        ).select("loan_id", "borrower_id", "signal_type", "days_overdue", "has_estate")
        keys = book.select(
            "loan_id",
            "borrower_id",
            "product_code",
            *[_p(n) for n in ("other_bank_overdue_min_days", "no_estate_floor", "with_estate_floor")],
        ).join(products.select("product_code", "refinance_designed"), "product_code", "left")
        # Two equi-joins rather than one OR-join, which Spark could only run as a nested loop.
        by_loan = keys.join(in_force.filter(F.col("loan_id").isNotNull()).drop("borrower_id"), "loan_id")
        by_borrower = keys.join(in_force.filter(F.col("loan_id").isNull()).drop("loan_id"), "borrower_id")
        hits = by_loan.unionByName(by_borrower)

        signal_type = F.col("signal_type")
        applies = (
            F.when(
                signal_type == OTHER_BANK_OVERDUE,
                F.coalesce(F.col("days_overdue") >= _p("other_bank_overdue_min_days"), F.lit(False)),
            )
            .when(signal_type == REFINANCE_OLD_WITH_NEW, ~F.coalesce(F.col("refinance_designed"), F.lit(False)))
            .otherwise(F.lit(True))
        )
        floor = _signal_floor_class(signal_floors)
        fired = (
            hits.filter(applies & floor.isNotNull())
            .groupBy("loan_id")
            .agg(
                F.max(class_rank(floor)).alias(_SIG_RANK),
                F.collect_set(F.concat(F.lit(SIGNAL_PREFIX), signal_type)).alias(_SIG_REASONS),
            )
        )
        return loans.join(fired, "loan_id", "left")

    return transform


# --------------------------------------------------------------------------------------------
# Schedule facts for rules 3 and 4 (one pass over the schedule of the loans that need it)


def _restructured(as_of: dt.date) -> Column:
    return F.col("restructured_date").isNotNull() & (F.col("restructured_date") <= _as_of(as_of))


def _normal_since() -> Column:
    """First day of normal payment: the day after the last overdue day, or disbursement."""
    return F.coalesce(F.date_add(F.col("last_overdue_date"), 1), F.col("disbursement_date"))


def _with_schedule_facts(as_of: dt.date, schedule: DataFrame) -> Transform:
    """Per restructured or previously-NPL loan: the observation start date, the due date that ends
    the observation by periods, and how many due dates fell in [normal_since, as_of].

    Needs `previous_risk_class` on the input. Other loans get nulls.
    """

    def transform(loans: DataFrame) -> DataFrame:
        day = _as_of(as_of)
        restructured = _restructured(as_of)
        # A missed payment after restructuring restarts the observation: anchor on the later date
        # (greatest skips a null last_overdue_date).
        anchor = F.when(restructured, F.greatest(F.col("restructured_date"), F.col("last_overdue_date")))
        was_npl = class_rank(F.col("previous_risk_class")) >= NPL_MIN_RANK
        needs = loans.filter(restructured | was_npl).select(
            "loan_id",
            anchor.alias("_anchor"),
            _normal_since().alias("_normal_since"),
            _p("observation_min_periods").alias("_periods"),
        )
        # The loans that need facts are few: broadcast them to the schedule, so its instalments are
        # filtered where they lie instead of all of them being shuffled to meet a few loans.
        rows = schedule.select("loan_id", "due_date").join(F.broadcast(needs), "loan_id")
        due, anchor_col = F.col("due_date"), F.col("_anchor")
        by_loan = Window.partitionBy("loan_id")
        # Repayment periods are distinct due dates, numbered in date order.
        rows = rows.withColumn("_period", F.dense_rank().over(by_loan.orderBy("due_date")))
        start_period = F.min(F.when(due > anchor_col, F.col("_period"))).over(by_loan)
        rows = rows.withColumn("_start_period", start_period)
        period = F.col("_period")
        # Periods are numbered without gaps, so the distinct due dates in [normal_since, as_of] are
        # the last period due by as_of less the first on or after normal_since, plus one (none if
        # either is missing or they cross): min and max instead of a distinct count, which Spark
        # plans as two more aggregations.
        last_due, first_normal = F.max(F.when(due <= day, period)), F.min(F.when(due >= F.col("_normal_since"), period))
        facts = rows.groupBy("loan_id").agg(
            F.min(F.when(due > anchor_col, due)).alias(_OBS_START),
            F.max(F.when(period == F.col("_start_period") + F.col("_periods"), due)).alias(_OBS_END_PERIODS),
            # The n-th due date on or after normal_since is <= as_of iff at least n fall in between.
            F.greatest(F.coalesce(last_due - first_normal + 1, F.lit(0)), F.lit(0)).alias(_NORMAL_PERIODS),
        )
        # A loan without schedule rows gets null facts (its normal periods count as 0 where used).
        # The facts are few (one row per loan that needs them): broadcast back to the loans.
        return loans.join(F.broadcast(facts), "loan_id", "left")

    return transform


# --------------------------------------------------------------------------------------------
# Rule 3: restructuring observation period


def _with_restructure_floor(as_of: dt.date) -> Transform:
    """Floor while a restructured loan is in its observation period (needs the schedule facts)."""

    def transform(loans: DataFrame) -> DataFrame:
        day = _as_of(as_of)
        start, end_periods = F.col(_OBS_START), F.col(_OBS_END_PERIODS)
        end = F.greatest(end_periods, F.add_months(start, _p("observation_min_months")))
        # Without the start or end due date in the schedule the period cannot be shown to be over.
        observing = _restructured(as_of) & (start.isNull() | end_periods.isNull() | (day < end))
        again = F.coalesce(F.col("restructured_from_npl"), F.lit(False)) | (
            F.coalesce(F.col("restructure_count"), F.lit(0)) > 1
        )
        floor = F.when(again, _p("restructure_npl_floor")).otherwise(_p("restructure_floor"))
        return loans.withColumn(_RST_RANK, F.when(observing, class_rank(floor)))

    return transform


# --------------------------------------------------------------------------------------------
# Rule 4: upgrade out of NPL


def _with_npl_hold(as_of: dt.date) -> Transform:
    """Hold a loan at its previous NPL class until it has paid normally for long enough."""

    def transform(loans: DataFrame) -> DataFrame:
        day = _as_of(as_of)
        floors = F.greatest(F.col(_DPD_RANK), F.col(_SIG_RANK), F.col(_RST_RANK))
        rules = F.coalesce(floors, F.lit(NORMAL))
        previous = class_rank(F.col("previous_risk_class"))
        upgrading = F.coalesce((previous >= NPL_MIN_RANK) & (rules < previous), F.lit(False))
        allowed = (
            (F.col("dpd") == 0)
            & (F.col("overdue_principal") + F.col("overdue_interest") == 0)
            & (day >= F.add_months(_normal_since(), _p("upgrade_min_months")))
            & (F.coalesce(F.col(_NORMAL_PERIODS), F.lit(0)) >= _p("upgrade_min_periods"))
        )
        held = upgrading & ~F.coalesce(allowed, F.lit(False))
        return loans.withColumns(
            {
                _HELD: held,
                _UPGRADED: upgrading & ~held,
                # worst(rules, held): a hold only happens when the rules are better, so it is the held class.
                _RULE_RANK: F.when(held, previous).otherwise(rules),
            }
        )

    return transform


# --------------------------------------------------------------------------------------------
# Rule 5: manual overrides


def _with_override(as_of: dt.date, overrides: DataFrame) -> Transform:
    """The override in force (latest approved_date, then highest override_id), bounded."""

    def transform(loans: DataFrame) -> DataFrame:
        day = _as_of(as_of)
        latest_first = Window.partitionBy("loan_id").orderBy(F.col("approved_date").desc(), F.col("override_id").desc())
        in_force = (
            overrides.filter((F.col("approved_date") <= day) & (day <= F.col("expiry_date")))
            .withColumn("_n", F.row_number().over(latest_first))
            .filter(F.col("_n") == 1)
            .select("loan_id", "override_id", F.col("risk_class").alias(_OVR_CLASS))
        )
        joined = loans.join(in_force, "loan_id", "left")
        wanted = class_rank(F.col(_OVR_CLASS))
        rule = F.col(_RULE_RANK)
        # Upgrades are limited in notches and (optionally) by the NPL DPD floor; downgrades are not.
        npl_dpd_floor = F.when(
            _p("override_keeps_npl_dpd_floor") & (F.col("dpd") > _p("dpd_substandard_above")), NPL_MIN_RANK
        ).otherwise(NORMAL)
        bounded = F.greatest(wanted, rule - _p("override_max_upgrade_notches"), npl_dpd_floor)
        overridden = F.col("override_id").isNotNull()
        return joined.withColumn(_RISK_RANK, F.when(overridden, bounded).otherwise(rule))

    return transform


# --------------------------------------------------------------------------------------------
# Rule 7: twelve-level grade


def _grade_condition(rule: GradeRule) -> Column:
    condition = F.lit(True)
    if rule.max_dpd is not None:
        condition &= F.col("dpd") <= rule.max_dpd
    if rule.max_dpd_ever is not None:
        condition &= F.col("max_dpd_ever") <= rule.max_dpd_ever
    if rule.collateral_types:
        condition &= F.col("collateral_type").isin(*rule.collateral_types)
    if rule.no_signal:
        condition &= F.col(_SIG_RANK).isNull()
    return condition


def _risk_grade(grades: Mapping[RiskClass, tuple[GradeRule, ...]]) -> Column:
    """First grade rule of the loan's risk_class whose conditions all hold (needs the signal rank)."""
    risk_class = F.col("risk_class")
    # Classes are disjoint, so only the order of the rules within a class matters.
    branches = [
        ((risk_class == name) & _grade_condition(rule), rule.grade) for name, rules in grades.items() for rule in rules
    ]
    if not branches:
        return F.lit(None).cast("string")
    expression = F.when(*branches[0])
    for condition, grade in branches[1:]:
        expression = expression.when(condition, grade)
    return expression


# --------------------------------------------------------------------------------------------
# The stage (rules 6 and 8 are in `_reasons` and `classify`)


def _with_previous(previous: DataFrame | None) -> Transform:
    def transform(loans: DataFrame) -> DataFrame:
        if previous is None:
            return loans.withColumn("previous_risk_class", F.lit(None).cast("string"))
        last = previous.select("loan_id", F.col("risk_class").alias("previous_risk_class"))
        return loans.join(last, "loan_id", "left")

    return transform


def _reasons() -> Column:
    no_floor = F.greatest(F.col(_DPD_RANK), F.col(_SIG_RANK), F.col(_RST_RANK)).isNull() & ~F.col(_HELD)
    overridden = F.col("override_id").isNotNull()
    clipped = overridden & (F.col(_RISK_RANK) != class_rank(F.col(_OVR_CLASS)))
    codes = F.concat(
        F.col(_DPD_REASONS),
        F.coalesce(F.col(_SIG_REASONS), no_codes()),
        fired_codes(
            F.when(F.col(_RST_RANK).isNotNull(), F.lit(RESTRUCTURED_OBSERVATION)),
            F.when(F.col(_HELD), F.lit(NPL_UPGRADE_PENDING)),
            F.when(F.col(_UPGRADED), F.lit(NPL_UPGRADED)),
            F.when(no_floor, F.lit(PERFORMING)),
            F.when(overridden, F.lit(MANUAL_OVERRIDE)),
            F.when(clipped, F.lit(OVERRIDE_BOUNDED)),
        ),
    )
    # sort_array, not array_sort: the latter is interpreted (no codegen), the former is not.
    return F.sort_array(F.array_distinct(codes))


def classify(
    as_of: dt.date,
    profile: ClassificationProfile,
    schedule: DataFrame,
    signals: DataFrame,
    overrides: DataFrame,
    products: DataFrame,
    previous: DataFrame | None,
) -> Transform:
    """Classify every loan of the delinquency output on `as_of` (DOMAIN.md section 2).

    The input needs `REQUIRED_COLUMNS` and the `classification__*` parameter columns of
    `PARAMS_USED` (see `jobs.params.with_params`); other columns pass through. `previous` is the
    previous successful run's loan_snapshot (only `loan_id` and `risk_class` are read; one row per
    loan), or None on the first run. The output is the input plus `OUTPUT_COLUMNS`, in that order.
    The previous grade is not carried: pass the same `previous` to `classification_changes`, which
    re-joins it for `from_grade`.

    The input is read three times (the main chain, the signal join, the schedule join): persist it
    first if it is expensive to recompute.
    """

    _check_profile(profile)

    def transform(loans: DataFrame) -> DataFrame:
        _check_input(loans)
        columns = [*loans.columns, *OUTPUT_COLUMNS]
        # Only the columns the rules read go through the stage's joins and sorts; the rest of each
        # loan's row (86 columns, 1.3 KB a loan after the delinquency) joins back once at the end:
        # 25-30% less time at 1M loans (docs/benchmarks.md).
        read = {*REQUIRED_COLUMNS, *(param_name("classification", p) for p in PARAMS_USED)}
        rest = loans.select("loan_id", *[c for c in loans.columns if c not in read])
        risk_rank = F.col(_RISK_RANK)
        book = loans.select(*[c for c in loans.columns if c in read])
        classified = (
            book.transform(_with_previous(previous))
            .transform(_with_dpd_floor())
            .transform(_with_signal_floor(as_of, profile.signal_floors, signals, products, book))
            .transform(_with_schedule_facts(as_of, schedule))
            .transform(_with_restructure_floor(as_of))
            .transform(_with_npl_hold(as_of))
            .transform(_with_override(as_of, overrides))
            .withColumns(
                {
                    "risk_class": class_name(risk_rank),
                    "rule_class": class_name(F.col(_RULE_RANK)),
                    "is_npl": risk_rank >= NPL_MIN_RANK,
                    "risk_reasons": _reasons(),
                }
            )
            # Overrides carry no grade: the grade rules run within the class the override set.
            .withColumn("risk_grade", _risk_grade(profile.grades))
        )
        return classified.join(rest, "loan_id").select(*columns)

    return transform


# --------------------------------------------------------------------------------------------
# Classification history


def direction(to_class: Column, from_class: Column) -> Column:
    """NEW without a previous class, else DOWNGRADE (worse) or UPGRADE (better); null if equal."""
    to_rank, from_rank = class_rank(to_class), class_rank(from_class)
    return (
        F.when(from_class.isNull(), F.lit("NEW"))
        .when(to_rank > from_rank, F.lit("DOWNGRADE"))
        .when(to_rank < from_rank, F.lit("UPGRADE"))
    )


def classification_changes(
    as_of: dt.date, previous_as_of: dt.date | None, previous: DataFrame | None = None
) -> Transform:
    """Rows of CLASSIFICATION_HISTORY for the loans whose class changed or that are new.

    The input is the classified loan_snapshot of `as_of` (with `previous_risk_class`, `branch_path`).
    The grade before (`from_grade`) comes from `previous` (the previous run's loan_snapshot,
    re-joined on loan_id) when given; otherwise from a `previous_risk_grade` column if the input
    has one; otherwise it is null.
    """

    def transform(snapshot: DataFrame) -> DataFrame:
        frame = snapshot
        if previous is not None:
            grades = previous.select("loan_id", F.col("risk_grade").alias("previous_risk_grade"))
            frame = frame.drop("previous_risk_grade").join(grades, "loan_id", "left")
        elif "previous_risk_grade" not in frame.columns:
            frame = frame.withColumn("previous_risk_grade", F.lit(None).cast("string"))
        moved = direction(F.col("risk_class"), F.col("previous_risk_class"))
        return frame.filter(moved.isNotNull()).select(
            F.lit(as_of).alias("as_of_date"),
            "loan_id",
            F.lit(previous_as_of).cast("date").alias("previous_as_of_date"),
            F.col("previous_risk_class").alias("from_class"),
            F.col("risk_class").alias("to_class"),
            F.col("previous_risk_grade").alias("from_grade"),
            F.col("risk_grade").alias("to_grade"),
            moved.alias("direction"),
            "risk_reasons",
            "branch_id",
            "branch_path",
            "outstanding_principal",
        )

    return transform
