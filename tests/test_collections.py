"""Collections strategy, agency allocation, recall/rotation and the scorecard (DOMAIN.md section 4).

Hand-made frames; every expected value is worked out in the test. Business date 2026-06-15
(a Monday), previous run 2026-06-14, unless a test says otherwise. The suite shares two cores:
the quota planner is tested in plain Python, and each Spark scenario is built and collected once
(module fixtures) and then asserted on by several tests.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from jobs.allocation import (
    Candidate,
    ClassDemand,
    agency_scorecard,
    allocate,
    class_weights,
    plan_quotas,
    retention_cutoff,
    water_fill,
)
from jobs.collections import (
    SNAPSHOT_COLUMNS,
    assess_cases,
    build_collections,
    enforce_conduct,
    reminder_cases,
    with_conduct_breaches,
    with_owners,
)
from jobs.config import AppConfig, ConfigError, load_config
from jobs.params import params_frame, with_params
from jobs.sections.collections import (
    ActionSpec,
    AllocationConfig,
    CaseRule,
    CollectionsConfig,
    ConductLimits,
    StrategyProfile,
)
from jobs.stages import StageContext
from schemas.base import Table
from schemas.collections import AGENCY_PLACEMENTS, AGENCY_SCORECARD, COLLECTION_CASES
from schemas.lake import LOAN_SNAPSHOT
from schemas.landing import (
    AGENCIES,
    COLLECTION_ACTIONS,
    GUARANTORS,
    LOANS,
    OFFICERS,
    REPAYMENTS,
    RISK_SIGNALS,
    SCHEDULE,
)

D = dt.date
AS_OF = D(2026, 6, 15)
YESTERDAY = D(2026, 6, 14)
CFG = CollectionsConfig()
ALLOC = CFG.allocation


def money(x: str | int) -> Decimal:
    return Decimal(str(x)).quantize(Decimal("0.01"))


def frame(spark: SparkSession, table: Table, rows: list[dict[str, Any]]) -> DataFrame:
    """Rows of a table contract; missing keys are null."""
    return spark.createDataFrame([tuple(r.get(c) for c in table.names) for r in rows], table.schema)


SNAPSHOT_SCHEMA = T.StructType([LOAN_SNAPSHOT.column(c).field() for c in SNAPSHOT_COLUMNS])


def loan(loan_id: str, dpd: int = 0, overdue: str | int = "0", **fields: Any) -> dict[str, Any]:
    """A loan of branch SUB1 (under T1, under HQ) in region R1; overdue is all principal."""
    row: dict[str, Any] = {
        "loan_id": loan_id,
        "borrower_id": f"B-{loan_id}",
        "branch_id": "SUB1",
        "branch_path": ["HQ", "T1", "SUB1"],
        "tier1_branch_id": "T1",
        "product_code": "P1",
        "officer_id": "CM1",
        "region_code": "R1",
        "dpd": dpd,
        "bucket": "M0" if dpd == 0 else f"M{min((dpd + 29) // 30, 7)}",
        "risk_class": "NORMAL" if dpd == 0 else "SPECIAL_MENTION" if dpd <= 90 else "SUBSTANDARD",
        "overdue_principal": money(overdue),
        "overdue_interest": money(0),
        "outstanding_principal": money(100_000),
    }
    row.update(fields)
    if "overdue_principal" in fields:
        row["overdue_principal"] = money(fields["overdue_principal"])
    return row


def snapshot(spark: SparkSession, rows: list[dict[str, Any]]) -> DataFrame:
    return spark.createDataFrame([tuple(r[c] for c in SNAPSHOT_COLUMNS) for r in rows], SNAPSHOT_SCHEMA)


def params(spark: SparkSession, profiles: dict[str | None, str], reminder_days: int = 3) -> DataFrame:
    """Resolved parameters per tier-1 branch (product P1): the profile each branch runs."""
    return spark.createDataFrame(
        [(t1, "P1", p, reminder_days, True, money(0)) for t1, p in profiles.items()],
        "tier1_branch_id string, product_code string, collections__strategy_profile string, "
        "collections__reminder_days_before_due int, collections__missed_due_call boolean, "
        "delinquency__tolerance_amount decimal(18,2)",
    )


def empty(spark: SparkSession, table: Table) -> DataFrame:
    return spark.createDataFrame([], table.schema)


def at(day: dt.date, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, hour, minute)


# ------------------------------------------------------------------------------------------------
# Quota planning on the (class, agency) matrix: plain Python, no Spark


def candidate(agency: str, regions: str, free: int, rate: float | None = None) -> Candidate:
    return Candidate(agency, tuple(regions.split(",")), free, rate, rate is None)


def test_worked_example_quotas() -> None:
    # docs/collections.md, "A worked example": ten cases in one region.
    # Weights: challenger C gets the challenger share 0.2; champions A (rate 0.30) and B (0.10)
    # share 0.8 by rate: A 0.6, B 0.2. Targets of 10: A 6, B 2, C 2, but A can take only 4:
    # water-filling saturates A at 4 and splits the other 6 between B and C by weight (1:1).
    pool = [candidate("A", "W", 4, 0.30), candidate("B", "W", 10, 0.10), candidate("C", "W", 10)]
    assert class_weights(pool, 0.2, 0.01) == {"A": 600_000, "B": 200_000, "C": 200_000}
    assert plan_quotas([ClassDemand("W|", "W", (), 10)], pool, ALLOC) == {
        ("W|", "A"): 4,
        ("W|", "B"): 3,
        ("W|", "C"): 3,
    }
    # 26 cases for 24 places: every agency full, two left over.
    assert plan_quotas([ClassDemand("W|", "W", (), 26)], pool, ALLOC) == {
        ("W|", "A"): 4,
        ("W|", "B"): 10,
        ("W|", "C"): 10,
    }


def test_water_filling_never_exceeds_a_cap() -> None:
    # At the edge: exactly the capacity, one more than it, and random caps and weights.
    assert water_fill(5, {"A": 3, "B": 2}, {"A": 1, "B": 1}) == {"A": 3, "B": 2}
    assert water_fill(6, {"A": 3, "B": 2}, {"A": 1, "B": 1}) == {"A": 3, "B": 2}
    assert water_fill(4, {"A": 3, "B": 2}, {"A": 1, "B": 1}) == {"A": 2, "B": 2}
    assert water_fill(3, {"A": 3, "B": 0}, {"A": 1, "B": 9}) == {"A": 3, "B": 0}
    draw = random.Random(7)
    for _ in range(500):
        agencies = [f"G{i}" for i in range(draw.randint(1, 6))]
        caps = {a: draw.randint(0, 30) for a in agencies}
        weights = {a: draw.randint(1, 1_000_000) for a in agencies}
        cases = draw.randint(0, 120)
        got = water_fill(cases, caps, weights)
        assert sum(got.values()) == min(cases, sum(caps.values()))
        assert all(0 <= got[a] <= caps[a] for a in agencies)


def test_shared_capacity_goes_where_there_is_no_other_choice() -> None:
    # R1: 7 cases, A (R1) 3 free, B (R1 and R2) 2 free; R2: 1 case, B or C (R2) 1 free.
    # R1 can use at most 5; the fitting gives B's capacity to R1 (which has no one else) and
    # R2's case to C: 6 placed, the most possible, and nobody over capacity.
    pool = [candidate("A", "R1", 3, 0.2), candidate("B", "R1,R2", 2, 0.2), candidate("C", "R2", 1, 0.2)]
    quotas = plan_quotas([ClassDemand("R1|", "R1", (), 7), ClassDemand("R2|", "R2", (), 1)], pool, ALLOC)
    assert quotas == {("R1|", "A"): 3, ("R1|", "B"): 2, ("R2|", "C"): 1}


def test_excluded_agencies_get_no_quota() -> None:
    # Cases held recently by A form their own class; only B may take them.
    pool = [candidate("A", "R1", 10, 0.5), candidate("B", "R1", 10, 0.1)]
    quotas = plan_quotas([ClassDemand("R1|", "R1", (), 4), ClassDemand("R1|A", "R1", ("A",), 3)], pool, ALLOC)
    assert quotas[("R1|A", "B")] == 3 and ("R1|A", "A") not in quotas
    # A champion weight 0.5 vs 0.1: of R1's 4 cases, 5:1 -> 3.33 and 0.67 -> A 3, B 1.
    assert (quotas[("R1|", "A")], quotas[("R1|", "B")]) == (3, 1)


def test_challengers_get_their_share_of_many_cases() -> None:
    # 2,000 cases over two regions; champions CH1 (0.3) and CH2 (0.1), challengers N1 and N2.
    # Per region of 1,000: challengers 20% = 200 (100 each), champions 800 at 3:1 = 600 and 200.
    pool = [
        candidate("CH1", "R1,R2", 5000, 0.3),
        candidate("CH2", "R1,R2", 5000, 0.1),
        candidate("N1", "R1,R2", 5000),
        candidate("N2", "R1,R2", 5000),
    ]
    quotas = plan_quotas([ClassDemand("R1|", "R1", (), 1000), ClassDemand("R2|", "R2", (), 1000)], pool, ALLOC)
    per_agency: dict[str, int] = {}
    for (_, agency), q in quotas.items():
        per_agency[agency] = per_agency.get(agency, 0) + q
    assert per_agency == {"CH1": 1200, "CH2": 400, "N1": 200, "N2": 200}


# ------------------------------------------------------------------------------------------------
# Allocation in Spark: quotas become slots, slots become cases


DEMAND_SCHEMA = "loan_id string, region_code string, amount decimal(18,2), _band int, excluded_agencies array<string>"
POOL_SCHEMA = "agency_id string, regions array<string>, free int, rate double, challenger boolean"


def test_allocation_of_cases_worked_example_eligibility_and_capacity_edge(spark: SparkSession) -> None:
    # Region W: the worked example (A 4, B 3, C 3 over ten cases 100k..10k). Slots at (j + 1/2) / q:
    # A .125 .375 .625 .875, B and C .167 .5 .833 -> A B C A B C A B C A over the cases by amount.
    # Region E: Z has 2 places for 3 cases: the two largest are placed, the smallest NO_CAPACITY.
    # Regions R1/R2 (P serves R1, Q serves R1 and R2): X1 held recently by P -> Q; X2 in R2 -> Q;
    # X3 in R3 nobody serves; X4 has no region; X5 was held recently by both P and Q.
    rows = [(f"L{i:02d}", "W", (11 - i) * 10_000, []) for i in range(1, 11)]
    rows += [("E1", "E", 300, []), ("E2", "E", 200, []), ("E3", "E", 100, [])]
    rows += [
        ("X1", "R1", 100, ["P"]),
        ("X2", "R2", 100, []),
        ("X3", "R3", 100, []),
        ("X4", None, 100, []),
        ("X5", "R1", 100, ["P", "Q"]),
    ]
    cases = spark.createDataFrame([(lid, r, money(a), 1, ex) for lid, r, a, ex in rows], DEMAND_SCHEMA)
    pool = spark.createDataFrame(
        [
            ("A", ["W"], 4, 0.30, False),
            ("B", ["W"], 10, 0.10, False),
            ("C", ["W"], 10, None, True),
            ("Z", ["E"], 2, None, True),
            ("P", ["R1"], 5, 0.9, False),
            ("Q", ["R1", "R2"], 5, 0.1, False),
        ],
        POOL_SCHEMA,
    )
    got = {
        r["loan_id"]: (r["agency_id"], r["unplaced_reason"])
        for r in cases.transform(allocate(AS_OF, pool, ALLOC)).collect()
    }
    expected = {f"L{i:02d}": (a, None) for i, a in enumerate("ABCABCABCA", start=1)}
    expected |= {"E1": ("Z", None), "E2": ("Z", None), "E3": (None, "NO_CAPACITY")}
    expected |= {
        "X1": ("Q", None),
        "X2": ("Q", None),
        "X3": (None, "NO_AGENCY_FOR_REGION"),
        "X4": (None, "NO_REGION"),
        "X5": (None, "ROTATION_EXHAUSTED"),
    }
    assert got == expected
    # Amounts: A 100+70+40+10 = 220k on 4 cases, B 90+60+30 = 180k on 3, C 80+50+20 = 150k on 3.


def test_champion_challenger_split_of_2000_cases_in_spark_and_reruns_agree(spark: SparkSession) -> None:
    # 2,000 cases over two regions, amounts 1..2000 x 10. Champions CH1 (rate 0.3) and CH2 (0.1),
    # challengers N1 and N2 (no history); plenty of capacity. Expected per region of 1,000:
    # challengers 20% = 200 (100 each), champions 800 by rate 3:1 = 600 and 200.
    # Tolerance: 1% of the cases (rounding is at most one case per agency and region).
    cases = spark.range(1, 2001).select(
        F.format_string("C%04d", "id").alias("loan_id"),
        F.when(F.col("id") % 2 == 0, "R1").otherwise("R2").alias("region_code"),
        (F.col("id") * 10).cast("decimal(18,2)").alias("amount"),
        (F.col("id") % 3).cast("int").alias("_band"),
        F.array().cast("array<string>").alias("excluded_agencies"),
    )
    pool = spark.createDataFrame(
        [
            ("CH1", ["R1", "R2"], 5000, 0.3, False),
            ("CH2", ["R1", "R2"], 5000, 0.1, False),
            ("N1", ["R1", "R2"], 5000, None, True),
            ("N2", ["R1", "R2"], 5000, None, True),
        ],
        POOL_SCHEMA,
    )
    first = cases.transform(allocate(AS_OF, pool, ALLOC)).select("loan_id", "agency_id")
    # A rerun on differently partitioned input gives the same placements.
    second = cases.repartition(3).transform(allocate(AS_OF, pool, ALLOC)).select("loan_id", "agency_id")
    rows = first.collect()
    assert sorted(rows) == sorted(second.collect())
    stats: dict[str, list[Decimal]] = {}
    amounts = {r["loan_id"]: Decimal(int(r["loan_id"][1:]) * 10) for r in rows}
    for r in rows:
        stats.setdefault(r["agency_id"], []).append(amounts[r["loan_id"]])
    counts = {a: len(v) for a, v in stats.items()}
    tolerance = 20
    assert abs(counts["N1"] + counts["N2"] - 400) <= tolerance
    assert abs(counts["CH1"] - 1200) <= tolerance and abs(counts["CH2"] - 400) <= tolerance
    assert sum(counts.values()) == 2000
    # Balanced by amount within the weights: each agency's mean case within 5% of the overall mean.
    overall = sum(amounts.values()) / 2000
    for values in stats.values():
        assert abs(sum(values) / len(values) / overall - 1) < Decimal("0.05")


# ------------------------------------------------------------------------------------------------
# Strategy profiles and the conduct limits on generated actions: one book, three branches
#   TW runs the Wuhan rules, TA the ABC rules (an override of strategy_profile), TG a profile
#   that asks for more than the conduct limits allow.

GREEDY = StrategyProfile(
    rules=(
        CaseRule(
            "GREEDY",
            owner="COLLECTOR",
            actions=(
                ActionSpec(
                    "PHONE", ("BORROWER", "GUARANTOR", "THIRD_PARTY"), attempts_per_day=10, start_hour=6, end_hour=23
                ),
                ActionSpec("SMS", ("BORROWER", "THIRD_PARTY"), attempts_per_day=3, start_hour=9, end_hour=12),
                ActionSpec("PHONE", ("BORROWER",), start_hour=22, end_hour=24),  # nothing left after clipping
            ),
        ),
    )
)
STRATEGY_CONFIG = dataclasses.replace(CFG, profiles={**CFG.profiles, "greedy": GREEDY})


@pytest.fixture(scope="module")
def strategy(spark: SparkSession) -> dict[str, Any]:
    abc = {"tier1_branch_id": "TA", "branch_path": ["HQ", "TA", "SUB1"]}
    greedy = {"tier1_branch_id": "TG", "branch_path": ["HQ", "TG", "SUB1"]}
    book = snapshot(
        spark,
        [
            loan("W1", 1, 500),  # T+1: M1 phone twice a day; fell due since yesterday
            loan("W2", 10, 500),  # after T+3: all contacts
            loan("W3", 10, 60_000),  # >= 50,000 overdue: field visit by the customer manager
            loan("W4", 12, 500),  # 5 days called, never reached: lost contact -> field visit
            loan("W5", 20, 60_000),  # two failed visits at >= 50,000: outsourced early
            loan("W6", 31, 500),  # >= 31 DPD: outsourced
            loan("W7", 0, 0, risk_class="DOUBTFUL"),  # DOUBTFUL: legal recovery even at 0 DPD
            loan("W8", 5, 500),  # fraud signal on the loan: legal
            loan("W9", 0, 0),  # current: no case
            loan("A1", 1, 500, **abc),  # <= 60: SMS, phone, letter
            loan("A2", 60, 500, **abc),
            loan("A3", 61, 500, **abc),  # 61-90: meeting, field visit
            loan("A4", 90, 500, **abc),
            loan("A5", 91, 500, **abc),  # > 90: legal
            loan("A6", 0, 0, risk_class="DOUBTFUL", **abc),  # DOUBTFUL: legal
            loan("A7", 45, 60_000, **abc),  # ABC has no outsourcing and no amount rule
            loan("G1", 10, 500, **greedy),  # has a guarantor
            loan("G2", 10, 500, **greedy),  # has none
        ],
    ).transform(with_params(params(spark, {"T1": "wuhan", "TA": "abc", "TG": "greedy"})))
    recorded = [
        {
            "action_id": f"A{d}",
            "loan_id": "W4",
            "action_type": "PHONE",
            "action_time": at(D(2026, 6, d), 10),
            "contact_type": "BORROWER",
            "outcome": "NO_ANSWER",
        }
        for d in range(10, 15)  # five days, 10-14 June, all unanswered
    ] + [
        {
            "action_id": f"V{i}",
            "loan_id": "W5",
            "action_type": "FIELD_VISIT",
            "action_time": at(D(2026, 6, d), 15),
            "contact_type": "BORROWER",
            "outcome": "VISIT_FAILED",
        }
        for i, d in enumerate((5, 12))
    ]
    signals = frame(
        spark,
        RISK_SIGNALS,
        [
            {
                "signal_id": "S1",
                "loan_id": "W8",
                "borrower_id": "B-W8",
                "signal_type": "FRAUD",
                "severity": "MAJOR",
                "signal_date": D(2026, 6, 1),
            }
        ],
    )
    guarantors = frame(spark, GUARANTORS, [{"guarantor_id": "G", "loan_id": "G1", "name": "x", "id_number": "y"}])
    cases = book.transform(
        assess_cases(AS_OF, YESTERDAY, STRATEGY_CONFIG, frame(spark, COLLECTION_ACTIONS, recorded), signals, guarantors)
    ).withColumn("actions", enforce_conduct(STRATEGY_CONFIG.conduct)(F.col("_raw_actions")))
    return {r["loan_id"]: r for r in cases.collect()}


def test_wuhan_profile_stages(strategy: dict[str, Any]) -> None:
    got = {k: (r["stage"], r["mode"], r["owner_role"]) for k, r in strategy.items() if k.startswith("W")}
    assert got == {
        "W1": ("M1_PHONE_T3", "IN_HOUSE", "COLLECTOR"),
        "W2": ("M1_PHONE_ALL_CONTACTS", "IN_HOUSE", "COLLECTOR"),
        "W3": ("FIELD_VISIT", "IN_HOUSE", "OFFICER"),
        "W4": ("LOST_CONTACT_VISIT", "IN_HOUSE", "OFFICER"),
        "W5": ("EARLY_OUTSOURCED", "OUTSOURCED", "AGENCY"),
        "W6": ("OUTSOURCED", "OUTSOURCED", "AGENCY"),
        "W7": ("LEGAL_RECOVERY", "LEGAL", "RISK_MANAGER"),
        "W8": ("LEGAL_SEVERE_SIGNAL", "LEGAL", "RISK_MANAGER"),
    }
    w4, w5 = strategy["W4"], strategy["W5"]
    assert (w4["lost_contact"], w4["unreachable_days"], w5["failed_visits"]) == (True, 5, 2)
    assert "LOST_CONTACT" in w4["_reasons"] and "FAILED_VISITS:2" in w5["_reasons"]


def test_day_after_the_missed_due_date_gets_a_call(strategy: dict[str, Any]) -> None:
    # W1 and A1 fell past due since yesterday's run; W2 did not. Both rules already call the
    # borrower, so no call is added (W1: twice a day; A1: the ABC phone call once).
    assert ["MISSED_DUE_CALL" in strategy[k]["_reasons"] for k in ("W1", "A1", "W2")] == [True, True, False]
    assert [(a["action_type"], a["attempts"]) for a in strategy["W1"]["actions"]] == [("PHONE", 2)]


def test_abc_profile_stages_and_per_branch_profile(strategy: dict[str, Any]) -> None:
    got = {k: (r["strategy_profile"], r["stage"], r["mode"]) for k, r in strategy.items() if k.startswith("A")}
    assert got == {
        "A1": ("abc", "SMS_PHONE_LETTER", "IN_HOUSE"),
        "A2": ("abc", "SMS_PHONE_LETTER", "IN_HOUSE"),
        "A3": ("abc", "MEETING_FIELD_VISIT", "IN_HOUSE"),
        "A4": ("abc", "MEETING_FIELD_VISIT", "IN_HOUSE"),
        "A5": ("abc", "LEGAL_RECOVERY", "LEGAL"),
        "A6": ("abc", "LEGAL_RECOVERY", "LEGAL"),
        "A7": ("abc", "SMS_PHONE_LETTER", "IN_HOUSE"),
    }
    assert [a["action_type"] for a in strategy["A1"]["actions"]] == ["SMS", "PHONE", "LETTER"]
    # The same 45 DPD at the Wuhan branch is outsourced (W6 above); here it stays in-house.
    assert strategy["W6"]["strategy_profile"] == "wuhan"


def test_generated_actions_are_clipped_to_the_conduct_limits(strategy: dict[str, Any]) -> None:
    # Asked: 10 calls 06:00-23:00 to every contact; SMS to a third party; a call at 22:00-24:00.
    # Got: 6 attempts 08:00-22:00; third party by phone only, to locate the borrower; the late
    # call dropped; the guarantor only where the loan has one.
    day = ("08:00", "22:00")
    g1 = [tuple(a) for a in strategy["G1"]["actions"]]
    assert g1 == [
        ("PHONE", "BORROWER", "COLLECT", 6, *day, ""),
        ("PHONE", "GUARANTOR", "COLLECT", 6, *day, ""),
        ("PHONE", "THIRD_PARTY", "LOCATE_BORROWER", 6, *day, ""),
        ("SMS", "BORROWER", "COLLECT", 3, "09:00", "12:00", ""),
    ]
    assert [tuple(a) for a in strategy["G2"]["actions"]] == [g1[0], g1[2], g1[3]]
    # The shipped profiles are within the limits already: every window 08:00-22:00, at most 2.
    for r in strategy.values():
        for a in r["actions"]:
            assert a["window_start"] >= "08:00" and a["window_end"] <= "22:00" and a["attempts"] <= 6
            assert a["purpose"] == ("LOCATE_BORROWER" if a["contact_type"] == "THIRD_PARTY" else "COLLECT")


# ------------------------------------------------------------------------------------------------
# Recorded conduct, reminders, owners


def test_recorded_actions_outside_the_limits_are_counted(spark: SparkSession) -> None:
    # Since yesterday's run: a call at 22:30 and one at 07:59 (2 hours breaches); 8 calls to the
    # borrower on 15 June (2 over the 6 allowed); a call on 14 June is before the window.
    records = [
        {"loan_id": "L1", "action_time": at(AS_OF, 22, 30), "contact_type": "BORROWER"},
        {"loan_id": "L1", "action_time": at(AS_OF, 7, 59), "contact_type": "GUARANTOR"},
        *[{"loan_id": "L2", "action_time": at(AS_OF, 9 + i), "contact_type": "BORROWER"} for i in range(8)],
        {"loan_id": "L2", "action_time": at(AS_OF, 12), "contact_type": "GUARANTOR"},
        {"loan_id": "L3", "action_time": at(YESTERDAY, 23), "contact_type": "BORROWER"},
    ]
    actions = frame(
        spark,
        COLLECTION_ACTIONS,
        [{"action_id": f"A{i}", "action_type": "PHONE", "outcome": "NO_ANSWER", **r} for i, r in enumerate(records)],
    )
    loans = spark.createDataFrame([("L1",), ("L2",), ("L3",)], "loan_id string")
    got = loans.transform(with_conduct_breaches(YESTERDAY, AS_OF, actions, ConductLimits())).collect()
    assert {r["loan_id"]: (r["conduct_hours_breaches"], r["conduct_attempt_breaches"]) for r in got} == {
        "L1": (2, 0),
        "L2": (0, 2),
        "L3": (0, 0),
    }


def test_reminder_before_due_once_even_when_runs_skip_days(spark: SparkSession) -> None:
    # N = 3 days ahead. Run on 15 June after a run on 12 June: due dates in (15, 18] get one.
    # R1 due 18th, unpaid: reminded. R2 due 16th: reminded too (its day-3 run was skipped).
    # R3 due 19th: tomorrow's run. R4 due 18th but prepaid: nothing. R5 is past due: not a reminder.
    book = snapshot(spark, [loan("R1"), loan("R2"), loan("R3"), loan("R4"), loan("R5", 5, 100)]).transform(
        with_params(params(spark, {"T1": "wuhan"}))
    )
    schedule = spark.createDataFrame(
        [
            ("R1", 1, D(2026, 5, 18), money(100), money(0)),
            ("R1", 2, D(2026, 6, 18), money(100), money(0)),
            ("R2", 1, D(2026, 6, 16), money(100), money(0)),
            ("R3", 1, D(2026, 6, 19), money(100), money(0)),
            ("R4", 1, D(2026, 6, 18), money(100), money(0)),
            ("R5", 1, D(2026, 6, 17), money(100), money(0)),
        ],
        SCHEDULE.schema,
    )
    repayments = spark.createDataFrame(
        [("t1", "R1", D(2026, 5, 18), money(100)), ("t2", "R4", D(2026, 6, 1), money(100))], REPAYMENTS.schema
    )
    got = book.transform(reminder_cases(AS_OF, D(2026, 6, 12), 3, CFG.reminder, schedule, repayments))
    assert {r["loan_id"]: (r["reminder_due_date"], r["stage"], r["mode"]) for r in got.collect()} == {
        "R1": (D(2026, 6, 18), "PRE_DUE_REMINDER", "REMINDER"),
        "R2": (D(2026, 6, 16), "PRE_DUE_REMINDER", "REMINDER"),
    }


def test_owners_follow_the_branch_path_and_fall_back(spark: SparkSession) -> None:
    officers = frame(
        spark,
        OFFICERS,
        [
            {"officer_id": "CM1", "name": "a", "branch_id": "SUB1", "role": "CUSTOMER_MANAGER", "active": True},
            {"officer_id": "CM2", "name": "b", "branch_id": "SUB1", "role": "CUSTOMER_MANAGER", "active": False},
            {"officer_id": "COL1", "name": "c", "branch_id": "T1", "role": "COLLECTOR", "active": True},
            {"officer_id": "COL9", "name": "d", "branch_id": "T1", "role": "COLLECTOR", "active": False},
            {"officer_id": "RM1", "name": "e", "branch_id": "T1", "role": "RISK_MANAGER", "active": True},
            {"officer_id": "RM2", "name": "f", "branch_id": "SUB1", "role": "RISK_MANAGER", "active": True},
        ],
    )
    rows = [
        # loan, officer, branch path, wanted owner, agency
        ("O1", "CM1", ["HQ", "T1", "SUB1"], "OFFICER", None),  # the customer manager
        ("O2", "CM2", ["HQ", "T1", "SUB1"], "OFFICER", None),  # CM2 left: the T1 collector
        ("O3", "CM1", ["HQ", "T1", "SUB1"], "COLLECTOR", None),  # nearest active collector: COL1
        ("O4", "CM1", ["HQ", "T1", "SUB1"], "RISK_MANAGER", None),  # nearest: RM2 at SUB1, not RM1
        ("O5", "CM1", ["HQ", "T1", "SUB1"], "AGENCY", "AG1"),
        ("O6", "CM1", ["HQ", "T1", "SUB1"], "AGENCY", None),  # unplaced: collector
        ("O7", "CM2", ["HQ", "T2", "SUB2"], "OFFICER", None),  # left, nobody in T2: UNASSIGNED
    ]
    cases = spark.createDataFrame(
        [(*r, []) for r in rows],
        "loan_id string, officer_id string, branch_path array<string>, owner_role string, agency_id string, "
        "_reasons array<string>",
    )
    got = {
        r["loan_id"]: (r["owner_type"], r["owner_id"], list(r["_reasons"]))
        for r in cases.transform(with_owners(officers)).collect()
    }
    assert got == {
        "O1": ("OFFICER", "CM1", []),
        "O2": ("COLLECTOR", "COL1", ["OWNER_FALLBACK:COLLECTOR"]),
        "O3": ("COLLECTOR", "COL1", []),
        "O4": ("RISK_MANAGER", "RM2", []),
        "O5": ("AGENCY", "AG1", []),
        "O6": ("COLLECTOR", "COL1", ["OWNER_FALLBACK:COLLECTOR"]),
        "O7": ("UNASSIGNED", None, ["OWNER_FALLBACK:UNASSIGNED"]),
    }


# ------------------------------------------------------------------------------------------------
# Scorecard and fees


def test_scorecard_fees_rates_rank_and_elimination(spark: SparkSession) -> None:
    # Two agencies; 20 placements each so that both are judged (elimination_min_cases 20).
    # AG1: 20 x 1,000 placed 2026-05-10 (band M2, 12%), recovers 4,000 in June (4 of them paid
    # 1,000 on 5 June) and 1,000 in May (one paid 20 May). 2 were cured in June.
    # AG2: 20 x 1,000 placed 2026-06-02 (band M3, 18%; AG2's own M3 rate 15%), recovers 100 on 10 June.
    # June: AG1 4,000 / 20,000 = 0.2; AG2 100 / 20,000 = 0.005; overall 4,100 / 40,000 = 0.1025.
    # AG2 is below the floor 0.02: flagged. May: AG1 1,000 / 20,000 = 0.05, AG2 holds nothing.
    config = dataclasses.replace(ALLOC, agency_fee_rates={"AG2": {"M3": Decimal("0.15")}})
    rows, pays = [], []
    for i in range(20):
        cured = i < 2
        rows.append(
            placement(
                f"A{i}",
                f"LA{i}",
                "AG1",
                D(2026, 5, 10),
                as_of_date=AS_OF,
                status="RECALLED" if cured else "ACTIVE",
                ended_date=D(2026, 6, 5) if cured else None,
                recall_reason="CURED" if cured else None,
            )
        )
        rows.append(
            placement(f"B{i}", f"LB{i}", "AG2", D(2026, 6, 2), as_of_date=AS_OF, fee_band="M3", dpd_at_placement=70)
        )
    pays += [(f"p{i}", f"LA{i}", D(2026, 6, 5), money(1000)) for i in range(4)]
    pays += [("pm", "LA9", D(2026, 5, 20), money(1000)), ("pb", "LB0", D(2026, 6, 10), money(100))]
    pays += [("early", "LB1", D(2026, 6, 2), money(999))]  # on the placement date: not credited
    agencies = frame(
        spark,
        AGENCIES,
        [
            {"agency_id": "AG1", "name": "One", "region_codes": "R1", "capacity": 50, "status": "ACTIVE"},
            {"agency_id": "AG2", "name": "Two", "region_codes": "R1", "capacity": 50, "status": "ACTIVE"},
        ],
    )
    actions = frame(
        spark,
        COLLECTION_ACTIONS,
        [
            {
                "action_id": f"X{i}",
                "loan_id": f"LA{i}",
                "action_type": "PHONE",
                "action_time": at(D(2026, 6, 3), 10),
                "contact_type": "BORROWER",
                "outcome": "CONTACTED",
                "agency_id": "AG1",
            }
            for i in range(10)
        ],
    )
    card = agency_scorecard(
        AS_OF,
        config,
        frame(spark, AGENCY_PLACEMENTS, rows),
        agencies,
        spark.createDataFrame(pays, REPAYMENTS.schema),
        actions,
    )
    columns = [
        "month",
        "agency_id",
        "settled",
        "cases_placed",
        "cases_held",
        "recovered_amount",
        "recovery_rate",
        "cured_cases",
        "cure_rate",
        "coverage_rate",
        "fee_amount",
        "rank",
        "flagged_for_elimination",
        "elimination_reason",
    ]
    got = {(r["month"], r["agency_id"]): tuple(r[c] for c in columns[2:]) for r in card.select(*columns).collect()}
    rate = Decimal
    assert got == {
        (JUNE1, "AG1"): (
            False,
            0,
            20,
            money(4000),
            rate("0.200000"),
            2,
            rate("0.100000"),
            rate("0.500000"),
            money(480),
            1,
            False,
            None,
        ),
        (JUNE1, "AG2"): (
            False,
            20,
            20,
            money(100),
            rate("0.005000"),
            0,
            rate("0.000000"),
            rate("0.000000"),
            money(15),
            2,
            True,
            "BELOW_FLOOR_RATE",
        ),
        (MAY1, "AG1"): (
            True,
            20,
            20,
            money(1000),
            rate("0.050000"),
            0,
            rate("0.000000"),
            rate("0.000000"),
            money(120),
            1,
            False,
            None,
        ),
        (MAY1, "AG2"): (True, 0, 0, money(0), None, 0, None, None, money(0), None, False, None),
    }


# ------------------------------------------------------------------------------------------------
# The recall scenario (yesterday's placements, today's book) and the stage


def placement(pid: str, loan_id: str, agency: str, placed_on: dt.date, **fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "as_of_date": YESTERDAY,
        "placement_id": pid,
        "loan_id": loan_id,
        "borrower_id": f"B-{loan_id}",
        "branch_id": "SUB1",
        "branch_path": ["HQ", "T1", "SUB1"],
        "tier1_branch_id": "T1",
        "product_code": "P1",
        "region_code": "R1",
        "agency_id": agency,
        "status": "ACTIVE",
        "placed_date": placed_on,
        "expires_date": placed_on + dt.timedelta(days=90),
        "amount_at_placement": money(1000),
        "dpd_at_placement": 35,
        "fee_band": "M2",
        "challenger": True,
        "excluded_agencies": [],
        "recovered_amount": money(0),
    }
    row.update(fields)
    return row


MAY1, JUNE1 = D(2026, 5, 1), D(2026, 6, 1)


def recall_scenario(spark: SparkSession) -> dict[str, Any]:
    """Yesterday's placements, today's book and landing tables (wuhan rules for every loan)."""
    agencies = frame(
        spark,
        AGENCIES,
        [
            {"agency_id": "AG1", "name": "One", "region_codes": "R1, R2", "capacity": 10, "status": "ACTIVE"},
            {"agency_id": "AG2", "name": "Two", "region_codes": "R1", "capacity": 10, "status": "ACTIVE"},
            {"agency_id": "AG3", "name": "Three", "region_codes": "R1", "capacity": 10, "status": "SUSPENDED"},
            {"agency_id": "AG4", "name": "Four", "region_codes": "R2", "capacity": 1, "status": "ACTIVE"},
        ],
    )
    previous = frame(
        spark,
        AGENCY_PLACEMENTS,
        [
            placement("P-L1", "L1", "AG1", MAY1),  # L1 paid up today: CURED
            placement("P-L2", "L2", "AG1", MAY1),  # L2 is DOUBTFUL today: LEGAL
            placement("P-L3", "L3", "AG3", MAY1),  # AG3 suspended: AGENCY_SUSPENDED, placed anew
            placement("P-L4", "L4", "AG1", MAY1),  # fraud on the borrower: SEVERE_SIGNAL
            placement("P-L5", "L5", "AG2", D(2026, 3, 17)),  # expires 2026-06-15: EXPIRED, rotated
            placement("P-L6", "L6", "AG2", MAY1),  # paid off, not on the book: SETTLED
            placement("P-L7", "L7", "AG2", MAY1),  # still 40 DPD: continues
            placement("P-L8", "L8", "AG1", JUNE1),  # back to 20 DPD (in-house rule): continues
            placement("P-L9", "L9", "AG4", MAY1, region_code="R2"),  # oldest at AG4: continues
            placement("P-L10", "L10", "AG4", JUNE1, region_code="R2"),  # AG4 capacity 1: CAPACITY_REDUCED
            # Ended placements carried for the rotation look-back (180 days: from 2025-12-17).
            placement(
                "P-L11",
                "L11",
                "AG1",
                D(2025, 12, 1),
                status="EXPIRED",
                ended_date=D(2026, 3, 1),
                recall_reason="EXPIRED",
            ),
            placement(
                "P-L12a",
                "L12",
                "AG1",
                D(2026, 1, 1),
                status="RECALLED",
                ended_date=D(2026, 4, 1),
                recall_reason="CURED",
            ),
            placement(
                "P-L12b",
                "L12",
                "AG2",
                D(2026, 4, 20),
                status="RECALLED",
                ended_date=D(2026, 5, 1),
                recall_reason="CURED",
            ),
            placement(
                "P-L13",
                "L13",
                "AG1",
                D(2025, 8, 1),
                status="EXPIRED",
                ended_date=D(2025, 11, 1),
                recall_reason="EXPIRED",
            ),  # before the cutoff: dropped, no longer excludes AG1
            {
                **placement("ignored", "L15", "AG1", MAY1),
                "placement_id": None,
                "agency_id": None,
                "status": "UNPLACED",
                "unplaced_reason": "NO_CAPACITY",
            },  # yesterday's: recomputed
        ],
    )
    book = [
        loan("L1", 0),
        loan("L2", 95, 1000, risk_class="DOUBTFUL"),
        loan("L3", 40, 3000),
        loan("L4", 40, 1000),
        loan("L5", 120, 5000),
        loan("L7", 40, 1000),
        loan("L8", 20, 1000),
        loan("L9", 50, 1000, region_code="R2"),
        loan("L10", 50, 2000, region_code="R2"),
        loan("L11", 35, 1000),
        loan("L12", 35, 1000),
        loan("L13", 35, 4000),
        loan("L14", 35, 1000, region_code="R3"),
        loan("L16", 2, 300),
    ]
    signals = frame(
        spark,
        RISK_SIGNALS,
        [
            {
                "signal_id": "S1",
                "borrower_id": "B-L4",
                "signal_type": "FRAUD",
                "severity": "MAJOR",
                "signal_date": D(2026, 6, 10),
            }
        ],
    )
    loans = frame(
        spark,
        LOANS,
        [
            {
                "loan_id": "L6",
                "borrower_id": "B-L6",
                "product_code": "P1",
                "branch_id": "SUB1",
                "officer_id": "CM1",
                "principal": money(1000),
                "disbursement_date": D(2025, 1, 1),
                "maturity_date": D(2027, 1, 1),
                "repayment_method": "BULLET",
                "payment_mode": "AUTONOMOUS",
                "annual_rate": Decimal("0.05"),
                "collateral_type": "CREDIT",
                "status": "SETTLED",
                "closed_date": D(2026, 6, 15),
            }
        ],
    )
    return {"agencies": agencies, "previous": previous, "book": book, "signals": signals, "loans": loans}


def test_retention_cutoff_covers_lookback_window_and_previous_month() -> None:
    assert retention_cutoff(AS_OF, ALLOC) == D(2025, 12, 17)  # 180 days back
    short = dataclasses.replace(ALLOC, rotation_lookback_days=10, performance_window_days=10)
    assert retention_cutoff(AS_OF, short) == D(2026, 5, 1)  # the previous month, for the settlement


def test_config_refuses_unknown_profile_and_bad_limits(conf_dir: Path) -> None:
    with pytest.raises(ConfigError, match="strategy_profile"):
        CollectionsConfig(strategy_profile="nope")
    with pytest.raises(ConfigError, match="AGENCY owns exactly the OUTSOURCED rules"):
        CollectionsConfig(
            profiles={"x": StrategyProfile(rules=(CaseRule("S", mode="OUTSOURCED"),))}, strategy_profile="x"
        )
    with pytest.raises(ConfigError, match="challenger_share"):
        CollectionsConfig(allocation=AllocationConfig(challenger_share=1.5))
    config = load_config(conf_dir)
    assert config.section("collections") == CollectionsConfig()  # the file states the shipped defaults


def context(spark: SparkSession, config: AppConfig, s: dict[str, Any], previous: DataFrame | None) -> StageContext:
    officers = frame(
        spark,
        OFFICERS,
        [
            {"officer_id": "CM1", "name": "a", "branch_id": "SUB1", "role": "CUSTOMER_MANAGER", "active": True},
            {"officer_id": "COL1", "name": "c", "branch_id": "T1", "role": "COLLECTOR", "active": True},
            {"officer_id": "RM1", "name": "e", "branch_id": "T1", "role": "RISK_MANAGER", "active": True},
        ],
    )
    tables = {
        "agencies": s["agencies"],
        "loans": s["loans"],
        "risk_signals": s["signals"],
        "officers": officers,
        "collection_actions": empty(spark, COLLECTION_ACTIONS),
        "guarantors": empty(spark, GUARANTORS),
        "schedule": empty(spark, SCHEDULE),
        "repayments": spark.createDataFrame([("t1", "L1", D(2026, 6, 15), money(1000))], REPAYMENTS.schema),
    }
    snap = snapshot(spark, s["book"]).withColumn("as_of_date", F.lit(AS_OF))
    return StageContext(
        spark=spark,
        as_of=AS_OF,
        run_id="test",
        config=config,
        tables=tables,
        snapshot=snap,
        previous_as_of=YESTERDAY,
        previous=lambda table: previous if table is AGENCY_PLACEMENTS else None,
        history=lambda table, start, end: None,
        params=params_frame(spark, config, ["T1"], ["P1"]),
    )


# ------------------------------------------------------------------------------------------------
# The stage end to end: recall, rotation, carried state, cases, scorecard, rerun


@pytest.fixture(scope="module")
def stage(spark: SparkSession, conf_dir: Path) -> Iterator[dict[str, Any]]:
    """One run of the stage on the recall scenario, persisted output by output as the pipeline
    does (the cases and the scorecard then read the persisted placements), and a rerun."""
    config = load_config(conf_dir)
    s = recall_scenario(spark)
    out = {
        table: frame.persist() for table, frame in build_collections(context(spark, config, s, s["previous"])).items()
    }
    result = {
        "out": out,
        "placements": out[AGENCY_PLACEMENTS].collect(),
        "cases": {r["loan_id"]: r for r in out[COLLECTION_CASES].collect()},
        "scorecard": out[AGENCY_SCORECARD].collect(),
    }
    rerun = build_collections(context(spark, config, s, s["previous"]))[AGENCY_PLACEMENTS].persist()
    result["rerun"] = rerun.collect()
    yield result
    for frame in [*out.values(), rerun]:
        frame.unpersist()


def test_stage_outputs_follow_the_table_contracts(stage: dict[str, Any]) -> None:
    assert list(stage["out"]) == [AGENCY_PLACEMENTS, COLLECTION_CASES, AGENCY_SCORECARD]
    for table, result in stage["out"].items():
        assert [(f.name, f.dataType.simpleString()) for f in result.schema] == [
            (c.name, c.dtype.simpleString()) for c in table.columns
        ]
        assert table.columns[0].name == "as_of_date" and table.partition_by == ("as_of_date",)
        assert all(c.comment for c in table.columns)


def test_recall_triggers_rotation_and_carried_state(stage: dict[str, Any]) -> None:
    got = {
        (r["loan_id"], r["placement_id"]): (
            r["agency_id"],
            r["status"],
            r["ended_date"],
            r["recall_reason"],
            r["unplaced_reason"],
            tuple(r["excluded_agencies"]),
        )
        for r in stage["placements"]
    }
    new = f"P{AS_OF:%Y%m%d}-"
    assert got == {
        ("L1", "P-L1"): ("AG1", "RECALLED", AS_OF, "CURED", None, ()),
        ("L2", "P-L2"): ("AG1", "RECALLED", AS_OF, "LEGAL", None, ()),
        ("L3", "P-L3"): ("AG3", "RECALLED", AS_OF, "AGENCY_SUSPENDED", None, ()),
        ("L4", "P-L4"): ("AG1", "RECALLED", AS_OF, "SEVERE_SIGNAL", None, ()),
        ("L5", "P-L5"): ("AG2", "EXPIRED", AS_OF, "EXPIRED", None, ()),
        ("L6", "P-L6"): ("AG2", "RECALLED", AS_OF, "SETTLED", None, ()),
        ("L7", "P-L7"): ("AG2", "ACTIVE", None, None, None, ()),
        ("L8", "P-L8"): ("AG1", "ACTIVE", None, None, None, ()),
        ("L9", "P-L9"): ("AG4", "ACTIVE", None, None, None, ()),
        ("L10", "P-L10"): ("AG4", "RECALLED", AS_OF, "CAPACITY_REDUCED", None, ()),
        ("L11", "P-L11"): ("AG1", "EXPIRED", D(2026, 3, 1), "EXPIRED", None, ()),
        ("L12", "P-L12a"): ("AG1", "RECALLED", D(2026, 4, 1), "CURED", None, ()),
        ("L12", "P-L12b"): ("AG2", "RECALLED", D(2026, 5, 1), "CURED", None, ()),
        # New placements. Rotation: L5 held by AG2 -> AG1 (the only other R1 agency); L10 held by
        # AG4 -> AG1 (serves R2); L11 held by AG1 within 180 days -> AG2; L3 and L13: AG1 and AG2
        # are both challengers with equal weights: the tie goes to the lower agency id, AG1.
        ("L3", new + "L3"): ("AG1", "ACTIVE", None, None, None, ("AG3",)),
        ("L5", new + "L5"): ("AG1", "ACTIVE", None, None, None, ("AG2",)),
        ("L10", new + "L10"): ("AG1", "ACTIVE", None, None, None, ("AG4",)),
        ("L11", new + "L11"): ("AG2", "ACTIVE", None, None, None, ("AG1",)),
        ("L13", new + "L13"): ("AG1", "ACTIVE", None, None, None, ()),
        # L4 is LEGAL (severe signal rule), not outsourced. L12: both R1 agencies held it.
        ("L12", None): (None, "UNPLACED", None, None, "ROTATION_EXHAUSTED", ("AG1", "AG2")),
        ("L14", None): (None, "UNPLACED", None, None, "NO_AGENCY_FOR_REGION", ()),
    }


def test_new_placements_carry_period_amount_band_and_recoveries(stage: dict[str, Any]) -> None:
    rows = {r["placement_id"]: r for r in stage["placements"] if r["placement_id"]}
    l5 = rows[f"P{AS_OF:%Y%m%d}-L5"]
    # Placed today for 90 days; amount = overdue principal + interest; 120 DPD -> band M4_M6.
    assert (
        l5["placed_date"],
        l5["expires_date"],
        l5["amount_at_placement"],
        l5["dpd_at_placement"],
        l5["fee_band"],
        l5["challenger"],
    ) == (AS_OF, D(2026, 9, 13), money(5000), 120, "M4_M6", True)
    # L1 paid 1,000 today, after its placement on 1 May: credited to AG1 on the recall date.
    assert rows["P-L1"]["recovered_amount"] == money(1000)
    assert all(r["as_of_date"] == AS_OF for r in stage["placements"])


def test_cases_name_the_agency_or_stay_in_house_with_the_reason(stage: dict[str, Any]) -> None:
    cases = stage["cases"]
    got = {k: (r["stage"], r["mode"], r["owner_type"], r["owner_id"]) for k, r in cases.items()}
    assert got == {
        "L2": ("LEGAL_RECOVERY", "LEGAL", "RISK_MANAGER", "RM1"),
        "L3": ("OUTSOURCED", "OUTSOURCED", "AGENCY", "AG1"),
        "L4": ("LEGAL_SEVERE_SIGNAL", "LEGAL", "RISK_MANAGER", "RM1"),
        "L5": ("OUTSOURCED", "OUTSOURCED", "AGENCY", "AG1"),
        "L7": ("OUTSOURCED", "OUTSOURCED", "AGENCY", "AG2"),
        # 20 DPD is in-house under the Wuhan rules, but the placement runs until it expires.
        "L8": ("M1_PHONE_ALL_CONTACTS", "OUTSOURCED", "AGENCY", "AG1"),
        "L9": ("OUTSOURCED", "OUTSOURCED", "AGENCY", "AG4"),
        "L10": ("OUTSOURCED", "OUTSOURCED", "AGENCY", "AG1"),
        "L11": ("OUTSOURCED", "OUTSOURCED", "AGENCY", "AG2"),
        "L12": ("OUTSOURCED", "OUTSOURCED", "COLLECTOR", "COL1"),
        "L13": ("OUTSOURCED", "OUTSOURCED", "AGENCY", "AG1"),
        "L14": ("OUTSOURCED", "OUTSOURCED", "COLLECTOR", "COL1"),
        "L16": ("M1_PHONE_T3", "IN_HOUSE", "COLLECTOR", "COL1"),
    }
    assert "PLACEMENT_CONTINUES" in cases["L8"]["reasons"]
    # An unplaced case is the collector's (not a fallback: that is where unplaced cases go).
    assert "UNPLACED:ROTATION_EXHAUSTED" in cases["L12"]["reasons"]
    assert not any(r.startswith("OWNER_FALLBACK") for r in cases["L12"]["reasons"])
    assert cases["L3"]["placement_id"] == f"P{AS_OF:%Y%m%d}-L3"
    assert cases["L2"]["branch_path"] == ["HQ", "T1", "SUB1"]


def test_scorecard_of_the_stage_counts_the_recovery_and_its_fee(stage: dict[str, Any]) -> None:
    june = {r["agency_id"]: r for r in stage["scorecard"] if r["month"] == JUNE1}
    # AG1 held P-L1, L2, L4, L8 in June (L8 placed 1 June) and got L3, L5, L10, L13 today: 8 held,
    # 5 placed in June. L1 cured today, and its 1,000 paid today at M2 (12%) is 120 of fees.
    ag1 = june["AG1"]
    assert (ag1["cases_held"], ag1["cases_placed"], ag1["recovered_amount"], ag1["fee_amount"], ag1["cured_cases"]) == (
        8,
        5,
        money(1000),
        money(120),
        1,
    )
    assert {r["agency_id"] for r in stage["scorecard"]} == {"AG1", "AG2", "AG3", "AG4"}
    assert {(r["month"], r["settled"]) for r in stage["scorecard"]} == {(MAY1, True), (JUNE1, False)}


def test_rerun_of_the_date_gives_the_same_rows(stage: dict[str, Any]) -> None:
    # Same inputs (the previous run's placements, today's book and extracts): same placements,
    # including the new ones, their agencies and their ids.
    assert sorted(map(repr, stage["rerun"])) == sorted(map(repr, stage["placements"]))


# ------------------------------------------------------------------------------------------------
# Recall when the loan leaves the book or the agency's contract ends, and ties between reasons
#   (docs/collections.md section 5: the first reason in the table's order ends the placement).
#   Agencies: AG1 serves R1, AG2 serves R2, both ACTIVE; AG5 (R1, R2) is TERMINATED; AG6 held
#   placements but is no longer in the extract. Every previous placement was ACTIVE yesterday.


def contract(loan_id: str, status: str, closed: dt.date | None = None) -> dict[str, Any]:
    """The loans-extract row of a loan (only its status and closed_date matter here)."""
    return {
        "loan_id": loan_id,
        "borrower_id": f"B-{loan_id}",
        "product_code": "P1",
        "branch_id": "SUB1",
        "officer_id": "CM1",
        "principal": money(100_000),
        "disbursement_date": D(2025, 1, 1),
        "maturity_date": D(2027, 1, 1),
        "repayment_method": "EQUAL_INSTALLMENT",
        "payment_mode": "AUTONOMOUS",
        "annual_rate": Decimal("0.05"),
        "collateral_type": "CREDIT",
        "status": status,
        "closed_date": closed,
    }


EXIT_PREVIOUS = {
    # The loan left the book today.
    "K1": placement("P-K1", "K1", "AG1", MAY1),  # written off today: WRITTEN_OFF
    "K2": placement("P-K2", "K2", "AG1", MAY1),  # gone from the extract (quarantined): NOT_ON_BOOK
    "K3": placement("P-K3", "K3", "AG1", MAY1),  # ACTIVE in the extract, not in the snapshot: NOT_ON_BOOK
    # The agency's contract ended.
    "K4": placement("P-K4", "K4", "AG5", MAY1),  # AG5 TERMINATED, 80 DPD: rotated to AG1
    "K5": placement("P-K5", "K5", "AG6", MAY1, region_code="R2"),  # AG6 missing, 80 DPD: rotated to AG2
    "K6": placement("P-K6", "K6", "AG5", MAY1),  # AG5 TERMINATED, back to 20 DPD: in-house
    # Two reasons on the same night.
    "K7": placement("P-K7", "K7", "AG5", MAY1),  # written off (1) and AG5 terminated (5)
    "K8": placement("P-K8", "K8", "AG5", D(2026, 3, 17)),  # AG5 terminated (5), expires today (6)
    "K9": placement("P-K9", "K9", "AG5", MAY1),  # paid up, DPD 0 (4) and AG5 terminated (5)
}


def exit_scenario(spark: SparkSession) -> dict[str, Any]:
    agencies = frame(
        spark,
        AGENCIES,
        [
            {"agency_id": "AG1", "name": "One", "region_codes": "R1", "capacity": 10, "status": "ACTIVE"},
            {"agency_id": "AG2", "name": "Two", "region_codes": "R2", "capacity": 10, "status": "ACTIVE"},
            {"agency_id": "AG5", "name": "Five", "region_codes": "R1, R2", "capacity": 10, "status": "TERMINATED"},
        ],
    )
    book = [
        loan("K4", 80, 2000),
        loan("K5", 80, 1500, region_code="R2"),
        loan("K6", 20, 1000),
        loan("K8", 125, 3000),
        loan("K9", 0),
    ]
    loans = frame(
        spark,
        LOANS,
        [
            contract("K1", "WRITTEN_OFF", AS_OF),
            contract("K3", "ACTIVE"),
            contract("K7", "WRITTEN_OFF", AS_OF),
            *[contract(k, "ACTIVE") for k in ("K4", "K5", "K6", "K8", "K9")],
        ],
    )
    return {
        "agencies": agencies,
        "previous": frame(spark, AGENCY_PLACEMENTS, list(EXIT_PREVIOUS.values())),
        "book": book,
        "signals": empty(spark, RISK_SIGNALS),
        "loans": loans,
    }


def ended_tonight(loan_id: str, reason: str, status: str = "RECALLED") -> dict[str, Any]:
    """Yesterday's ACTIVE row of the loan as tonight's row: ended today, nothing credited."""
    row = {c: EXIT_PREVIOUS[loan_id].get(c) for c in AGENCY_PLACEMENTS.names}
    row.update(as_of_date=AS_OF, status=status, ended_date=AS_OF, recall_reason=reason, recovered_amount=money(0))
    return row


def placed_tonight(
    loan_id: str, agency: str, region: str, amount: int, dpd: int, band: str, excluded: list[str]
) -> dict[str, Any]:
    """A new placement of tonight: 90 days from 15 June, amount = overdue principal (no interest)."""
    return {
        "as_of_date": AS_OF,
        "placement_id": f"P20260615-{loan_id}",
        "loan_id": loan_id,
        "borrower_id": f"B-{loan_id}",
        "branch_id": "SUB1",
        "branch_path": ["HQ", "T1", "SUB1"],
        "tier1_branch_id": "T1",
        "product_code": "P1",
        "region_code": region,
        "agency_id": agency,
        "status": "ACTIVE",
        "placed_date": AS_OF,
        "expires_date": D(2026, 9, 13),
        "ended_date": None,
        "recall_reason": None,
        "unplaced_reason": None,
        "amount_at_placement": money(amount),
        "dpd_at_placement": dpd,
        "fee_band": band,
        "challenger": True,  # AG1 held 3 placements in the window, AG2 none: both under 30
        "excluded_agencies": excluded,
        "recovered_amount": money(0),
    }


@pytest.fixture(scope="module")
def exits(spark: SparkSession, conf_dir: Path) -> dict[str, Any]:
    """One run of the stage on the exit scenario: placements by (loan, placement id), and cases."""
    s = exit_scenario(spark)
    out = build_collections(context(spark, load_config(conf_dir), s, s["previous"]))
    return {
        "placements": {(r["loan_id"], r["placement_id"]): r.asDict() for r in out[AGENCY_PLACEMENTS].collect()},
        "cases": {r["loan_id"]: r for r in out[COLLECTION_CASES].collect()},
    }


def rows_of(placements: dict[tuple[str, str | None], dict[str, Any]], *loans: str) -> dict[Any, dict[str, Any]]:
    return {k: v for k, v in placements.items() if k[0] in loans}


def test_recall_when_the_loan_is_written_off_or_leaves_the_book(exits: dict[str, Any]) -> None:
    # K1: not in the snapshot, loans.status WRITTEN_OFF -> WRITTEN_OFF. K2: not in the snapshot
    # nor in the extract, K3: not in the snapshot although ACTIVE in the extract -> NOT_ON_BOOK.
    # Off the book means no case tonight: no new placement and no UNPLACED row either.
    assert rows_of(exits["placements"], "K1", "K2", "K3") == {
        ("K1", "P-K1"): ended_tonight("K1", "WRITTEN_OFF"),
        ("K2", "P-K2"): ended_tonight("K2", "NOT_ON_BOOK"),
        ("K3", "P-K3"): ended_tonight("K3", "NOT_ON_BOOK"),
    }
    assert not {"K1", "K2", "K3"} & set(exits["cases"])


def test_recall_when_the_agency_is_terminated_rotates_a_still_outsourced_case(exits: dict[str, Any]) -> None:
    # K4 at AG5 (TERMINATED) and K5 at AG6 (missing from the extract = terminated) are recalled
    # AGENCY_TERMINATED. Both are still OUTSOURCED (80 DPD >= 31) and placed again tonight, never
    # with the agency that gave them back: K4 in R1 -> AG1 (AG5 excluded and not ACTIVE anyway),
    # K5 in R2 -> AG2. 80 DPD is band M3; amount = overdue principal 2,000 and 1,500.
    # K6 at AG5 is back to 20 DPD (in-house rule): recalled too, and not placed again.
    assert rows_of(exits["placements"], "K4", "K5", "K6") == {
        ("K4", "P-K4"): ended_tonight("K4", "AGENCY_TERMINATED"),
        ("K5", "P-K5"): ended_tonight("K5", "AGENCY_TERMINATED"),
        ("K6", "P-K6"): ended_tonight("K6", "AGENCY_TERMINATED"),
        ("K4", "P20260615-K4"): placed_tonight("K4", "AG1", "R1", 2000, 80, "M3", ["AG5"]),
        ("K5", "P20260615-K5"): placed_tonight("K5", "AG2", "R2", 1500, 80, "M3", ["AG6"]),
    }
    cases = exits["cases"]
    got = {
        k: (r["stage"], r["mode"], r["owner_type"], r["owner_id"], r["agency_id"], r["placement_id"], r["reasons"])
        for k, r in cases.items()
        if k in ("K4", "K5", "K6")
    }
    assert got == {
        "K4": (
            "OUTSOURCED",
            "OUTSOURCED",
            "AGENCY",
            "AG1",
            "AG1",
            "P20260615-K4",
            ["PROFILE:wuhan", "RULE:OUTSOURCED", "AGENCY:AG1"],
        ),
        "K5": (
            "OUTSOURCED",
            "OUTSOURCED",
            "AGENCY",
            "AG2",
            "AG2",
            "P20260615-K5",
            ["PROFILE:wuhan", "RULE:OUTSOURCED", "AGENCY:AG2"],
        ),
        # Had AG5 still been ACTIVE, the placement would continue (PLACEMENT_CONTINUES); now the
        # case goes back to the in-house rule: the T1 collector's phone list.
        "K6": (
            "M1_PHONE_ALL_CONTACTS",
            "IN_HOUSE",
            "COLLECTOR",
            "COL1",
            None,
            None,
            ["PROFILE:wuhan", "RULE:M1_PHONE_ALL_CONTACTS"],
        ),
    }


def test_recall_reason_ties_go_to_the_earlier_reason_in_the_documented_order(exits: dict[str, Any]) -> None:
    # K7: written off (order 1) while AG5 is terminated (order 5) -> WRITTEN_OFF, and no case.
    # K8: AG5 terminated (5) on the day the placement expires (6: placed 17 March + 90 = 15 June)
    #     -> AGENCY_TERMINATED with status RECALLED, not EXPIRED; still OUTSOURCED (125 DPD, band
    #     M4_M6, 3,000 overdue): rotated to AG1.
    # K9: back to DPD 0 (4) while AG5 is terminated (5) -> CURED (a cure on AG5's scorecard), no case.
    assert rows_of(exits["placements"], "K7", "K8", "K9") == {
        ("K7", "P-K7"): ended_tonight("K7", "WRITTEN_OFF"),
        ("K8", "P-K8"): ended_tonight("K8", "AGENCY_TERMINATED"),
        ("K9", "P-K9"): ended_tonight("K9", "CURED"),
        ("K8", "P20260615-K8"): placed_tonight("K8", "AG1", "R1", 3000, 125, "M4_M6", ["AG5"]),
    }
    assert set(exits["cases"]) == {"K4", "K5", "K6", "K8"}
    assert (exits["cases"]["K8"]["owner_type"], exits["cases"]["K8"]["owner_id"]) == ("AGENCY", "AG1")
    # Nothing beyond the nine loans of the scenario.
    assert {k[0] for k in exits["placements"]} == set(EXIT_PREVIOUS)
