"""Portfolio metrics (DOMAIN.md section 5) on hand-made books; expected values worked out by hand.

Branch tree used throughout: H (head office) -> T1A -> T2A -> S1, S2 and H -> T1B -> T2B -> S3.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from jobs.config import AppConfig, ConfigError, OverrideRule, load_config
from jobs.delinquency import with_delinquency
from jobs.metrics import (
    GROUP_COLUMNS,
    SNAPSHOT_COLUMNS,
    build_metrics,
    channel_scorecard,
    delinquency_milestones,
    early_warnings,
    is_period_end,
    kpi_breaches,
    loan_transitions,
    metrics_config,
    migration_rates,
    period_end_before,
    portfolio_metrics,
    roll_rates,
    vintage_curves,
    with_group_labels,
)
from jobs.params import params_frame
from jobs.sections.metrics import KpiTarget, MetricsConfig, RatingBand, ScoreComponent
from jobs.stages import StageContext
from schemas.lake import LOAN_SNAPSHOT
from schemas.landing import BRANCHES, CHANNELS, LOANS, OFFICERS, PRODUCTS, REPAYMENTS, RISK_SIGNALS, SCHEDULE
from schemas.metrics import (
    CHANNEL_SCORECARD,
    EARLY_WARNINGS,
    KPI_BREACHES,
    METRICS_TABLES,
    MIGRATION_RATES,
    PORTFOLIO_METRICS,
    ROLL_RATES,
    VINTAGE,
)

D = dt.date
M = Decimal

PATHS = {
    "S1": ("T1A", "T2A", ["H", "T1A", "T2A", "S1"]),
    "S2": ("T1A", "T2A", ["H", "T1A", "T2A", "S2"]),
    "S3": ("T1B", "T2B", ["H", "T1B", "T2B", "S3"]),
}


def frame(
    spark: SparkSession, table: Any, rows: list[dict[str, Any]], columns: tuple[str, ...] | None = None
) -> DataFrame:
    """Rows typed by a contract; missing keys are null."""
    names = columns or tuple(table.names)
    schema = T.StructType([table.column(n).field() for n in names])
    return spark.createDataFrame([tuple(r.get(n) for n in names) for r in rows], schema)


def snapshot(spark: SparkSession, as_of: dt.date, rows: list[dict[str, Any]]) -> DataFrame:
    """loan_snapshot rows (the columns the stage reads)."""
    return frame(spark, LOAN_SNAPSHOT, snapshot_rows(as_of, rows), SNAPSHOT_COLUMNS)


def snapshot_rows(as_of: dt.date, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Defaults for the columns a row leaves out; the branch fills the tier and path columns."""
    full = []
    for r in rows:
        tier1, tier2, path = PATHS[r.get("branch_id", "S1")]
        risk_class = r.get("risk_class", "NORMAL")
        full.append(
            {
                "as_of_date": as_of,
                "borrower_id": "B-" + r["loan_id"],
                "branch_id": "S1",
                "tier1_branch_id": tier1,
                "tier2_branch_id": tier2,
                "branch_path": path,
                "product_code": "CONS",
                "officer_id": "O1",
                "outstanding_principal": M("100.00"),
                "overdue_principal": M("0.00"),
                "dpd": 0,
                "bucket": "M0",
                "max_dpd_ever": r.get("dpd", 0),
                "first_payment_default": False,
                "risk_class": risk_class,
                "is_npl": risk_class in ("SUBSTANDARD", "DOUBTFUL", "LOSS"),
                **r,
            }
        )
    return full


def reference(spark: SparkSession) -> dict[str, DataFrame]:
    branches = frame(
        spark,
        BRANCHES,
        [
            {"branch_id": "H", "parent_id": None, "level": "HQ", "name": "Head office", "region_code": "R0"},
            {"branch_id": "T1A", "parent_id": "H", "level": "TIER1", "name": "Hubei", "region_code": "R1"},
            {"branch_id": "T2A", "parent_id": "T1A", "level": "TIER2", "name": "Wuhan", "region_code": "R1"},
            {"branch_id": "S1", "parent_id": "T2A", "level": "SUB", "name": "Jianghan", "region_code": "R1"},
            {"branch_id": "S2", "parent_id": "T2A", "level": "SUB", "name": "Wuchang", "region_code": "R1"},
            {"branch_id": "T1B", "parent_id": "H", "level": "TIER1", "name": "Hunan", "region_code": "R2"},
            {"branch_id": "T2B", "parent_id": "T1B", "level": "TIER2", "name": "Changsha", "region_code": "R2"},
            {"branch_id": "S3", "parent_id": "T2B", "level": "SUB", "name": "Furong", "region_code": "R2"},
        ],
    )
    products = frame(
        spark,
        PRODUCTS,
        [
            {"product_code": p, "name": n, "category": c, "low_risk": False, "refinance_designed": False}
            for p, n, c in (
                ("CONS", "Consumer", "CONSUMER"),
                ("MORT", "Mortgage", "MORTGAGE"),
                ("AUTO", "Auto", "AUTO"),
            )
        ],
    )
    channels = frame(
        spark,
        CHANNELS,
        [
            {
                "channel_id": c,
                "name": f"Dealer {c}",
                "branch_id": b,
                "manager_officer_id": "O9",
                "status": "ACTIVE",
                "onboarded_date": D(2025, 1, 1),
            }
            for c, b in (("C1", "S1"), ("C2", "S3"), ("C3", "S2"), ("C4", "S1"))
        ],
    )
    officers = frame(
        spark,
        OFFICERS,
        [
            {"officer_id": "O1", "name": "Li", "branch_id": "S1", "role": "CUSTOMER_MANAGER", "active": True},
            {"officer_id": "O2", "name": "Wang", "branch_id": "S2", "role": "CUSTOMER_MANAGER", "active": False},
            {"officer_id": "O3", "name": "Zhao", "branch_id": "S3", "role": "CUSTOMER_MANAGER", "active": True},
        ],
    )
    return {"branches": branches, "products": products, "channels": channels, "officers": officers}


def labels(ref: dict[str, DataFrame]) -> Any:
    return with_group_labels(ref["branches"], ref["products"], ref["channels"], ref["officers"])


# --------------------------------------------------------------------------------------------
# portfolio_metrics

PORTFOLIO_BOOK = [
    # loan, branch, product, officer, channel, balance, overdue principal, dpd, bucket, class
    ("L1", "S1", "CONS", "O1", "C1", "1000.00", "0.00", 0, "M0", "NORMAL"),
    ("L2", "S1", "CONS", "O1", "C1", "500.00", "100.00", 20, "M1", "SPECIAL_MENTION"),
    ("L3", "S2", "MORT", "O2", None, "2000.00", "0.00", 0, "M0", "NORMAL"),
    ("L4", "S2", "MORT", "O2", None, "800.00", "300.00", 100, "M4", "SUBSTANDARD"),
    ("L5", "S3", "CONS", "O3", "C2", "700.00", "0.00", 0, "M0", "NORMAL"),
    # Repaid in full but not yet closed: on the book with a zero balance (AUTO's ratios are 0 / 0).
    ("L6", "S3", "AUTO", "O3", "C2", "0.00", "0.00", 0, "M0", "NORMAL"),
]
AS_OF = D(2026, 6, 30)


def portfolio_book(spark: SparkSession) -> DataFrame:
    return snapshot(spark, AS_OF, portfolio_rows())


def portfolio_rows() -> list[dict[str, Any]]:
    keys = (
        "loan_id",
        "branch_id",
        "product_code",
        "officer_id",
        "channel_id",
        "outstanding_principal",
        "overdue_principal",
        "dpd",
        "bucket",
        "risk_class",
    )
    rows = []
    for values in PORTFOLIO_BOOK:
        row = dict(zip(keys, values, strict=True))
        row["outstanding_principal"], row["overdue_principal"] = (
            M(row["outstanding_principal"]),
            M(row["overdue_principal"]),
        )
        rows.append(row)
    return snapshot_rows(AS_OF, rows)


def recompute(rows: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """The portfolio figures recomputed in plain Python from the loan-level rows."""
    keys = {
        "HQ": lambda r: "HQ",
        "TIER1_BRANCH": lambda r: r["tier1_branch_id"] or "NONE",
        "TIER2_BRANCH": lambda r: r["tier2_branch_id"] or "NONE",
        "BRANCH": lambda r: r["branch_id"],
        "PRODUCT": lambda r: r["product_code"],
        "CHANNEL": lambda r: r["channel_id"] or "NONE",
        "OFFICER": lambda r: r["officer_id"],
        "BRANCH_PRODUCT": lambda r: f"{r['branch_id']}|{r['product_code']}",
    }
    out: dict[tuple[str, str], dict[str, Any]] = defaultdict(lambda: defaultdict(lambda: 0))
    for r in rows:
        for grouping, key in keys.items():
            g = out[(grouping, key(r))]
            bal = r["outstanding_principal"]
            g["loan_count"] += 1
            g["outstanding_balance"] += bal
            g["overdue_count"] += r["dpd"] > 0
            g["overdue_balance"] += bal if r["dpd"] > 0 else 0
            g["overdue_principal"] += r["overdue_principal"]
            g["npl_count"] += r["is_npl"]
            g["npl_balance"] += bal if r["is_npl"] else 0
            stem = r["risk_class"].lower()
            g[f"{stem}_count"] += 1
            g[f"{stem}_balance"] += bal
            bucket = r["bucket"].lower().replace("+", "plus")
            g[f"{bucket}_count"] += 1
            g[f"{bucket}_balance"] += bal
    for g in out.values():
        total = g["outstanding_balance"]
        g["overdue_ratio"] = (g["overdue_balance"] / total).quantize(M("0.000001")) if total else None
        g["npl_ratio"] = (g["npl_balance"] / total).quantize(M("0.000001")) if total else None
    return out


def test_portfolio_metrics_reconcile_with_the_loan_level_rows(spark: SparkSession) -> None:
    book = portfolio_book(spark)
    ref = reference(spark)
    groupings = ("HQ", "TIER1_BRANCH", "TIER2_BRANCH", "BRANCH", "PRODUCT", "CHANNEL", "OFFICER", "BRANCH_PRODUCT")
    out = book.transform(portfolio_metrics(groupings)).transform(labels(ref))
    got = {(r["grouping"], r["group_key"]): r.asDict() for r in out.collect()}
    expected = recompute(portfolio_rows())
    assert set(got) == set(expected)
    # Every figure of every group (a class or bucket absent from a group is 0).
    figures_columns = [c for c in PORTFOLIO_METRICS.names if c != "as_of_date" and c not in GROUP_COLUMNS]
    for key, figures in expected.items():
        for column in figures_columns:
            assert got[key][column] == figures.get(column, 0), (key, column)
    # Hand-worked HQ: 6 loans, 5000 outstanding; overdue L2 + L4 = 1300 (26%); NPL L4 = 800 (16%).
    hq = got[("HQ", "HQ")]
    assert (hq["loan_count"], hq["outstanding_balance"], hq["overdue_balance"], hq["overdue_ratio"]) == (
        6,
        M("5000.00"),
        M("1300.00"),
        M("0.260000"),
    )
    assert (hq["npl_balance"], hq["npl_ratio"], hq["overdue_principal"]) == (M("800.00"), M("0.160000"), M("400.00"))
    assert (hq["group_label"], hq["branch_id"], hq["branch_path"]) == ("Head office", "H", ["H"])
    # Hubei (T1A) holds L1-L4: 4300; overdue 1300 / 4300 = 0.3023256 -> 0.302326; NPL 800 / 4300 -> 0.186047.
    t1a = got[("TIER1_BRANCH", "T1A")]
    assert (t1a["overdue_ratio"], t1a["npl_ratio"], t1a["group_label"]) == (M("0.302326"), M("0.186047"), "Hubei")
    assert (t1a["branch_path"], t1a["tier1_branch_id"]) == (["H", "T1A"], "T1A")
    assert got[("TIER2_BRANCH", "T2A")]["branch_path"] == ["H", "T1A", "T2A"]
    # Division by zero: AUTO's only loan has a zero balance -> null ratios, not an error.
    auto = got[("PRODUCT", "AUTO")]
    assert (auto["loan_count"], auto["outstanding_balance"], auto["overdue_ratio"], auto["npl_ratio"]) == (
        1,
        M("0.00"),
        None,
        None,
    )
    # Non-branch groups: the loans' common branch path (CONS spans S1 and S3 -> head office only).
    assert got[("PRODUCT", "CONS")]["branch_path"] == ["H"]
    assert got[("PRODUCT", "CONS")]["tier1_branch_id"] is None
    assert got[("OFFICER", "O1")]["branch_path"] == ["H", "T1A", "T2A", "S1"]
    assert got[("OFFICER", "O1")]["group_label"] == "Li"
    assert (got[("CHANNEL", "NONE")]["loan_count"], got[("CHANNEL", "NONE")]["group_label"]) == (2, None)
    assert got[("CHANNEL", "C1")]["group_label"] == "Dealer C1"
    bp = got[("BRANCH_PRODUCT", "S2|MORT")]
    assert (bp["group_label"], bp["branch_id"], bp["product_code"], bp["npl_ratio"]) == (
        "Wuchang / Mortgage",
        "S2",
        "MORT",
        M("0.285714"),  # 800 / 2800
    )


def test_kpi_breaches_list_groups_over_target_with_tier1_targets_and_departed_officers(spark: SparkSession) -> None:
    ref = reference(spark)
    portfolio = (
        portfolio_book(spark).transform(portfolio_metrics(("BRANCH", "PRODUCT", "OFFICER"))).transform(labels(ref))
    )
    config = MetricsConfig(
        targets=(
            KpiTarget("OVERDUE_RATIO", M("0.03"), ("OFFICER", "BRANCH", "PRODUCT")),
            KpiTarget("NPL_RATIO", M("0.01"), ("OFFICER", "BRANCH", "PRODUCT")),
            # Hubei sets its own branch overdue target (art. 51): 50%.
            KpiTarget("OVERDUE_RATIO", M("0.5"), ("BRANCH",), tier1_branch="T1A"),
        )
    )
    out = portfolio.transform(kpi_breaches(AS_OF, config, None, ref["officers"]))
    got = {
        (r["metric"], r["grouping"], r["group_key"]): (r["value"], r["target"], r["gap"], r["target_tier1_branch_id"])
        for r in out.collect()
    }
    assert got == {
        # O1: overdue 500 / 1500; O2 (Wang) has left: not listed; O3: 700 current, nothing overdue.
        ("OVERDUE_RATIO", "OFFICER", "O1"): (M("0.333333"), M("0.030000"), M("0.303333"), None),
        # S1 0.333 and S2 800 / 2800 = 0.285714 are under Hubei's 50%; S3 has nothing overdue.
        ("NPL_RATIO", "BRANCH", "S2"): (M("0.285714"), M("0.010000"), M("0.275714"), None),
        # CONS: overdue 500 / 2200 = 0.227273; MORT: 800 / 2800 both; AUTO: null ratios never breach.
        ("OVERDUE_RATIO", "PRODUCT", "CONS"): (M("0.227273"), M("0.030000"), M("0.197273"), None),
        ("OVERDUE_RATIO", "PRODUCT", "MORT"): (M("0.285714"), M("0.030000"), M("0.255714"), None),
        ("NPL_RATIO", "PRODUCT", "MORT"): (M("0.285714"), M("0.010000"), M("0.275714"), None),
    }


# --------------------------------------------------------------------------------------------
# Migration and roll rates: a two-period book, 31 March -> 30 April 2026

START, END = D(2026, 3, 31), D(2026, 4, 30)
# loan: (branch, start class, start bucket, start balance, end class, end bucket, end balance) -
# end class None = not on the book on 30 April.
MIGRATION_BOOK: dict[str, tuple[str, str, str, str, str | None, str | None, str | None]] = {
    "N1": ("S1", "NORMAL", "M0", "1000.00", "NORMAL", "M0", "900.00"),  # repaid 100
    "N2": ("S1", "NORMAL", "M0", "500.00", "SPECIAL_MENTION", "M1", "480.00"),  # down, repaid 20
    "N3": ("S1", "NORMAL", "M0", "300.00", "SUBSTANDARD", "M0", "300.00"),  # down into NPL (a fraud signal)
    "N4": ("S1", "NORMAL", "M0", "200.00", None, None, None),  # settled 15 April
    "Q1": ("S1", "NORMAL", "M0", "60.00", None, None, None),  # gone without a closing record: OFF_BOOK
    "P1": ("S1", "SPECIAL_MENTION", "M3", "400.00", "SUBSTANDARD", "M4", "390.00"),  # down, repaid 10
    "P2": ("S1", "SPECIAL_MENTION", "M1", "100.00", "NORMAL", "M0", "100.00"),  # upgraded, cured
    "P3": ("S1", "SPECIAL_MENTION", "M1", "300.00", "SPECIAL_MENTION", "M2", "300.00"),  # rolled to M2
    "B1": ("S1", "SUBSTANDARD", "M4", "600.00", "DOUBTFUL", "M5", "600.00"),
    "B2": ("S3", "SUBSTANDARD", "M5", "250.00", None, None, None),  # written off 20 April
    "D1": ("S1", "DOUBTFUL", "M7+", "800.00", "LOSS", "M7+", "800.00"),
    "D2": ("S1", "DOUBTFUL", "M7+", "150.00", "DOUBTFUL", "M7+", "100.00"),  # repaid 50
    "X1": ("S3", "LOSS", "M7+", "50.00", None, None, None),  # written off 25 April
}
CLOSED = {
    "N4": ("SETTLED", D(2026, 4, 15)),
    "B2": ("WRITTEN_OFF", D(2026, 4, 20)),
    "X1": ("WRITTEN_OFF", D(2026, 4, 25)),
}


def migration_snapshots(spark: SparkSession) -> tuple[DataFrame, DataFrame, DataFrame]:
    start, end, loans = [], [], []
    for loan_id, (branch, c0, b0, bal0, c1, b1, bal1) in MIGRATION_BOOK.items():
        start.append(
            {"loan_id": loan_id, "branch_id": branch, "risk_class": c0, "bucket": b0, "outstanding_principal": M(bal0)}
        )
        if c1 is not None:
            end.append(
                {
                    "loan_id": loan_id,
                    "branch_id": branch,
                    "risk_class": c1,
                    "bucket": b1,
                    "outstanding_principal": M(str(bal1)),
                }
            )
        status, closed = CLOSED.get(loan_id, ("ACTIVE", None))
        loans.append(loan_row(loan_id, branch, M(bal0), D(2025, 6, 1), status=status, closed_date=closed))
    # A loan disbursed in April is in the end snapshot only: it takes no part in migration.
    end.append({"loan_id": "Z1", "risk_class": "NORMAL", "outstanding_principal": M("700.00")})
    loans.append(loan_row("Z1", "S1", M("700.00"), D(2026, 4, 10)))
    return snapshot(spark, START, start), snapshot(spark, END, end), frame(spark, LOANS, loans)


def loan_row(loan_id: str, branch: str, principal: Decimal, disbursed: dt.date, **fields: Any) -> dict[str, Any]:
    return {
        "loan_id": loan_id,
        "borrower_id": "B-" + loan_id,
        "product_code": "CONS",
        "branch_id": branch,
        "officer_id": "O1",
        "principal": principal,
        "disbursement_date": disbursed,
        "maturity_date": D(2028, 1, 1),
        "repayment_method": "EQUAL_INSTALLMENT",
        "payment_mode": "ENTRUSTED",
        "annual_rate": M("0.050000"),
        "collateral_type": "CREDIT",
        "status": "ACTIVE",
        **fields,
    }


MIGRATION_FIGURES = (
    "loan_count",
    "start_balance",
    "exited_count",
    "exited_balance",
    "repaid_balance",
    "decrease_balance",
    "denominator_balance",
    "moved_down_count",
    "moved_down_balance",
    "moved_down_end_balance",
    "migration_rate",
)


def test_migration_rates_on_a_hand_made_two_period_book(spark: SparkSession) -> None:
    start, end, loans = migration_snapshots(spark)
    moves = start.transform(loan_transitions(end, loans, END))
    out = moves.transform(migration_rates(END, "MONTH", ("HQ", "BRANCH")))
    rows = {(r["group_key"], r["from_class"]): r.asDict() for r in out.collect()}
    got = {k[1]: tuple(r[c] for c in MIGRATION_FIGURES) for k, r in rows.items() if k[0] == "HQ"}
    assert got == {
        # NORMAL: N1 1000 + N2 500 + N3 300 + N4 200 + Q1 60 = 2060.
        # Left the book: N4 (settled) 200 + Q1 (gone) 60 = 260. Repaid while on it: N1 100 + N2 20 = 120.
        # Decrease 380; denominator 2060 - 380 = 1680. Moved down: N2 and N3, start balance 500 + 300 = 800
        # (end balance 480 + 300 = 780). Rate 800 / 1680 = 0.4761905 -> 0.476190.
        "NORMAL": (
            5,
            M("2060.00"),
            2,
            M("260.00"),
            M("120.00"),
            M("380.00"),
            M("1680.00"),
            2,
            M("800.00"),
            M("780.00"),
            M("0.476190"),
        ),
        # SPECIAL_MENTION: P1 400 + P2 100 + P3 300 = 800; repaid P1 10; denominator 790. Moved down: P1 (400,
        # now 390). The upgrade (P2) and the roll within the class (P3) are not migration. 400 / 790 = 0.5063291.
        "SPECIAL_MENTION": (
            3,
            M("800.00"),
            0,
            M("0.00"),
            M("10.00"),
            M("10.00"),
            M("790.00"),
            1,
            M("400.00"),
            M("390.00"),
            M("0.506329"),
        ),
        # SUBSTANDARD: B1 600 + B2 250; B2 written off (decrease 250, not a migration); denominator 600; B1 down.
        "SUBSTANDARD": (
            2,
            M("850.00"),
            1,
            M("250.00"),
            M("0.00"),
            M("250.00"),
            M("600.00"),
            1,
            M("600.00"),
            M("600.00"),
            M("1.000000"),
        ),
        # DOUBTFUL: D1 800 + D2 150; D2 repaid 50; denominator 900; D1 down to LOSS: 800 / 900 = 0.8888889.
        "DOUBTFUL": (
            2,
            M("950.00"),
            0,
            M("0.00"),
            M("50.00"),
            M("50.00"),
            M("900.00"),
            1,
            M("800.00"),
            M("800.00"),
            M("0.888889"),
        ),
        # LOSS cannot move down: no rate (and X1 was written off, so the denominator is 0 anyway).
        "LOSS": (1, M("50.00"), 1, M("50.00"), M("0.00"), M("50.00"), M("0.00"), 0, M("0.00"), M("0.00"), None),
        # 正常貸款遷徙率: NORMAL + SPECIAL_MENTION moved into NPL: N3 300 + P1 400 = 700 (N2 went to
        # SPECIAL_MENTION only). Denominator 1680 + 790 = 2470. 700 / 2470 = 0.2834008.
        "NORMAL_LOANS": (
            8,
            M("2860.00"),
            2,
            M("260.00"),
            M("130.00"),
            M("390.00"),
            M("2470.00"),
            2,
            M("700.00"),
            M("690.00"),
            M("0.283401"),
        ),
    }
    normal = rows[("HQ", "NORMAL")]
    matrix = {c: normal[c] for c in normal if c.startswith("to_") and normal[c]}
    assert matrix == {
        "to_normal_count": 1,
        "to_normal_balance": M("1000.00"),
        "to_special_mention_count": 1,
        "to_special_mention_balance": M("500.00"),
        "to_substandard_count": 1,
        "to_substandard_balance": M("300.00"),
        "to_settled_count": 1,
        "to_settled_balance": M("200.00"),
        "to_off_book_count": 1,
        "to_off_book_balance": M("60.00"),
    }
    assert (rows[("HQ", "DOUBTFUL")]["to_loss_balance"], rows[("HQ", "LOSS")]["to_written_off_count"]) == (
        M("800.00"),
        1,
    )
    assert (normal["period_start_date"], normal["is_period_end"], normal["period_type"]) == (START, True, "MONTH")
    # Branch S3 holds B2 only among SUBSTANDARD loans: all of it written off -> denominator 0 -> null rate.
    s3 = rows[("S3", "SUBSTANDARD")]
    assert (s3["denominator_balance"], s3["migration_rate"], s3["to_written_off_balance"]) == (
        M("0.00"),
        None,
        M("250.00"),
    )
    assert rows[("S1", "SUBSTANDARD")]["migration_rate"] == M("1.000000")


def test_roll_rates_and_m1_conversion_on_the_same_book(spark: SparkSession) -> None:
    start, end, loans = migration_snapshots(spark)
    out = start.transform(loan_transitions(end, loans, END)).transform(roll_rates(END, ("HQ",)))
    rows = {r["from_bucket"]: r.asDict() for r in out.collect()}
    figures = ("from_count", "from_balance", "cure_balance", "cure_rate", "roll_forward_balance", "roll_forward_rate")
    got = {b: tuple(r[c] for c in figures) for b, r in rows.items()}
    assert got == {
        # M0: N1 1000 (M0), N2 500 (M1), N3 300 (M0), N4 200 (settled), Q1 60 (gone) = 2060.
        # Cured (M0 or settled): 1000 + 300 + 200 = 1500 -> 0.7281553; forward: N2 500 -> 0.2427184.
        "M0": (5, M("2060.00"), M("1500.00"), M("0.728155"), M("500.00"), M("0.242718")),
        # M1: P2 100 back to M0, P3 300 on to M2: M1 conversion 100 / 400 = 25%.
        "M1": (2, M("400.00"), M("100.00"), M("0.250000"), M("300.00"), M("0.750000")),
        "M3": (1, M("400.00"), M("0.00"), M("0.000000"), M("400.00"), M("1.000000")),
        "M4": (1, M("600.00"), M("0.00"), M("0.000000"), M("600.00"), M("1.000000")),
        # Written off is neither a cure nor a roll to a bucket: it has its own column.
        "M5": (1, M("250.00"), M("0.00"), M("0.000000"), M("0.00"), M("0.000000")),
        "M7+": (3, M("1000.00"), M("0.00"), M("0.000000"), M("0.00"), M("0.000000")),
    }
    m0 = rows["M0"]
    assert (m0["to_m0_balance"], m0["to_m1_balance"], m0["to_settled_balance"], m0["to_off_book_balance"]) == (
        M("1300.00"),
        M("500.00"),
        M("200.00"),
        M("60.00"),
    )
    assert (rows["M7+"]["to_m7plus_balance"], rows["M7+"]["to_written_off_balance"]) == (M("950.00"), M("50.00"))
    # Every row's to_* balances add up to its from_balance.
    for r in rows.values():
        assert sum(v for c, v in r.items() if c.startswith("to_") and c.endswith("_balance")) == r["from_balance"]


# --------------------------------------------------------------------------------------------
# Delinquency milestones and vintage

VINTAGE_AS_OF = D(2026, 6, 30)


def three_instalments(loan_id: str) -> list[dict[str, Any]]:
    # 100 a month (90 principal + 10 interest), due the 15th of February, March, April 2026.
    return [
        {
            "loan_id": loan_id,
            "installment_no": n,
            "due_date": D(2026, m, 15),
            "principal_due": M("90.00"),
            "interest_due": M("10.00"),
        }
        for n, m in ((1, 2), (2, 3), (3, 4))
    ]


def vintage_inputs(spark: SparkSession) -> tuple[DataFrame, DataFrame, DataFrame]:
    jan = D(2026, 1, 15)
    loans = [
        loan_row("V1", "S1", M("270.00"), jan),  # never pays
        loan_row("V2", "S1", M("270.00"), jan),  # pays the first instalment only
        loan_row("V3", "S1", M("270.00"), jan),  # pays on time
        loan_row("V4", "S1", M("270.00"), jan),  # first payment reversed on 20 March, then catches up
        loan_row("V5", "S1", M("100.00"), D(2026, 3, 10)),  # March cohort, one instalment, never pays
        # Written off 10 March at 18 days past due: what follows is off the book and does not count.
        loan_row(
            "V6",
            "S1",
            M("100.00"),
            D(2026, 1, 20),
            product_code="AUTO",
            status="WRITTEN_OFF",
            closed_date=D(2026, 3, 10),
        ),
    ]
    schedule = [*three_instalments("V1"), *three_instalments("V2"), *three_instalments("V3"), *three_instalments("V4")]
    schedule.append(
        {
            "loan_id": "V5",
            "installment_no": 1,
            "due_date": D(2026, 4, 10),
            "principal_due": M("100.00"),
            "interest_due": M("10.00"),
        }
    )
    schedule.append(
        {
            "loan_id": "V6",
            "installment_no": 1,
            "due_date": D(2026, 2, 20),
            "principal_due": M("100.00"),
            "interest_due": M("0.00"),
        }
    )
    pays = [
        ("V2", D(2026, 2, 15), "100.00"),
        ("V4", D(2026, 2, 15), "100.00"),
        ("V4", D(2026, 3, 20), "-100.00"),
        ("V4", D(2026, 3, 25), "100.00"),
        ("V4", D(2026, 4, 15), "200.00"),
    ]
    pays += [("V3", D(2026, m, 15), "100.00") for m in (2, 3, 4)]
    return milestone_inputs(spark, loans, schedule, pays)


def milestone_inputs(
    spark: SparkSession,
    loans: list[dict[str, Any]],
    schedule: list[dict[str, Any]],
    pays: list[tuple[str, dt.date, str]],
) -> tuple[DataFrame, DataFrame, DataFrame]:
    """Loans with no tolerance, their schedule, and the payments (loan, value date, amount) as frames."""
    repayments = [
        {"txn_id": f"t{i}", "loan_id": lid, "value_date": day, "amount": M(a)} for i, (lid, day, a) in enumerate(pays)
    ]
    book = frame(spark, LOANS, loans).withColumn(
        "delinquency__tolerance_amount", F.lit(M("0.00")).cast("decimal(18,2)")
    )
    return book, frame(spark, SCHEDULE, schedule), frame(spark, REPAYMENTS, repayments)


def test_milestones_give_first_30_90_and_fpd_dates_consistent_with_delinquency(spark: SparkSession) -> None:
    book, schedule, repayments = vintage_inputs(spark)
    levels = {"dpd30_date": 30, "dpd90_date": 90}
    out = book.transform(delinquency_milestones(VINTAGE_AS_OF, schedule, repayments, 30, levels))
    got = {r["loan_id"]: (r["dpd30_date"], r["dpd90_date"], r["fpd_date"]) for r in out.collect()}
    assert got == {
        # Nothing paid: instalment 1 (due 15 Feb) is 30 days late on 17 March, 90 on 16 May; FPD (more
        # than 30 days late) on 18 March.
        "V1": (D(2026, 3, 17), D(2026, 5, 16), D(2026, 3, 18)),
        # Instalment 2 (due 15 March) is the first unpaid: 30 days on 14 April, 90 on 13 June. No FPD.
        "V2": (D(2026, 4, 14), D(2026, 6, 13), None),
        "V3": (None, None, None),
        # The reversal on 20 March uncovers instalment 1 at 33 days late: 30+ and FPD that very day.
        "V4": (D(2026, 3, 20), None, D(2026, 3, 20)),
        # Due 10 April, unpaid: 30 days on 10 May; 90 would be 9 July, after the date; FPD 11 May.
        "V5": (D(2026, 5, 10), None, D(2026, 5, 11)),
        # Written off on 10 March at 18 days late: nothing after that counts.
        "V6": (None, None, None),
    }
    # The same rules as loan_snapshot: 30+ reached <=> max_dpd_ever >= 30; FPD date <=> the FPD flag.
    on_book = book.where("status = 'ACTIVE'")
    snap = on_book.transform(with_delinquency(VINTAGE_AS_OF, schedule, repayments, 30, 30, 6))
    for r in snap.collect():
        assert (r["max_dpd_ever"] >= 30, r["first_payment_default"]) == (
            got[r["loan_id"]][0] is not None,
            got[r["loan_id"]][2] is not None,
        ), r["loan_id"]
    # Which is why the metrics spare the loans whose max_dpd_ever is under 30 the pass: here V3 (and
    # V6, written off, is not on the book so it still takes it). Same milestones for every loan.
    quiet = snap.where("max_dpd_ever < 30").select("loan_id")
    assert [r["loan_id"] for r in quiet.collect()] == ["V3"]
    spared = book.transform(delinquency_milestones(VINTAGE_AS_OF, schedule, repayments, 30, levels, quiet))
    assert {r["loan_id"]: (r["dpd30_date"], r["dpd90_date"], r["fpd_date"]) for r in spared.collect()} == got


def test_milestones_count_every_payment_of_a_day_together(spark: SparkSession) -> None:
    # One instalment of 100 due 15 February 2026; what is paid by a day is the day's closing total.
    jan = D(2026, 1, 15)
    loans = [loan_row(lid, "S1", M("100.00"), jan) for lid in ("P1", "P2", "P3")]
    schedule = [
        {
            "loan_id": lid,
            "installment_no": 1,
            "due_date": D(2026, 2, 15),
            "principal_due": M("90.00"),
            "interest_due": M("10.00"),
        }
        for lid in ("P1", "P2", "P3")
    ]
    pays = [
        # Two part-payments on 17 March, the day the instalment would turn 30 days late: covered.
        ("P1", D(2026, 3, 17), "60.00"),
        ("P1", D(2026, 3, 17), "40.00"),
        # Paid on time; on 20 March a reversal and a new payment of the same amount: never uncovered.
        ("P2", D(2026, 2, 15), "100.00"),
        ("P2", D(2026, 3, 20), "-100.00"),
        ("P2", D(2026, 3, 20), "100.00"),
        # The same, but the new payment is 60: 60 paid from 20 March (33 days late), 90 on 16 May.
        ("P3", D(2026, 2, 15), "100.00"),
        ("P3", D(2026, 3, 20), "-100.00"),
        ("P3", D(2026, 3, 20), "60.00"),
    ]
    book, schedule_frame, repayments = milestone_inputs(spark, loans, schedule, pays)
    levels = {"dpd30_date": 30, "dpd90_date": 90}
    out = book.transform(delinquency_milestones(VINTAGE_AS_OF, schedule_frame, repayments, 30, levels))
    assert {r["loan_id"]: (r["dpd30_date"], r["dpd90_date"], r["fpd_date"]) for r in out.collect()} == {
        "P1": (None, None, None),
        "P2": (None, None, None),
        "P3": (D(2026, 3, 20), D(2026, 5, 16), D(2026, 3, 20)),
    }


def test_vintage_shares_of_disbursed_amount_by_month_on_book(spark: SparkSession) -> None:
    book, schedule, repayments = vintage_inputs(spark)
    levels = {"dpd30_date": 30, "dpd90_date": 90}
    out = book.transform(delinquency_milestones(VINTAGE_AS_OF, schedule, repayments, 30, levels)).transform(
        vintage_curves(VINTAGE_AS_OF, 60, reference(spark)["products"])
    )
    got = {
        (r["product_code"], r["disbursement_month"], r["mob"]): (
            r["loan_count"],
            r["disbursed_amount"],
            r["ever_dpd30_amount"],
            r["ever_dpd30_rate"],
            r["ever_dpd90_amount"],
            r["ever_dpd90_rate"],
            r["is_complete"],
        )
        for r in out.collect()
    }
    jan, mar = D(2026, 1, 1), D(2026, 3, 1)
    # January cohort (CONS): 4 x 270 = 1080, all at MOB 5 on 30 June (0..5 published, 0..4 complete).
    # 30+: V1 (17 Mar, MOB 2), V2 (14 Apr: 2 months 30 days after 15 Jan -> MOB 2), V4 (20 Mar, MOB 2):
    # 810 / 1080 = 75% from MOB 2. 90+: V1 (16 May, MOB 4), V2 (13 Jun, MOB 4): 540 / 1080 = 50% from MOB 4.
    for mob, ever30, ever90 in (
        (0, "0.00", "0.00"),
        (1, "0.00", "0.00"),
        (2, "810.00", "0.00"),
        (3, "810.00", "0.00"),
        (4, "810.00", "540.00"),
        (5, "810.00", "540.00"),
    ):
        rate30 = M("0.750000") if ever30 != "0.00" else M("0.000000")
        rate90 = M("0.500000") if ever90 != "0.00" else M("0.000000")
        assert got[("CONS", jan, mob)] == (4, M("1080.00"), M(ever30), rate30, M(ever90), rate90, mob < 5), mob
    # March cohort: V5 alone (10 March, MOB 3 on 30 June); 30+ on 10 May = MOB 2.
    assert [got[("CONS", mar, k)][3] for k in range(4)] == [M("0.000000")] * 2 + [M("1.000000")] * 2
    assert ("CONS", mar, 4) not in got
    # The written-off AUTO loan never reached 30 days while on the book.
    assert {got[("AUTO", jan, k)][2] for k in range(6)} == {M("0.00")}


# --------------------------------------------------------------------------------------------
# channel_scorecard and early_warnings


def test_channel_scorecard_scores_rates_and_flags_for_exit(spark: SparkSession) -> None:
    ref = reference(spark)
    book = snapshot(
        spark,
        AS_OF,
        [
            {"loan_id": "A1", "channel_id": "C1", "outstanding_principal": M("1000.00")},
            {
                "loan_id": "A2",
                "channel_id": "C1",
                "outstanding_principal": M("500.00"),
                "dpd": 20,
                "risk_class": "SPECIAL_MENTION",
            },
            {"loan_id": "A3", "channel_id": "C2", "branch_id": "S3", "outstanding_principal": M("1000.00")},
            {"loan_id": "A4", "channel_id": "C4", "outstanding_principal": M("970.00")},
            {"loan_id": "A5", "channel_id": "C4", "outstanding_principal": M("30.00"), "dpd": 5},
            {"loan_id": "A6", "channel_id": None, "outstanding_principal": M("999.00"), "dpd": 99},
        ],
    )
    history = spark.createDataFrame(
        [
            ("H1", "C1", D(2026, 6, 5), M("300.00"), D(2026, 7, 5), None),  # this month; FPD not known yet
            ("H2", "C1", D(2026, 2, 1), M("1000.00"), D(2026, 3, 1), None),
            ("H3", "C1", D(2026, 1, 10), M("500.00"), D(2026, 2, 10), D(2026, 3, 13)),
            ("H4", "C1", D(2025, 5, 1), M("800.00"), D(2025, 6, 1), D(2025, 7, 2)),  # older than 12 months
            ("H5", "C4", D(2026, 3, 1), M("100.00"), D(2026, 4, 1), None),
        ],
        "loan_id string, channel_id string, disbursement_date date, principal decimal(18,2), "
        "first_due_date date, fpd_date date",
    )
    out = ref["channels"].transform(channel_scorecard(AS_OF, MetricsConfig(), 30, book, history, ref["branches"]))
    cols = (
        "originated_count",
        "originated_amount",
        "overdue_ratio",
        "npl_ratio",
        "fpd_observed_amount",
        "fpd_amount",
        "fpd_rate",
        "score",
        "rating",
        "flagged_for_exit",
    )
    got = {r["channel_id"]: tuple(r[c] for c in cols) for r in out.collect()}
    assert got == {
        # C1: overdue 500 / 1500 = 33% (beyond 6%: 0 points); NPL 0 (100 points); FPD: H2 and H3 observed,
        # H3 defaulted: 500 / 1500 = 33% (beyond 5%: 0). Score (40*0 + 30*100 + 30*0) / 100 = 30 -> D, exit.
        "C1": (
            1,
            M("300.00"),
            M("0.333333"),
            M("0.000000"),
            M("1500.00"),
            M("500.00"),
            M("0.333333"),
            M("30.00"),
            "D",
            True,
        ),
        # C2: clean book, no loan old enough for FPD: (40*100 + 30*100) / 70 = 100 -> A.
        "C2": (0, M("0.00"), M("0.000000"), M("0.000000"), M("0.00"), M("0.00"), None, M("100.00"), "A", False),
        # C3: no loans at all: nothing to score.
        "C3": (0, M("0.00"), None, None, M("0.00"), M("0.00"), None, None, None, False),
        # C4: overdue 30 / 1000 = 3%, exactly the target: 50 points; NPL 0 and FPD 0: 100 each.
        # (40*50 + 30*100 + 30*100) / 100 = 80 -> B.
        "C4": (
            0,
            M("0.00"),
            M("0.030000"),
            M("0.000000"),
            M("100.00"),
            M("0.00"),
            M("0.000000"),
            M("80.00"),
            "B",
            False,
        ),
    }


def test_early_warnings_since_the_previous_run(spark: SparkSession) -> None:
    previous = D(2026, 6, 27)
    book = snapshot(
        spark,
        AS_OF,
        [
            {"loan_id": "E1", "risk_class": "SPECIAL_MENTION", "previous_risk_class": "NORMAL", "dpd": 3},
            {"loan_id": "E2", "risk_class": "SUBSTANDARD", "previous_risk_class": "SPECIAL_MENTION", "dpd": 91},
            {"loan_id": "E3", "risk_class": "NORMAL", "previous_risk_class": "SPECIAL_MENTION"},  # upgrade
            {"loan_id": "E4", "risk_class": "NORMAL", "previous_risk_class": None},  # new loan
            {"loan_id": "E5", "borrower_id": "B5", "risk_class": "NORMAL", "previous_risk_class": "NORMAL"},
            {"loan_id": "E6", "borrower_id": "B5", "risk_class": "NORMAL", "previous_risk_class": "NORMAL"},
        ],
    )

    def signal(
        sid: str,
        loan: str | None,
        borrower: str,
        day: dt.date,
        kind: str,
        severity: str,
        cleared: dt.date | None = None,
    ) -> dict[str, Any]:
        return {
            "signal_id": sid,
            "loan_id": loan,
            "borrower_id": borrower,
            "signal_type": kind,
            "severity": severity,
            "signal_date": day,
            "cleared_date": cleared,
        }

    signals = frame(
        spark,
        RISK_SIGNALS,
        [
            signal("G1", "E3", "B-E3", D(2026, 6, 29), "LITIGATION", "MINOR"),
            signal("G2", None, "B5", AS_OF, "FRAUD", "MAJOR"),  # borrower-level: both of B5's loans
            signal("G3", "E4", "B-E4", previous, "LITIGATION", "MINOR"),  # seen by the previous run
            signal("G4", "E4", "B-E4", D(2026, 6, 28), "LITIGATION", "MINOR", cleared=D(2026, 6, 29)),
            signal("G5", "GONE", "B-GONE", AS_OF, "FRAUD", "MAJOR"),  # loan not on the book
        ],
    )
    history = spark.createDataFrame(
        [("E5", D(2026, 5, 28), D(2026, 6, 28)), ("E6", D(2026, 5, 19), D(2026, 6, 19))],
        "loan_id string, first_due_date date, fpd_date date",
    )
    out = book.transform(early_warnings(AS_OF, previous, signals, history))
    got = {
        (r["loan_id"], r["warning_type"], r["signal_id"], r["detail"], r["severity"], r["event_date"])
        for r in out.collect()
    }
    assert got == {
        ("E1", "DOWNGRADE", None, "NORMAL->SPECIAL_MENTION", "MINOR", AS_OF),
        ("E2", "DOWNGRADE", None, "SPECIAL_MENTION->SUBSTANDARD", "MAJOR", AS_OF),
        ("E3", "NEW_SIGNAL", "G1", "LITIGATION", "MINOR", D(2026, 6, 29)),
        ("E5", "NEW_SIGNAL", "G2", "FRAUD", "MAJOR", AS_OF),
        ("E6", "NEW_SIGNAL", "G2", "FRAUD", "MAJOR", AS_OF),
        # E5's first instalment went over 30 days late on 28 June, inside (27 June, 30 June]; E6's before.
        ("E5", "FIRST_PAYMENT_DEFAULT", None, "first instalment due 2026-05-28", "MAJOR", D(2026, 6, 28)),
    }


# --------------------------------------------------------------------------------------------
# The stage


@pytest.fixture(scope="module")
def config(conf_dir: Path) -> AppConfig:
    return load_config(conf_dir)


def test_build_metrics_returns_every_table_for_the_date(spark: SparkSession, config: AppConfig) -> None:
    start, end, loans = migration_snapshots(spark)
    ref = reference(spark)
    empty = {
        name: spark.createDataFrame([], t.schema)
        for name, t in (("schedule", SCHEDULE), ("repayments", REPAYMENTS), ("risk_signals", RISK_SIGNALS))
    }
    seen: list[tuple[dt.date, dt.date]] = []

    def history(table: Any, first: dt.date, end_excl: dt.date) -> DataFrame | None:
        # Only the 31 March run exists; the year-end (31 December) has no snapshot.
        seen.append((first, end_excl))
        assert table is LOAN_SNAPSHOT
        return start if first <= START < end_excl else None

    ctx = StageContext(
        spark=spark,
        as_of=END,
        run_id="test",
        config=config,
        tables={"loans": loans, **ref, **empty},
        snapshot=end,
        previous_as_of=START,
        previous=lambda table: None,
        history=history,
        params=params_frame(spark, config, ["T1A", "T1B", None], ["CONS", "MORT", "AUTO"]),
    )
    produced = build_metrics(ctx)
    assert list(produced) == list(METRICS_TABLES)
    for table, out in produced.items():
        assert [(f.name, f.dataType) for f in out.schema] == [(c.name, c.dtype) for c in table.columns], table.name
    # Month and quarter start on 31 March (read once, 7 days of lookback); the year has no snapshot.
    assert sorted(set(seen)) == [(D(2025, 12, 24), D(2026, 1, 1)), (D(2026, 3, 24), D(2026, 4, 1))]
    periods = {
        (r["period_type"], r["grouping"]) for r in produced[MIGRATION_RATES].select("period_type", "grouping").collect()
    }
    assert periods == {(p, g) for p in ("MONTH", "QUARTER") for g in config.section("metrics").migration_groupings}
    # 30 April is a month-end: the M1 conversion target (92%) is checked. P2 cured, P3 rolled: 25%.
    cure = {
        (r["grouping"], r["group_key"]): (r["value"], r["target"], r["comparison"], r["period_start_date"])
        for r in produced[KPI_BREACHES].where("metric = 'M1_CURE_RATE'").collect()
    }
    expected = (M("0.250000"), M("0.920000"), "AT_LEAST", START)
    assert cure == {("OFFICER", "O1"): expected, ("BRANCH", "S1"): expected, ("PRODUCT", "CONS"): expected}
    assert produced[ROLL_RATES].where("grouping = 'HQ' AND from_bucket = 'M1'").first()["cure_rate"] == M("0.250000")


def test_contracts_comment_every_column_and_partition_by_date() -> None:
    for table in METRICS_TABLES:
        assert table.partition_by == ("as_of_date",) and table.columns[0].name == "as_of_date", table.name
        assert all(c.comment.strip() for c in table.columns), table.name
        assert set(table.key) <= set(table.names), table.name
        assert len(set(table.names)) == len(table.names), table.name
    assert {t.name for t in METRICS_TABLES} == {
        PORTFOLIO_METRICS.name,
        MIGRATION_RATES.name,
        ROLL_RATES.name,
        VINTAGE.name,
        KPI_BREACHES.name,
        CHANNEL_SCORECARD.name,
        EARLY_WARNINGS.name,
    }


def test_periods() -> None:
    assert period_end_before(D(2026, 5, 15), "MONTH") == D(2026, 4, 30)
    assert period_end_before(D(2026, 5, 15), "QUARTER") == D(2026, 3, 31)
    assert period_end_before(D(2026, 1, 1), "YEAR") == D(2025, 12, 31)
    assert period_end_before(D(2026, 3, 31), "QUARTER") == D(2025, 12, 31)
    assert is_period_end(D(2026, 3, 31), "QUARTER") and not is_period_end(D(2026, 4, 30), "QUARTER")
    assert is_period_end(D(2026, 2, 28), "MONTH") and not is_period_end(D(2026, 2, 27), "MONTH")


def test_shipped_metrics_yaml_matches_the_defaults(config: AppConfig) -> None:
    assert config.section("metrics") == MetricsConfig()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"channel_rating_bands": (RatingBand("A", M("50")),)}, "channel_rating_bands: needs a band with min_score 0"),
        ({"channel_exit_ratings": ("E",)}, "channel_exit_ratings: E is not a rating band"),
        ({"channel_score_components": (ScoreComponent("NPL_RATIO", M("1"), M("0")),)}, r"zero_at: must be above 0"),
        ({"targets": (KpiTarget("NPL_RATIO", M("1.5")),)}, r"targets\[0\].limit: is a ratio"),
        ({"vintage_dpd90_days": 20}, "vintage_dpd90_days: needs"),
    ],
)
def test_bad_metrics_settings_are_refused(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        MetricsConfig(**change)


def test_per_branch_overrides_of_metrics_settings_are_refused(config: AppConfig) -> None:
    rule = OverrideRule(tier1_branch="T1A", set={"metrics.vintage_max_mob": 12})
    with pytest.raises(
        ConfigError, match=r"overrides\[0\].set.metrics.vintage_max_mob: metrics settings are bank-wide"
    ):
        metrics_config(dataclasses.replace(config, overrides=(rule,)))
