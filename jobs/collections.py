"""Collections (催收): each night's case per loan in collection, and the stage entry point.

DOMAIN.md section 4, docs/collections.md. A loan on the book gets a case when it is past due, when
a rule of its strategy profile applies at DPD 0 (a DOUBTFUL loan under the ABC rules), or when an
instalment falls due within the reminder window. The first rule of the profile whose conditions
hold gives the stage, the mode (in-house, outsourced, legal), the owner role and the actions; the
actions are then clipped to the conduct limits. Outsourced cases are placed with agencies by
`jobs.allocation`; the case then names the agency, or falls back in-house with the reason.

The profile is a parameter column (`collections__strategy_profile`), so a tier-1 branch or a
product may run another profile; everything here is column expressions, joins and windows.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from jobs.allocation import agency_scorecard, build_placements, contract_columns
from jobs.columns import fired_codes
from jobs.config import AppConfig, ConfigError
from jobs.params import param, with_params
from jobs.sections.collections import ActionSpec, CaseRule, CollectionsConfig, ConductLimits
from jobs.spark import local_frame
from jobs.stages import StageContext, materialize
from schemas.base import Table
from schemas.collections import AGENCY_PLACEMENTS, AGENCY_SCORECARD, COLLECTION_CASES

Transform = Callable[[DataFrame], DataFrame]
MONEY = "decimal(18,2)"

SNAPSHOT_COLUMNS = (
    "loan_id",
    "borrower_id",
    "branch_id",
    "branch_path",
    "tier1_branch_id",
    "product_code",
    "officer_id",
    "region_code",
    "dpd",
    "bucket",
    "risk_class",
    "overdue_principal",
    "overdue_interest",
    "outstanding_principal",
)

# The action struct while the rules are applied: hours as numbers, clipped before rendering.
RAW_ACTION = T.StructType(
    [
        T.StructField("action_type", T.StringType()),
        T.StructField("contact_type", T.StringType()),
        T.StructField("attempts", T.IntegerType()),
        T.StructField("start_hour", T.IntegerType()),
        T.StructField("end_hour", T.IntegerType()),
        T.StructField("note", T.StringType()),
    ]
)
RAW_ACTIONS = T.ArrayType(RAW_ACTION, containsNull=False)


def _no_strings() -> Column:
    return F.array().cast("array<string>")


def _profile() -> Column:
    return param("collections", "strategy_profile")


def overdue_amount() -> Column:
    return (F.col("overdue_principal") + F.col("overdue_interest")).cast(MONEY)


def debt_amount() -> Column:
    return (F.col("outstanding_principal") + F.col("overdue_interest")).cast(MONEY)


def _raw_actions(actions: tuple[ActionSpec, ...]) -> list[tuple[Any, ...]]:
    """One struct per action and contact, in the rule's order."""
    return [
        (a.action_type, contact, a.attempts_per_day, a.start_hour, a.end_hour, a.note)
        for a in actions
        for contact in a.contacts
    ]


def _raw_actions_literal(actions: tuple[ActionSpec, ...]) -> Column:
    items = [
        F.struct(*[F.lit(v).cast(f.dataType).alias(f.name) for v, f in zip(row, RAW_ACTION.fields, strict=True)])
        for row in _raw_actions(actions)
    ]
    return F.array(*items).cast(RAW_ACTIONS) if items else F.array().cast(RAW_ACTIONS)


# --------------------------------------------------------------------------------------------
# Facts the rules read: signals in force, contactability, failed visits


def in_force(as_of: dt.date) -> Column:
    day = F.lit(as_of)
    return (F.col("signal_date") <= day) & (F.col("cleared_date").isNull() | (F.col("cleared_date") > day))


def with_signals(as_of: dt.date, signals: DataFrame) -> Transform:
    """Add `signal_types`: types of the signals in force on the loan or on its borrower (sorted)."""

    def transform(loans: DataFrame) -> DataFrame:
        live = signals.where(in_force(as_of))
        keys = loans.select("loan_id", "borrower_id")
        on_loan = live.where(F.col("loan_id").isNotNull()).select("loan_id", "signal_type")
        on_borrower = (
            live.where(F.col("loan_id").isNull())
            .select("borrower_id", "signal_type")
            .join(keys, "borrower_id")
            .select("loan_id", "signal_type")
        )
        types = (
            on_loan.unionByName(on_borrower)
            .groupBy("loan_id")
            .agg(F.array_sort(F.collect_set("signal_type")).alias("_signal_types"))
        )
        return (
            loans.join(types, "loan_id", "left")
            .withColumn("signal_types", F.coalesce(F.col("_signal_types"), _no_strings()))
            .drop("_signal_types")
        )

    return transform


def with_contact_facts(
    as_of: dt.date, actions: DataFrame, contacted_outcomes: tuple[str, ...], failed_visit_outcomes: tuple[str, ...]
) -> Transform:
    """Add `unreachable_days` and `failed_visits` from the actions recorded in the episode.

    The episode of a loan past due started on the date minus DPD plus one. A day counts as
    unreachable when a call was made and the borrower was not reached (outcome in
    `contacted_outcomes` with contact BORROWER), after the last day the borrower was reached.
    """
    day = F.lit(as_of)

    def transform(loans: DataFrame) -> DataFrame:
        episodes = loans.where(F.col("dpd") >= 1).select("loan_id", F.date_sub(day, F.col("dpd") - 1).alias("_start"))
        recorded = (
            actions.select(
                "loan_id",
                F.to_date("action_time").alias("_day"),
                (F.col("contact_type") == "BORROWER") & F.col("outcome").isin(*contacted_outcomes),
                F.col("action_type") == "PHONE",
                (F.col("action_type") == "FIELD_VISIT") & F.col("outcome").isin(*failed_visit_outcomes),
            )
            .toDF("loan_id", "_day", "_reached", "_called", "_visit_failed")
            .where(F.col("_day") <= day)
            .join(episodes, "loan_id")
            .where(F.col("_day") >= F.col("_start"))
        )
        per_day = recorded.groupBy("loan_id", "_day").agg(
            F.max("_reached").alias("_reached"),
            F.max("_called").alias("_called"),
            F.sum(F.col("_visit_failed").cast("int")).alias("_visits_failed"),
        )
        last_reached = F.max(F.when(F.col("_reached"), F.col("_day"))).over(Window.partitionBy("loan_id"))
        unreachable = F.col("_called") & ~F.col("_reached") & (last_reached.isNull() | (F.col("_day") > last_reached))
        facts = (
            per_day.withColumn("_unreachable", unreachable)
            .groupBy("loan_id")
            .agg(
                F.sum(F.col("_unreachable").cast("int")).alias("_unreachable_days"),
                F.sum("_visits_failed").alias("_failed_visits"),
            )
        )
        return (
            loans.join(facts, "loan_id", "left")
            .withColumn("unreachable_days", F.coalesce("_unreachable_days", F.lit(0)).cast("int"))
            .withColumn("failed_visits", F.coalesce("_failed_visits", F.lit(0)).cast("int"))
            .drop("_unreachable_days", "_failed_visits")
        )

    return transform


def with_conduct_breaches(since: dt.date, as_of: dt.date, actions: DataFrame, limits: ConductLimits) -> Transform:
    """Add `conduct_hours_breaches` and `conduct_attempt_breaches` from actions recorded in
    (since, as_of]: outside the allowed hours, and attempts to one contact (type) beyond the daily
    maximum."""

    def transform(loans: DataFrame) -> DataFrame:
        recent = actions.withColumn("_day", F.to_date("action_time")).where(
            (F.col("_day") > F.lit(since)) & (F.col("_day") <= F.lit(as_of))
        )
        hour = F.hour("action_time")
        off_hours = (hour < limits.earliest_hour) | (hour >= limits.latest_hour)
        hours = recent.groupBy("loan_id").agg(F.sum(off_hours.cast("int")).alias("_hours"))
        excess = (
            recent.groupBy("loan_id", "contact_type", "_day")
            .agg(F.count(F.lit(1)).alias("_n"))
            .groupBy("loan_id")
            .agg(F.sum(F.greatest(F.col("_n") - limits.max_attempts_per_contact_per_day, F.lit(0))).alias("_attempts"))
        )
        return (
            loans.join(hours, "loan_id", "left")
            .join(excess, "loan_id", "left")
            .withColumn("conduct_hours_breaches", F.coalesce("_hours", F.lit(0)).cast("int"))
            .withColumn("conduct_attempt_breaches", F.coalesce("_attempts", F.lit(0)).cast("int"))
            .drop("_hours", "_attempts")
        )

    return transform


def with_guarantor_flag(guarantors: DataFrame | None) -> Transform:
    """Add `has_guarantor` (true when no guarantor extract is given: nothing to filter on)."""

    def transform(loans: DataFrame) -> DataFrame:
        if guarantors is None:
            return loans.withColumn("has_guarantor", F.lit(True))
        ids = guarantors.select("loan_id").distinct().withColumn("_g", F.lit(True))
        return loans.join(ids, "loan_id", "left").withColumn("has_guarantor", F.coalesce("_g", F.lit(False))).drop("_g")

    return transform


# --------------------------------------------------------------------------------------------
# Strategy: the first matching rule of the loan's profile


def rule_condition(rule: CaseRule) -> Column:
    """The rule's conditions on a loan row (dpd, amounts, class, signals, contact facts)."""
    condition = F.col("dpd") >= rule.min_dpd
    if rule.max_dpd is not None:
        condition &= F.col("dpd") <= rule.max_dpd
    if rule.min_amount is not None:
        amount = overdue_amount() if rule.amount_basis == "OVERDUE" else debt_amount()
        condition &= amount >= F.lit(rule.min_amount).cast(MONEY)
    if rule.risk_classes:
        condition &= F.col("risk_class").isin(*rule.risk_classes)
    if rule.signal_types:
        condition &= F.arrays_overlap(F.col("signal_types"), F.array(*[F.lit(s) for s in rule.signal_types]))
    if rule.lost_contact is not None:
        condition &= F.col("lost_contact") == F.lit(rule.lost_contact)
    if rule.min_failed_visits is not None:
        condition &= F.col("failed_visits") >= rule.min_failed_visits
    return condition


def rule_key(profile: str, index: int) -> str:
    return f"{profile}#{index}"


def rules_frame(spark: SparkSession, config: CollectionsConfig) -> DataFrame:
    """Every rule of every profile, keyed by `rule_key`: stage, mode, owner role and raw actions."""
    schema = T.StructType(
        [
            T.StructField("_rule_key", T.StringType()),
            T.StructField("stage", T.StringType()),
            T.StructField("mode", T.StringType()),
            T.StructField("owner_role", T.StringType()),
            T.StructField("_actions", RAW_ACTIONS),
        ]
    )
    rows = [
        (rule_key(name, i), r.stage, r.mode, r.owner, _raw_actions(r.actions))
        for name, profile in sorted(config.profiles.items())
        for i, r in enumerate(profile.rules)
    ]
    return local_frame(spark, rows, schema)


def _by_profile(values: Mapping[str, Any], cast: str) -> Column:
    expression: Any = F
    for name, value in sorted(values.items()):
        expression = expression.when(_profile() == name, F.lit(value))
    return expression.cast(cast)  # type: ignore[no-any-return]


def match_strategy(config: CollectionsConfig) -> Transform:
    """Add lost_contact, `_rule_key` and the matched rule's stage, mode, owner_role, `_actions`.

    Loans no rule matches keep null there (the caller decides: past due means UNMATCHED).
    """

    def transform(loans: DataFrame) -> DataFrame:
        days = _by_profile({n: p.lost_contact_days for n, p in config.profiles.items()}, "int")
        missing = F.arrays_overlap(
            F.col("signal_types"), F.array(*[F.lit(s) for s in config.lost_contact_signals]).cast("array<string>")
        )
        with_facts = loans.withColumn(
            "lost_contact",
            (F.col("dpd") >= 1) & ((F.col("unreachable_days") >= days) | F.coalesce(missing, F.lit(False))),
        )
        key: Any = F
        for name, profile in sorted(config.profiles.items()):
            for i, rule in enumerate(profile.rules):
                key = key.when((_profile() == name) & rule_condition(rule), F.lit(rule_key(name, i)))
        rules = F.broadcast(rules_frame(loans.sparkSession, config))
        return with_facts.withColumn("_rule_key", key).join(rules, "_rule_key", "left")

    return transform


def case_candidates(config: CollectionsConfig) -> Column:
    """Loans that may get a rule case: past due, or matching a rule that applies at DPD 0."""
    condition = F.col("dpd") >= 1
    classes: set[str] = set()
    for profile in config.profiles.values():
        for rule in profile.rules:
            if rule.min_dpd == 0:
                if not rule.risk_classes:
                    return F.lit(True)
                classes.update(rule.risk_classes)
    if classes:
        condition |= F.col("risk_class").isin(*sorted(classes))
    return condition


# --------------------------------------------------------------------------------------------
# Conduct limits on the generated actions


def _hhmm(hour: Column) -> Column:
    return F.format_string("%02d:00", hour)


def enforce_conduct(limits: ConductLimits) -> Callable[[Column], Column]:
    """Clip raw actions to the conduct limits and render them (schemas.collections.ACTION).

    Windows are cut to [earliest_hour, latest_hour) and dropped when nothing is left; attempts
    are capped at the daily maximum per contact; third parties get only `third_party_actions`,
    with purpose LOCATE_BORROWER (reach the borrower, never collect from them).
    """
    allowed = F.array(*[F.lit(a) for a in limits.third_party_actions]).cast("array<string>")

    def clip(actions: Column) -> Column:
        def start(a: Column) -> Column:
            return F.greatest(a["start_hour"], F.lit(limits.earliest_hour))

        def end(a: Column) -> Column:
            return F.least(a["end_hour"], F.lit(limits.latest_hour))

        kept = F.filter(
            actions,
            lambda a: (
                (start(a) < end(a))
                & ((a["contact_type"] != "THIRD_PARTY") | F.array_contains(allowed, a["action_type"]))
            ),
        )
        rendered = F.transform(
            kept,
            lambda a: F.struct(
                a["action_type"].alias("action_type"),
                a["contact_type"].alias("contact_type"),
                F.when(a["contact_type"] == "THIRD_PARTY", F.lit("LOCATE_BORROWER"))
                .otherwise(F.lit("COLLECT"))
                .alias("purpose"),
                F.least(a["attempts"], F.lit(limits.max_attempts_per_contact_per_day)).alias("attempts"),
                _hhmm(start(a)).alias("window_start"),
                _hhmm(end(a)).alias("window_end"),
                a["note"].alias("note"),
            ),
        )
        return F.array_compact(rendered)

    return clip


# --------------------------------------------------------------------------------------------
# Cases


def assess_cases(
    as_of: dt.date,
    since: dt.date,
    config: CollectionsConfig,
    actions: DataFrame,
    signals: DataFrame,
    guarantors: DataFrame | None,
) -> Transform:
    """Rule cases of the loans on the book (with `collections__*` parameter columns).

    Output: one row per case with the snapshot columns, signal_types, contact facts, stage, mode,
    owner_role, `_raw_actions` (before the conduct limits) and `_reasons`.
    `since` is the previous run's business date: a loan that fell past due after it gets the
    day-after call (seed part 5) when `collections.missed_due_call` is set.
    """
    gap = max((as_of - since).days, 1)

    def transform(loans: DataFrame) -> DataFrame:
        matched = (
            loans.where(case_candidates(config))
            .transform(with_signals(as_of, signals))
            .transform(with_contact_facts(as_of, actions, config.contacted_outcomes, config.failed_visit_outcomes))
            .transform(with_guarantor_flag(guarantors))
            .transform(match_strategy(config))
            .where(F.col("_rule_key").isNotNull() | (F.col("dpd") >= 1))
        )
        due_call = param("collections", "missed_due_call") & F.col("dpd").between(1, gap)
        call = _raw_actions_literal((config.due_call,))
        raw = F.coalesce(F.col("_actions"), F.array().cast(RAW_ACTIONS))
        has_call = F.exists(raw, lambda a: (a["action_type"] == "PHONE") & (a["contact_type"] == "BORROWER"))
        raw = F.when(due_call & ~has_call, F.concat(raw, call)).otherwise(raw)
        raw = F.filter(raw, lambda a: F.col("has_guarantor") | (a["contact_type"] != "GUARANTOR"))
        return matched.select(
            *SNAPSHOT_COLUMNS,
            _profile().alias("strategy_profile"),
            "signal_types",
            "lost_contact",
            "unreachable_days",
            "failed_visits",
            F.lit(None).cast("date").alias("reminder_due_date"),
            F.coalesce("stage", F.lit("UNMATCHED")).alias("stage"),
            F.coalesce("mode", F.lit("IN_HOUSE")).alias("mode"),
            F.coalesce("owner_role", F.lit("OFFICER")).alias("owner_role"),
            raw.alias("_raw_actions"),
            fired_codes(
                F.concat(F.lit("PROFILE:"), _profile()),
                F.when(F.col("_rule_key").isNull(), F.lit("NO_RULE_MATCHED")).otherwise(
                    F.concat(F.lit("RULE:"), F.col("stage"))
                ),
                F.when(F.col("lost_contact"), F.lit("LOST_CONTACT")),
                F.when(F.col("unreachable_days") > 0, F.concat(F.lit("UNREACHABLE_DAYS:"), F.col("unreachable_days"))),
                F.when(F.col("failed_visits") > 0, F.concat(F.lit("FAILED_VISITS:"), F.col("failed_visits"))),
                F.when(F.size("signal_types") > 0, F.concat(F.lit("SIGNALS:"), F.array_join("signal_types", ","))),
                F.when(due_call, F.lit("MISSED_DUE_CALL")),
            ).alias("_reasons"),
        )

    return transform


def reminder_cases(
    as_of: dt.date,
    since: dt.date,
    max_days: int,
    reminder: CaseRule,
    schedule: DataFrame,
    repayments: DataFrame,
) -> Transform:
    """Pre-due reminders (seed part 5, 群發催收短信) for loans not past due.

    A loan gets one when an instalment not yet covered by what was paid falls due in
    (since + N, as_of + N] and after the date, N = `collections.reminder_days_before_due` (0 = off),
    so a reminder is sent once even when runs skip days. `max_days` bounds N over all overrides.
    """
    day = F.lit(as_of)

    def transform(loans: DataFrame) -> DataFrame:
        days = param("collections", "reminder_days_before_due")
        tolerance = (
            F.col("delinquency__tolerance_amount") if "delinquency__tolerance_amount" in loans.columns else F.lit(0)
        ).cast(MONEY)
        current = loans.where((F.col("dpd") == 0) & (days > 0)).withColumn("_tolerance", tolerance)
        soon = (
            schedule.where((F.col("due_date") > day) & (F.col("due_date") <= F.lit(as_of + dt.timedelta(max_days))))
            .join(current.select("loan_id", "_tolerance", days.alias("_days")), "loan_id")
            .where(
                (F.col("due_date") > F.date_add(F.lit(since), F.col("_days")))
                & (F.col("due_date") <= F.date_add(day, F.col("_days")))
            )
            .select("loan_id", "installment_no", "due_date", "_tolerance")
        )
        cumulative = (
            schedule.join(soon.select("loan_id", F.col("installment_no").alias("_upto")), "loan_id")
            .where(F.col("installment_no") <= F.col("_upto"))
            .groupBy("loan_id", F.col("_upto").alias("installment_no"))
            .agg(F.sum(F.col("principal_due") + F.col("interest_due")).alias("_cum_due"))
        )
        paid = (
            repayments.where(F.col("value_date") <= day)
            .join(soon.select("loan_id").distinct(), "loan_id", "left_semi")
            .groupBy("loan_id")
            .agg(F.sum("amount").alias("_paid"))
        )
        due = (
            soon.join(cumulative, ["loan_id", "installment_no"])
            .join(paid, "loan_id", "left")
            .where(F.coalesce("_paid", F.lit(0)) < F.col("_cum_due") - F.col("_tolerance"))
            .groupBy("loan_id")
            .agg(F.min("due_date").alias("reminder_due_date"))
        )
        return current.join(due, "loan_id").select(
            *SNAPSHOT_COLUMNS,
            _profile().alias("strategy_profile"),
            _no_strings().alias("signal_types"),
            F.lit(False).alias("lost_contact"),
            F.lit(0).alias("unreachable_days"),
            F.lit(0).alias("failed_visits"),
            "reminder_due_date",
            F.lit(reminder.stage).alias("stage"),
            F.lit(reminder.mode).alias("mode"),
            F.lit(reminder.owner).alias("owner_role"),
            _raw_actions_literal(reminder.actions).alias("_raw_actions"),
            fired_codes(
                F.concat(F.lit("PROFILE:"), _profile()),
                F.concat(F.lit("REMINDER_DUE:"), F.col("reminder_due_date").cast("string")),
            ).alias("_reasons"),
        )

    return transform


def with_placements(placements: DataFrame) -> Transform:
    """Join today's placement of each case: the agency holds it (an ACTIVE placement continues
    even if today's rule is in-house), or it is UNPLACED and stays in-house with the reason."""

    def transform(cases: DataFrame) -> DataFrame:
        active = placements.where(F.col("status") == "ACTIVE").select(
            "loan_id", "agency_id", "placement_id", F.col("placed_date").alias("_placed")
        )
        unplaced = placements.where(F.col("status") == "UNPLACED").select("loan_id", "unplaced_reason")
        placed = F.col("agency_id").isNotNull()
        continuing = placed & (F.col("mode") != "OUTSOURCED")
        return (
            cases.join(active, "loan_id", "left")
            .join(unplaced, "loan_id", "left")
            .withColumn(
                "_reasons",
                F.concat(
                    F.col("_reasons"),
                    fired_codes(
                        F.when(continuing, F.lit("PLACEMENT_CONTINUES")),
                        F.when(placed, F.concat(F.lit("AGENCY:"), F.col("agency_id"))),
                        F.when(
                            F.col("unplaced_reason").isNotNull(),
                            F.concat(F.lit("UNPLACED:"), F.col("unplaced_reason")),
                        ),
                    ),
                ),
            )
            .withColumn("mode", F.when(placed, F.lit("OUTSOURCED")).otherwise(F.col("mode")))
            .withColumn(
                "owner_role",
                F.when(placed, F.lit("AGENCY"))
                .when(F.col("owner_role") == "AGENCY", F.lit("COLLECTOR"))
                .otherwise(F.col("owner_role")),
            )
            .drop("_placed", "unplaced_reason")
        )

    return transform


# --------------------------------------------------------------------------------------------
# Owners


def with_owners(officers: DataFrame) -> Transform:
    """Resolve `owner_role` to `owner_type` and `owner_id`.

    OFFICER: the loan's customer manager unless the officers extract says they left (離職).
    COLLECTOR / RISK_MANAGER: an active one at the nearest branch up the loan's branch path (the
    managing branch first, head office last), picked among several by a hash of the loan id.
    AGENCY: the placement's agency. When the wanted owner does not exist the case falls back,
    in the order of the lists below, and says so (OWNER_FALLBACK:<type>).
    """
    fallbacks = {
        "OFFICER": ("OFFICER", "COLLECTOR", "RISK_MANAGER"),
        "COLLECTOR": ("COLLECTOR", "OFFICER", "RISK_MANAGER"),
        "RISK_MANAGER": ("RISK_MANAGER", "COLLECTOR", "OFFICER"),
        "AGENCY": ("AGENCY", "COLLECTOR", "OFFICER", "RISK_MANAGER"),
    }

    def transform(cases: DataFrame) -> DataFrame:
        staff = (
            officers.where(F.col("active") & F.col("role").isin("COLLECTOR", "RISK_MANAGER"))
            .groupBy("branch_id", "role")
            .agg(F.array_sort(F.collect_set("officer_id")).alias("_ids"))
        )
        nearest = (
            cases.select("loan_id", F.posexplode("branch_path").alias("_pos", "branch_id"))
            .join(F.broadcast(staff), "branch_id")
            .groupBy("loan_id")
            .agg(
                *[
                    F.max_by(
                        F.when(F.col("role") == role, F.col("_ids")), F.when(F.col("role") == role, F.col("_pos"))
                    ).alias(f"_{role}")
                    for role in ("COLLECTOR", "RISK_MANAGER")
                ]
            )
        )

        def pick(ids: Column) -> Column:
            index = F.pmod(F.xxhash64("loan_id"), F.size(ids)) + 1
            return F.when(F.size(ids) > 0, F.element_at(ids, index.cast("int")))

        left = officers.where(~F.col("active")).select("officer_id", F.lit(True).alias("_left"))
        candidates = {
            "OFFICER": F.when(F.col("_left").isNull(), F.col("officer_id")),
            "COLLECTOR": pick(F.col("_COLLECTOR")),
            "RISK_MANAGER": pick(F.col("_RISK_MANAGER")),
            "AGENCY": F.col("agency_id"),
        }
        owner_type: Any = F
        owner_id: Any = F
        for role, chain in fallbacks.items():
            for option in chain:
                found = (F.col("owner_role") == role) & candidates[option].isNotNull()
                owner_type = owner_type.when(found, F.lit(option))
                owner_id = owner_id.when(found, candidates[option])
        resolved = (
            cases.join(nearest, "loan_id", "left")
            .join(F.broadcast(left), "officer_id", "left")
            .withColumn("owner_type", owner_type.otherwise(F.lit("UNASSIGNED")))
            .withColumn("owner_id", owner_id)
        )
        fallback = F.col("owner_type") != F.col("owner_role")
        return resolved.withColumn(
            "_reasons",
            F.concat(
                F.col("_reasons"),
                fired_codes(F.when(fallback, F.concat(F.lit("OWNER_FALLBACK:"), F.col("owner_type")))),
            ),
        ).drop("_COLLECTOR", "_RISK_MANAGER", "_left")

    return transform


def finish_cases(as_of: dt.date, limits: ConductLimits) -> Transform:
    """Render the actions within the conduct limits and select the collection_cases columns."""
    clip = enforce_conduct(limits)

    def transform(cases: DataFrame) -> DataFrame:
        breaches = F.col("conduct_hours_breaches") + F.col("conduct_attempt_breaches")
        reasons = F.concat(
            F.col("_reasons"),
            fired_codes(
                F.when(
                    F.col("conduct_hours_breaches") > 0,
                    F.concat(F.lit("CONDUCT_HOURS_BREACH:"), F.col("conduct_hours_breaches")),
                ),
                F.when(
                    F.col("conduct_attempt_breaches") > 0,
                    F.concat(F.lit("CONDUCT_ATTEMPTS_BREACH:"), F.col("conduct_attempt_breaches")),
                ),
            ),
        )
        columns = {
            "as_of_date": F.lit(as_of),
            "overdue_amount": overdue_amount(),
            "actions": clip(F.col("_raw_actions")),
            "reasons": F.array_compact(reasons),
            "conduct_breaches": breaches.cast("int"),
        }
        out = cases.withColumns(columns)
        return out.select(*contract_columns(COLLECTION_CASES))

    return transform


# --------------------------------------------------------------------------------------------
# The stage


def check_overrides(config: AppConfig) -> None:
    """A tier-1 branch or product may only select a profile that exists."""
    section: CollectionsConfig = config.section("collections")
    for i, rule in enumerate(config.overrides):
        value = rule.set.get("collections.strategy_profile")
        if value is not None and value not in section.profiles:
            raise ConfigError(
                "postloan.yaml",
                f"overrides[{i}].set.collections.strategy_profile",
                f"{value!r} is not one of {', '.join(sorted(section.profiles))}",
            )


def max_reminder_days(config: AppConfig) -> int:
    section: CollectionsConfig = config.section("collections")
    values = [section.reminder_days_before_due]
    values += [
        int(r.set["collections.reminder_days_before_due"])
        for r in config.overrides
        if "collections.reminder_days_before_due" in r.set
    ]
    return max(values)


def previous_business_date(as_of: dt.date, previous_as_of: dt.date | None) -> dt.date:
    """The date the last run covered: the previous run's, or the day before on the first run."""
    if previous_as_of is not None and previous_as_of < as_of:
        return previous_as_of
    return as_of - dt.timedelta(days=1)


def build_collections(ctx: StageContext) -> dict[Table, DataFrame]:
    """collections stage: agency_placements, collection_cases and agency_scorecard for ctx.as_of.

    Runs Spark jobs while it builds the frames: the cases and the placements are materialized once
    (localCheckpoint), and the allocation collects its class counts and the agencies.
    """
    config = ctx.config
    section: CollectionsConfig = config.section("collections")
    check_overrides(config)
    as_of = ctx.as_of
    since = previous_business_date(as_of, ctx.previous_as_of)
    tables = ctx.tables
    actions = tables["collection_actions"]
    book = ctx.snapshot.select(*SNAPSHOT_COLUMNS).transform(with_params(ctx.params))

    rule_cases = book.transform(
        assess_cases(as_of, since, section, actions, tables["risk_signals"], tables.get("guarantors"))
    )
    reminders = book.transform(
        reminder_cases(
            as_of, since, max_reminder_days(config), section.reminder, tables["schedule"], tables["repayments"]
        )
    )
    # A loan with a rule case at DPD 0 (a DOUBTFUL loan in legal recovery) gets no reminder.
    rule_first = Window.partitionBy("loan_id").orderBy((F.col("mode") == "REMINDER").asc())
    # The cases feed the allocation and the task list, the placements feed the task list and the
    # scorecard: each is computed once (localCheckpoint). Spark plans a DataFrame once per
    # reference, and a persisted frame is not substituted on both sides of a self-join.
    cases = (
        rule_cases.unionByName(reminders)
        .withColumn("_nth", F.row_number().over(rule_first))
        .where(F.col("_nth") == 1)
        .drop("_nth")
        .transform(materialize)
    )

    placements = build_placements(
        as_of,
        section.allocation,
        cases=cases.select(*SNAPSHOT_COLUMNS, "mode", "signal_types"),
        book=book.select("loan_id", "dpd"),
        agencies=tables["agencies"],
        repayments=tables["repayments"],
        loans=tables["loans"],
        previous=ctx.previous(AGENCY_PLACEMENTS),
    ).transform(materialize)
    final_cases = (
        cases.transform(with_placements(placements))
        .transform(with_owners(tables["officers"]))
        .transform(with_conduct_breaches(since, as_of, actions, section.conduct))
        .transform(finish_cases(as_of, section.conduct))
    )
    scorecard = agency_scorecard(
        as_of, section.allocation, placements, tables["agencies"], tables["repayments"], actions
    )
    return {AGENCY_PLACEMENTS: placements, COLLECTION_CASES: final_cases, AGENCY_SCORECARD: scorecard}


__all__ = [
    "SNAPSHOT_COLUMNS",
    "assess_cases",
    "build_collections",
    "enforce_conduct",
    "finish_cases",
    "match_strategy",
    "reminder_cases",
    "rule_condition",
    "with_conduct_breaches",
    "with_contact_facts",
    "with_owners",
    "with_placements",
    "with_signals",
]
