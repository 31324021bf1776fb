"""Delinquency on real repayment data (Home Credit instalments), checked against a day-by-day replay.

The public Home Credit sample (../shared/realdata) has real schedules with partial, late and early
payments. It is converted to the landing contract (days relative to each application become dates
from 2020-01-01; every instalment is principal), and the set-based delinquency stage is compared,
loan by loan, with a plain replay written here from the rule's words: walk every day, apply the
payments with value date on or before it, and look for the oldest uncovered instalment.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections import defaultdict
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from jobs.delinquency import with_delinquency
from schemas.landing import REPAYMENTS, SCHEDULE

BASE = dt.date(2020, 1, 1)
CENT = Decimal("0.01")


@dataclass
class Loan:
    due: list[tuple[int, dt.date, Decimal]]  # instalment number, due date, amount
    payments: list[tuple[dt.date, Decimal]]


def load_home_credit(path: Path) -> dict[str, Loan]:
    instalments: dict[str, dict[int, tuple[dt.date, Decimal]]] = defaultdict(dict)
    payments: dict[str, list[tuple[dt.date, Decimal]]] = defaultdict(list)
    with path.open(encoding="utf-8-sig", newline="") as handle:
        for row in csv.DictReader(handle):
            loan = row["SK_ID_PREV"]
            number = int(float(row["NUM_INSTALMENT_NUMBER"]))
            due = BASE + dt.timedelta(days=int(float(row["DAYS_INSTALMENT"])))
            amount = Decimal(row["AMT_INSTALMENT"]).quantize(CENT, ROUND_HALF_UP)
            held = instalments[loan].get(number)
            # Several rows per instalment are partial payments of one instalment: one due each.
            if held is None or due < held[0] or amount > held[1]:
                instalments[loan][number] = (min(due, held[0]) if held else due, max(amount, held[1]) if held else amount)
            if row["DAYS_ENTRY_PAYMENT"] and row["AMT_PAYMENT"]:
                paid_on = BASE + dt.timedelta(days=int(float(row["DAYS_ENTRY_PAYMENT"])))
                payments[loan].append((paid_on, Decimal(row["AMT_PAYMENT"]).quantize(CENT, ROUND_HALF_UP)))
    return {
        loan: Loan(sorted((n, d, a) for n, (d, a) in dues.items()), sorted(payments[loan]))
        for loan, dues in instalments.items()
    }


def replay(loan: Loan, as_of: dt.date) -> tuple[int, Decimal, Decimal, int, dt.date | None]:
    """dpd, overdue principal and outstanding principal on as_of; max dpd and last overdue day up to it."""

    def dpd_on(day: dt.date, paid: Decimal) -> int:
        cumulative = Decimal(0)
        oldest: dt.date | None = None
        for _, due, amount in loan.due:
            cumulative += amount
            if due < day and cumulative > paid and (oldest is None or due < oldest):
                oldest = due
        return (day - oldest).days if oldest else 0

    first_due = min(d for _, d, _ in loan.due)
    max_dpd, last_overdue = 0, None
    day, paid, i = first_due, Decimal(0), 0
    while day <= as_of:
        while i < len(loan.payments) and loan.payments[i][0] <= day:
            paid += loan.payments[i][1]
            i += 1
        today = dpd_on(day, paid)
        if today > 0:
            max_dpd, last_overdue = max(max_dpd, today), day
        day += dt.timedelta(days=1)
    paid = sum((a for d, a in loan.payments if d <= as_of), Decimal(0))
    applied_before = Decimal(0)
    overdue = Decimal(0)
    repaid = Decimal(0)
    for _, due, amount in loan.due:
        applied = min(max(paid - applied_before, Decimal(0)), amount)
        applied_before += amount
        repaid += applied
        if due < as_of and applied_before > paid:
            overdue += amount - applied
    principal = sum((a for _, _, a in loan.due), Decimal(0))
    return dpd_on(as_of, paid), overdue, principal - repaid, max_dpd, last_overdue


@pytest.mark.parametrize("as_of", [BASE - dt.timedelta(days=700), BASE - dt.timedelta(days=60)])
def test_set_based_delinquency_matches_a_day_by_day_replay_on_real_data(
    spark: SparkSession, realdata_dir: Path, as_of: dt.date
) -> None:
    book = load_home_credit(realdata_dir / "home-credit-default-risk" / "installments_payments.csv")
    assert len(book) == 1772
    loans = spark.createDataFrame(
        [
            (loan_id, sum((a for _, _, a in b.due), Decimal(0)), min(d for _, d, _ in b.due) - dt.timedelta(days=30),
             Decimal("0.00"))
            for loan_id, b in book.items()
        ],
        "loan_id string, principal decimal(18,2), disbursement_date date, delinquency__tolerance_amount decimal(18,2)",
    )
    schedule = spark.createDataFrame(
        [(loan_id, n, d, a, Decimal("0.00")) for loan_id, b in book.items() for n, d, a in b.due], SCHEDULE.schema
    )
    repayments = spark.createDataFrame(
        [(f"{loan_id}-{i}", loan_id, d, a) for loan_id, b in book.items() for i, (d, a) in enumerate(b.payments)],
        REPAYMENTS.schema,
    )
    got = {
        r["loan_id"]: (r["dpd"], r["overdue_principal"], r["outstanding_principal"], r["max_dpd_ever"], r["last_overdue_date"])
        for r in loans.transform(with_delinquency(as_of, schedule, repayments, 30, 30, 6))
        .select("loan_id", "dpd", "overdue_principal", "outstanding_principal", "max_dpd_ever", "last_overdue_date")
        .collect()
    }
    expected = {}
    for loan_id, b in book.items():
        dpd, overdue, outstanding, max_dpd, last = replay(b, as_of)
        expected[loan_id] = (dpd, overdue, max(outstanding, Decimal(0)), max(max_dpd, dpd), last)
    mismatches = {k: (got[k], expected[k]) for k in expected if got[k] != expected[k]}
    assert not mismatches, f"{len(mismatches)} loans differ, e.g. {list(mismatches.items())[:3]}"
    # The data is real: some loans are delinquent on the date, some were and cured.
    assert sum(1 for v in expected.values() if v[0] > 0) > 10
    assert sum(1 for v in expected.values() if v[0] == 0 and v[3] > 0) > 10
