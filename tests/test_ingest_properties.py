"""Bad input, generated: row faults are quarantined with a reason and counts reconcile; a file that
cannot be read stops the run with the file named and the lake untouched; a bad setting is refused
as a ConfigError naming the file and the key."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml
from hypothesis import HealthCheck, Phase, assume, example, given, settings
from hypothesis import strategies as st
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.config import ConfigError, load_config
from jobs.generate import generate_landing
from jobs.ingest import checked_counts, ingest, unreconciled
from jobs.io import LandingError, count_landing, read_landing
from jobs.masking import mask_value
from jobs.pipeline import run_nightly, settle
from schemas.base import Table
from schemas.landing import (
    AGENCIES,
    BORROWERS,
    BRANCHES,
    CHANNELS,
    COLLATERAL,
    COLLECTION_ACTIONS,
    COMPLETED_INSPECTIONS,
    GUARANTORS,
    LANDING_TABLES,
    LOAN_CHILDREN,
    LOANS,
    OFFICERS,
    OVERRIDES,
    PRODUCTS,
    REPAYMENTS,
    RISK_SIGNALS,
    SCHEDULE,
)
from tests.helpers import AS_OF, text_frame

REPO = Path(__file__).resolve().parent.parent

# Spark costs seconds per example: a whole book per example, few examples, and no shrinking (a
# failing book is printed as drawn; shrinking it would take many minutes).
SPARK_SETTINGS = settings(
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    max_examples=5,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def documented_reason_codes() -> set[str]:
    text = (REPO / "docs" / "quarantine.md").read_text(encoding="utf-8")
    return set(re.findall(r"^\| `([A-Z_]+)` \|", text, flags=re.MULTILINE))


# --------------------------------------------------------------------------------------------
# Row faults: a whole book of text rows per example, each a valid row with 0-3 corruptions

Row = dict[str, str | None]

BLANKS = [None, "", "   "]
UNPARSABLE = {
    "decimal(18,2)": ["12,5", "abc", "1.2.3", "--5", "NaN", "Infinity", "0x10", "5%", "1 000"],
    "decimal(9,6)": ["12,5", "abc", "5%", "NaN", "0,05"],
    "int": ["1.5", "abc", "１２", "12,0", "1e3", "2147483648"],
    "date": [
        "2026-13-01",
        "2026-02-30",
        "abc",
        "31/12/2026",
        "20260115",
        "１９９０-01-01",
        "2026-00-10",
        # Spark's cast reads these as dates; no calendar date is meant (or Python can hold it).
        "2026",
        "2026-06",
        "2026-01-15 junk",
        "10000-01-01",
        "0000-01-01",
        "-0001-01-01",
    ],
    "boolean": ["maybe", "2", "si", "T"],
    "timestamp": [
        "2026-05-10 25:00:00",
        "2026-02-30 09:00:00",
        "abc",
        "10/05/2026 09:30",
        # Spark's cast reads these as timestamps; no local date and time is meant.
        "2026",
        "2026-05",
        "2026-05-10",
        "09:30:00",
        "T09:30",
        "2026-05-10T09:30:00Z",
        "2026-05-10 09:30:00+08:00",
        "10000-01-01 00:00:00",
        "0000-05-10 09:30:00",
    ],
}
HUGE = {
    "decimal(18,2)": ["1e19", "12345678901234567.00", "99999999999999999999"],
    "decimal(9,6)": ["1e10", "1000.0"],
    "int": ["99999999999", "-99999999999"],
}
TOO_LARGE = ["1000000000000.00", "1000000000000", "9999999999999999.99"]
FAR_DATES = ["0001-01-01", "9999-12-31", "1900-01-01", "2999-12-31"]
# A day inside the range either side, so that Python (which reads timestamps in local time) holds them.
FAR_TIMES = ["0001-01-02 00:00:00", "9999-12-30 23:59:59", "1900-01-01T00:00", "2026-05-10 09:30:00.123456"]
BROKEN_TEXT = [
    "\ufffd\ufffd名",
    "A\x00B",
    "x\x07\x1by",
    "é\u0301\u200f",
    "名" * 3000,
    "🙂🏦",
    "'; DROP TABLE loans; --",
    '"quoted, with comma"',
]
INVALID_ENUM = ["BALLOON", "active", " ACTIVE", "???", "ＡＣＴＩＶＥ"]

ACCEPT, REFUSE, UNKNOWN = "accept", "refuse", "unknown"


@dataclass(frozen=True)
class Spec:
    """How rows of one table are corrupted: references (column -> reason), free text, a column
    to alter for a duplicate key with different content."""

    table: Table
    refs: dict[str, str]
    text: tuple[str, ...]
    alter: str
    # A real calendar date far out: loans and their schedules check date order (the row's fate
    # depends on the other dates); the other tables check none, so it is accepted.
    far: str = UNKNOWN


SPECS = {
    "loans": Spec(
        LOANS,
        {"branch_id": "UNKNOWN_REFERENCE", "product_code": "UNKNOWN_REFERENCE", "borrower_id": "UNKNOWN_REFERENCE"},
        ("officer_id",),
        "officer_id",
    ),
    "schedule": Spec(SCHEDULE, {"loan_id": "UNKNOWN_LOAN"}, (), "interest_due"),
    "repayments": Spec(REPAYMENTS, {"loan_id": "UNKNOWN_LOAN"}, (), "value_date"),
    "borrowers": Spec(BORROWERS, {}, ("name", "phone"), "phone"),
    "branches": Spec(BRANCHES, {"parent_id": "UNKNOWN_REFERENCE"}, ("name",), "name"),
    "products": Spec(PRODUCTS, {}, ("name", "category"), "name"),
    "agencies": Spec(AGENCIES, {}, ("name", "region_codes"), "name"),
    # Optional extracts. Their references to officers, branches, channels, borrowers and agencies
    # are not checked (an absent optional table would otherwise refuse them all): free text here.
    "officers": Spec(OFFICERS, {}, ("name", "branch_id"), "name", ACCEPT),
    "channels": Spec(CHANNELS, {}, ("name", "branch_id", "manager_officer_id"), "name", ACCEPT),
    "risk_signals": Spec(RISK_SIGNALS, {"loan_id": "UNKNOWN_LOAN"}, ("borrower_id",), "borrower_id", ACCEPT),
    "overrides": Spec(OVERRIDES, {"loan_id": "UNKNOWN_LOAN"}, ("reason", "approver"), "reason", ACCEPT),
    "collateral": Spec(COLLATERAL, {"loan_id": "UNKNOWN_LOAN"}, (), "appraised_value", ACCEPT),
    "guarantors": Spec(GUARANTORS, {"loan_id": "UNKNOWN_LOAN"}, ("name", "phone"), "phone", ACCEPT),
    "completed_inspections": Spec(
        COMPLETED_INSPECTIONS, {"loan_id": "UNKNOWN_LOAN"}, ("task_id", "task_type", "channel_id"), "task_type", ACCEPT
    ),
    "collection_actions": Spec(
        COLLECTION_ACTIONS, {"loan_id": "UNKNOWN_LOAN"}, ("action_type", "outcome", "agency_id"), "outcome", ACCEPT
    ),
}
KINDS = (
    "blank",
    "unparsable",
    "huge",
    "too_large",
    "invalid",
    "negative",
    "unknown_ref",
    "text",
    "far_date",
    "dup_row",
    "dup_key",
)
KINDS_REPAYMENTS = (*KINDS, "reversal")


@dataclass
class Expect:
    """What the oracle knows of one delivered row (and its copies)."""

    table: str
    key: tuple[str, ...] | None
    verdict: str
    fragments: set[str] = field(default_factory=set)
    ref: str | None = None  # loan children: the loan named; branches: the parent (if untouched)


@dataclass
class Book:
    rows: dict[str, list[Row]]
    expect: list[Expect]


def _dtype(table: Table, name: str) -> str:
    return table.column(name).dtype.simpleString()


def _corrupt_row(draw: Any, spec: Spec, row: Row, kinds: list[str], serial: str) -> tuple[list[Row], Expect]:
    """Apply the drawn corruptions to `row`; the delivered copies and what must become of them."""
    table = spec.table
    row = dict(row)
    # column -> (verdict, reason fragment or None); a later corruption of a column replaces it
    state: dict[str, tuple[str, str | None]] = {}
    copies, different_copy = 0, False
    for kind in kinds:
        if kind == "blank":
            name = draw(st.sampled_from(table.names))
            row[name] = draw(st.sampled_from(BLANKS))
            column = table.column(name)
            if column.nullable:
                state[name] = (ACCEPT, None)
            else:
                code = "NULL_KEY" if name in table.key else "MISSING_VALUE"
                state[name] = (REFUSE, f"{code}:{name}")
        elif kind in ("unparsable", "huge"):
            pool = UNPARSABLE if kind == "unparsable" else HUGE
            typed = [c.name for c in table.columns if _dtype(table, c.name) in pool]
            if not typed:
                continue
            name = draw(st.sampled_from(typed))
            row[name] = draw(st.sampled_from(pool[_dtype(table, name)]))
            state[name] = (REFUSE, f"UNPARSABLE_VALUE:{name}")
        elif kind == "too_large":
            # Parses as decimal(18,2), but no retail amount comes near it (schemas.landing.MAX_AMOUNT).
            amounts = [c.name for c in table.columns if _dtype(table, c.name) == "decimal(18,2)"]
            if not amounts:
                continue
            name = draw(st.sampled_from(amounts))
            row[name] = draw(st.sampled_from(TOO_LARGE))
            state[name] = (REFUSE, f"AMOUNT_OUT_OF_RANGE:{name}")
        elif kind == "invalid":
            enums = [c.name for c in table.columns if c.allowed]
            if not enums:
                continue
            name = draw(st.sampled_from(enums))
            row[name] = draw(st.sampled_from(INVALID_ENUM))
            state[name] = (REFUSE, f"INVALID_VALUE:{name}")
        elif kind == "negative":
            signed = [c.name for c in table.columns if c.non_negative]
            if not signed:
                continue
            name = draw(st.sampled_from(signed))
            row[name] = "-3" if _dtype(table, name) == "int" else draw(st.sampled_from(["-0.01", "-5.00", "-1e3"]))
            state[name] = (REFUSE, f"NEGATIVE_AMOUNT:{name}")
        elif kind == "reversal":
            row["amount"] = draw(st.sampled_from(["-505.00", "-0.01"]))
            state["amount"] = (ACCEPT, None)
        elif kind == "unknown_ref":
            if not spec.refs:
                continue
            name = draw(st.sampled_from(sorted(spec.refs)))
            row[name] = f"NOPE-{serial}"
            state[name] = (REFUSE, f"{spec.refs[name]}:{name}")
        elif kind == "text":
            if not spec.text:
                continue
            name = draw(st.sampled_from(spec.text))
            row[name] = draw(st.sampled_from(BROKEN_TEXT))
            state[name] = (ACCEPT, None)
        elif kind == "far_date":
            dates = [c.name for c in table.columns if _dtype(table, c.name) in ("date", "timestamp")]
            if not dates:
                continue
            name = draw(st.sampled_from(dates))
            row[name] = draw(st.sampled_from(FAR_DATES if _dtype(table, name) == "date" else FAR_TIMES))
            # A real calendar date: accepted or refused by the date-order checks, not by parsing.
            state[name] = (spec.far, None)
        elif kind == "dup_row":
            copies += 1
        elif kind == "dup_key":
            different_copy = True
    faults = {k: state[k][1] or "" for k in table.key if k in state}
    key_blank = any(f.startswith("NULL_KEY") for f in faults.values())
    # A key part that does not parse is null after parsing: no duplicate check applies to it.
    key_parsed = not any(f.startswith(("NULL_KEY", "UNPARSABLE_VALUE")) for f in faults.values())
    key = None if key_blank else tuple(str(row[k]) for k in table.key)
    verdicts = {v for v, _ in state.values()}
    fragments = {f for _, f in state.values() if f}
    if different_copy:
        verdicts.add(REFUSE)
        if key_parsed:
            fragments.add(f"DUPLICATE_KEY:{','.join(table.key)}")
    verdict = REFUSE if REFUSE in verdicts else UNKNOWN if UNKNOWN in verdicts else ACCEPT
    delivered = [row] * (1 + copies)
    if different_copy:
        other = dict(row)
        alternatives = {
            "officer_id": ["O9", "O8"],
            "interest_due": ["7.00", "8.00"],
            "value_date": ["2026-03-01", "2026-04-01"],
            "appraised_value": ["7.00", "8.00"],
        }
        for candidate in [*alternatives.get(spec.alter, []), "other", "another"]:
            if candidate != row[spec.alter]:
                other[spec.alter] = candidate
                break
        delivered.append(other)
    column = "parent_id" if table is BRANCHES else "loan_id" if table in LOAN_CHILDREN else None
    ref = row[column] if column is not None and column not in state else None
    return delivered, Expect(table.name, key, verdict, fragments, ref)


LOAN: Row = {
    "loan_id": "L1",
    "borrower_id": "B1",
    "product_code": "P1",
    "branch_id": "S1",
    "officer_id": "O1",
    "channel_id": None,
    "principal": "1000.00",
    "disbursement_date": "2026-01-10",
    "maturity_date": "2027-01-10",
    "repayment_method": "EQUAL_INSTALLMENT",
    "payment_mode": "ENTRUSTED",
    "annual_rate": "0.05",
    "collateral_type": "CREDIT",
    "restructured_date": None,
    "restructure_count": None,
    "restructured_from_npl": None,
    "status": "ACTIVE",
    "closed_date": None,
}
# Referenced by every loan; never corrupted, so an uncorrupted loan's references are intact.
CORE: dict[str, list[Row]] = {
    "branches": [
        {"branch_id": "HQ", "parent_id": None, "level": "HQ", "name": "總行", "region_code": "R0"},
        {"branch_id": "S1", "parent_id": "HQ", "level": "SUB", "name": "支行", "region_code": "R1"},
    ],
    "products": [
        {
            "product_code": "P1",
            "name": "消費貸",
            "category": "CONSUMER",
            "low_risk": "false",
            "refinance_designed": None,
        }
    ],
    "borrowers": [
        {
            "borrower_id": "B1",
            "name": "張三豐",
            "id_number": "110101199003071234",
            "phone": "13800138000",
            "region_code": "R1",
        }
    ],
    "agencies": [],
    "officers": [],
    "channels": [],
}


def _noise(name: str, i: int, parents: list[str]) -> Row:
    """A dimension row nobody's loan references (free to corrupt)."""
    if name == "branches":
        return {
            "branch_id": f"BR{i}",
            "parent_id": parents[-1],
            "level": "TIER2",
            "name": f"分行{i}",
            "region_code": "R2",
        }
    if name == "products":
        return {
            "product_code": f"PN{i}",
            "name": f"產品{i}",
            "category": "AUTO",
            "low_risk": "yes",
            "refinance_designed": "0",
        }
    if name == "borrowers":
        return {
            "borrower_id": f"BN{i}",
            "name": "李四",
            "id_number": f"1101011990030756{i:02d}",
            "phone": None,
            "region_code": "R2",
        }
    if name == "officers":
        return {
            "officer_id": f"ON{i}",
            "name": f"經理{i}",
            "branch_id": "S1",
            "role": "CUSTOMER_MANAGER",
            "active": "Y",
        }
    if name == "channels":
        return {
            "channel_id": f"CH{i}",
            "name": f"渠道{i}",
            "branch_id": "S1",
            "manager_officer_id": "O1",
            "status": "ACTIVE",
            "onboarded_date": "2025-01-01",
        }
    return {"agency_id": f"AN{i}", "name": f"催收{i}", "region_codes": "R1,R2", "capacity": "10", "status": "ACTIVE"}


def _loan_extras(i: int) -> dict[str, Row]:
    """One row of each optional extract that names loan L{i}."""
    loan = f"L{i}"
    return {
        "risk_signals": {
            "signal_id": f"RS{i}",
            "loan_id": loan,
            "borrower_id": "B1",
            "signal_type": "OTHER_BANK_OVERDUE",
            "severity": "MINOR",
            "signal_date": "2026-03-01",
            "cleared_date": None,
            "days_overdue": "45",
            "has_estate": None,
        },
        "overrides": {
            "override_id": f"OV{i}",
            "loan_id": loan,
            "risk_class": "SUBSTANDARD",
            "reason": "人工認定",
            "approver": "O2",
            "approved_date": "2026-04-01",
            "expiry_date": "2026-12-31",
        },
        "collateral": {
            "collateral_id": f"C{i}",
            "loan_id": loan,
            "collateral_type": "MORTGAGE",
            "appraised_value": "250000.00",
            "valuation_date": "2025-12-20",
        },
        "guarantors": {
            "guarantor_id": f"G{i}",
            "loan_id": loan,
            "name": "王五",
            "id_number": "110101198001011234",
            "phone": "13900139000",
        },
        "completed_inspections": {
            "inspection_id": f"I{i}",
            "task_id": None,
            "task_type": "FIRST_CALLBACK",
            "loan_id": loan,
            "channel_id": None,
            "completed_date": "2026-01-15",
            "officer_id": "O1",
            "outcome": "NORMAL",
        },
        "collection_actions": {
            "action_id": f"A{i}",
            "loan_id": loan,
            "action_type": "PHONE",
            "action_time": "2026-05-10 09:30:00",
            "contact_type": "BORROWER",
            "outcome": "CONTACTED",
            "agency_id": None,
        },
    }


def _kinds(name: str) -> st.SearchStrategy[list[str]]:
    pool = KINDS_REPAYMENTS if name == "repayments" else KINDS
    return st.one_of(st.just([]), st.lists(st.sampled_from(pool), min_size=1, max_size=3))


@st.composite
def books(draw: Any) -> Book:
    rows: dict[str, list[Row]] = {t.name: [] for t in LANDING_TABLES}
    expect: list[Expect] = []
    # (table, id as generated) -> its fate, for the rows that reference it
    origin: dict[tuple[str, str], Expect] = {}

    def deliver(name: str, base: Row, serial: str) -> None:
        delivered, e = _corrupt_row(draw, SPECS[name], base, draw(_kinds(name)), serial)
        rows[name].extend(delivered)
        expect.append(e)
        origin[(name, str(base[SPECS[name].table.key[0]]))] = e

    for name, core in CORE.items():
        rows[name].extend(core)
        expect.extend(Expect(name, tuple(str(r[k]) for k in SPECS[name].table.key), ACCEPT) for r in core)
        parents = ["HQ"]
        for i in range(draw(st.integers(0, 3))):
            deliver(name, _noise(name, i, parents), f"{name}{i}")
            # A chain: the next noise branch hangs under this one, whatever becomes of it.
            parents.append(f"BR{i}")
    for i in range(1, draw(st.integers(3, 8)) + 1):
        deliver("loans", {**LOAN, "loan_id": f"L{i}"}, f"L{i}")
        for n in range(1, draw(st.integers(1, 3)) + 1):
            base = {
                "loan_id": f"L{i}",
                "installment_no": str(n),
                "due_date": f"2026-{n + 1:02d}-10",
                "principal_due": "500.00",
                "interest_due": "5.00",
            }
            deliver("schedule", base, f"L{i}-{n}")
        for j in range(draw(st.integers(0, 2))):
            base = {"txn_id": f"T{i}-{j}", "loan_id": f"L{i}", "value_date": f"2026-0{j + 2}-10", "amount": "505.00"}
            deliver("repayments", base, f"T{i}-{j}")
        for name, extra in _loan_extras(i).items():
            if draw(st.booleans()):
                deliver(name, extra, f"{name}{i}")
    _cascade(expect, origin)
    return Book(rows, expect)


def _cascade(expect: list[Expect], origin: dict[tuple[str, str], Expect]) -> None:
    """A branch under a refused branch is refused (the parent must be among accepted rows); a
    child of a refused loan goes with it. Rows come in delivery order, parents first."""
    for e in expect:
        if e.ref is None or e.verdict == REFUSE:
            continue
        target = origin.get(("branches" if e.table == "branches" else "loans", e.ref))
        if target is None or target.verdict == ACCEPT:
            continue
        if target.verdict == UNKNOWN:
            e.verdict = UNKNOWN
        elif e.table == "branches":
            e.verdict = REFUSE
            e.fragments.add("UNKNOWN_REFERENCE:parent_id")
        else:
            e.verdict = REFUSE
            e.fragments.add(f"{'LOAN_QUARANTINED' if target.key is not None else 'UNKNOWN_LOAN'}:loan_id")


def _frames(spark: SparkSession, book: Book) -> dict[str, DataFrame]:
    return {t.name: text_frame(spark, t, book.rows[t.name]) for t in LANDING_TABLES}


def _key(table: Table, row: Any) -> tuple[str, ...]:
    return tuple(str(row[k]) for k in table.key)


@SPARK_SETTINGS
@given(book=books())
def test_every_generated_row_is_accepted_or_quarantined_with_its_reason(spark: SparkSession, book: Book) -> None:
    raw = _frames(spark, book)
    result = ingest(raw, "run-prop", AS_OF, settle)  # (a) row faults never raise

    # (b) counts reconcile, table by table
    delivered = {name: len(rows) for name, rows in book.rows.items()}
    counts = {t.name: checked_counts(result, t.name) for t in LANDING_TABLES}
    accepted_n = {name: a for name, (a, _) in counts.items()}
    refused_n = {name: q for name, (_, q) in counts.items()}
    assert unreconciled(delivered, accepted_n, refused_n) == []

    # (c) every quarantine row has a documented reason and its source table
    quarantine = result.quarantine().collect()
    codes = documented_reason_codes()
    by_source: dict[str, int] = {}
    details: dict[tuple[str, str], list[str]] = {}
    for q in quarantine:
        assert q["reason_code"] in codes, q
        assert q["source_table"] in delivered, q
        assert q["reason_detail"] and q["reason_detail"].startswith(q["reason_code"] + ":"), q
        by_source[q["source_table"]] = by_source.get(q["source_table"], 0) + 1
        details.setdefault((q["source_table"], q["record_key"]), []).append(q["reason_detail"])
    assert by_source == {name: n for name, n in refused_n.items() if n}

    # (d) accepted rows keep the contract; dates are ones a reader of the lake can hold
    accepted: dict[str, list[Any]] = {}
    for table in LANDING_TABLES:
        frame = result.tables[table.name]
        for c in table.columns:
            if c.dtype.simpleString() in ("date", "timestamp"):
                odd = frame.where(~F.year(c.name).between(1, 9999)).select(c.name).collect()
                assert not odd, f"{table.name}.{c.name} accepted dates outside years 1-9999: {odd}"
        accepted[table.name] = frame.collect()
        assert len(accepted[table.name]) == accepted_n[table.name]
        for row in accepted[table.name]:
            for c in table.columns:
                value = row[c.name]
                if not c.nullable:
                    assert value is not None and str(value).strip() != "", (table.name, c.name, row)
                if c.allowed and value is not None:
                    assert value in c.allowed, (table.name, c.name, row)
                if c.non_negative and value is not None:
                    assert value >= 0, (table.name, c.name, row)
        keys = [_key(table, r) for r in accepted[table.name]]
        assert len(keys) == len(set(keys)), f"{table.name}: duplicate keys accepted"
    ids = {name: {_key(s.table, r)[0] for r in accepted[name]} for name, s in SPECS.items() if name in CORE}
    loan_ids = {r["loan_id"] for r in accepted["loans"]}
    for r in accepted["loans"]:
        assert r["branch_id"] in ids["branches"] and r["product_code"] in ids["products"], r
        assert r["borrower_id"] in ids["borrowers"], r
    for r in accepted["branches"]:
        assert r["parent_id"] is None or r["parent_id"] in ids["branches"], r
    for child in LOAN_CHILDREN:
        for r in accepted[child.name]:
            # Nullable in risk signals (a borrower's every loan) and inspections (channel checks).
            assert r["loan_id"] in loan_ids or (r["loan_id"] is None and child.column("loan_id").nullable), r
    for r in accepted["schedule"]:
        assert r["due_date"] >= next(x for x in accepted["loans"] if x["loan_id"] == r["loan_id"])["disbursement_date"]

    # (e) the oracle: what was corrupted to be refused is not accepted, and why; the rest is accepted
    accepted_keys = {name: {_key(SPECS[name].table, r) for r in accepted[name]} for name in SPECS}
    for e in book.expect:
        if e.key is None:
            continue
        if e.verdict == ACCEPT:
            assert e.key in accepted_keys[e.table], e
        elif e.verdict == REFUSE:
            assert e.key not in accepted_keys[e.table], e
            found = "; ".join(details.get((e.table, "|".join(e.key)), []))
            for fragment in e.fragments:
                assert fragment in found, (e, found)


# --------------------------------------------------------------------------------------------
# File faults: the run stops with the file named, before anything is written


@pytest.fixture(scope="module")
def small_book(tmp_path_factory: pytest.TempPathFactory, spark: SparkSession) -> Iterator[tuple[Path, Path]]:
    """A generated landing zone and a lake that already holds a Delta table (never rewritten here)."""
    root = tmp_path_factory.mktemp("file_faults")
    landing, lake = root / "landing", root / "lake"
    generate_landing(spark, 60, AS_OF, 7, landing, "parquet")
    lake.mkdir()
    spark.range(3).write.format("delta").save(str(lake / "earlier"))
    yield landing, lake


def lake_state(lake: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(lake)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(lake.rglob("*"))}


@dataclass(frozen=True)
class FileFault:
    table: str
    kind: str
    detail: Any = None


REQUIRED = [t for t in LANDING_TABLES if not t.optional]


@st.composite
def file_faults(draw: Any) -> FileFault:
    table = draw(st.sampled_from(REQUIRED))
    kind = draw(st.sampled_from(["truncated", "random_bytes", "missing_column", "csv_header", "csv_bytes", "empty"]))
    if kind == "truncated":
        return FileFault(table.name, kind, draw(st.floats(0.0, 0.999)))
    if kind == "random_bytes":
        body = draw(st.binary(max_size=300))
        return FileFault(table.name, kind, draw(st.sampled_from([b"", b"PAR1"])) + body + b"PAR1")
    if kind == "missing_column":
        return FileFault(table.name, kind, draw(st.sampled_from(table.names)))
    if kind == "csv_header":
        dropped = draw(st.sampled_from(table.names))
        separator = draw(st.sampled_from([",", ";", "\t", "|"]))
        header = separator.join(n for n in table.names if n != dropped or separator != ",")
        return FileFault(table.name, kind, (header, dropped if separator == "," else table.names[0]))
    if kind == "csv_bytes":
        junk = draw(st.binary(min_size=1, max_size=40).filter(_not_utf8))
        return FileFault(table.name, kind, junk)
    return FileFault(table.name, kind)


def _not_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def apply_fault(landing: Path, fault: FileFault, table: Table) -> tuple[Path, str | None]:
    """Break one table's folder; the file to be named and the column, if one is missing."""
    folder = landing / fault.table
    part = sorted(folder.glob("*.parquet"))[0]
    if fault.kind == "truncated":
        data = part.read_bytes()
        part.write_bytes(data[: int(len(data) * fault.detail)])
        return part, None
    if fault.kind == "random_bytes":
        part.write_bytes(fault.detail)
        return part, None
    if fault.kind == "missing_column":
        pq.write_table(pq.read_table(part).drop_columns([fault.detail]), part)
        return part, fault.detail
    for p in folder.iterdir():
        p.unlink()
    target = folder / "extract.csv"
    if fault.kind == "csv_header":
        header, missing = fault.detail
        target.write_text(f"{header}\nx\n", encoding="utf-8")
        return target, missing
    if fault.kind == "csv_bytes":
        target.write_bytes(fault.detail + b"\n1\n")
        return target, None
    target.write_bytes(b"")
    return target, table.names[0]


# read_landing refuses these before Spark reads a byte: many examples are cheap.
@settings(SPARK_SETTINGS, max_examples=30)
@given(fault=file_faults())
def test_unusable_file_stops_reading_with_the_file_named(
    spark: SparkSession, small_book: tuple[Path, Path], fault: FileFault
) -> None:
    landing, lake = small_book
    before = lake_state(lake)
    with tempfile.TemporaryDirectory() as scratch:
        broken = Path(scratch) / "landing"
        shutil.copytree(landing / fault.table, broken / fault.table)
        table = next(t for t in LANDING_TABLES if t.name == fault.table)
        path, column = apply_fault(broken, fault, table)
        with pytest.raises(LandingError) as raised:
            read_landing(spark, broken, table)
    message = str(raised.value)
    assert raised.value.where == str(path), message
    assert message.startswith(f"{path}: "), message
    if column is not None:
        assert message.endswith(f"missing column {column}"), message
    assert "\n" not in message
    assert lake_state(lake) == before


def test_nightly_run_on_a_truncated_file_stops_before_writing(
    spark: SparkSession, small_book: tuple[Path, Path], conf_dir: Path, tmp_path: Path
) -> None:
    landing, lake = small_book
    broken = tmp_path / "landing"
    shutil.copytree(landing, broken)
    part = sorted((broken / "repayments").glob("*.parquet"))[-1]
    part.write_bytes(part.read_bytes()[:-9])
    before = lake_state(lake)
    with pytest.raises(LandingError, match=rf"^{re.escape(str(part))}: unreadable Parquet file"):
        run_nightly(spark, load_config(conf_dir), AS_OF, broken, lake)
    assert lake_state(lake) == before
    assert before, "the lake held a table before the run"


# --------------------------------------------------------------------------------------------
# Bytes that are not UTF-8 inside CSV bodies: the row is refused (INVALID_ENCODING) and shown
# safely, the rest of the file is used, and counts reconcile

# A required table and an optional one, both with personal data. Borrower B1 and loan L1 (every
# guarantor's loan) are delivered intact, so only the bytes decide a row's fate.
ENCODED = (BORROWERS, GUARANTORS)
CSV_BASE: dict[str, list[Row]] = {**{k: v for k, v in CORE.items() if k != "borrowers"}, "loans": [LOAN]}
# Valid UTF-8: a legitimate U+FFFD, four-byte characters and backslashes are ordinary text.
CLEAN_TEXT = st.text(alphabet="abcXYZ019-_.名張三豐\ufffd🙂é\\", min_size=1, max_size=6)
# High bytes only: never a comma, a quote or a line end, so the rows and fields stay as they were.
HIGH_BYTES = st.binary(min_size=1, max_size=3).map(lambda data: bytes(0x80 | b for b in data))


@dataclass(frozen=True)
class CsvDelivery:
    """Per table, the files delivered: rows of fields, as bytes, in the contract's column order."""

    files: dict[str, list[list[list[bytes]]]]
    newline: bytes


@st.composite
def _corrupted(draw: Any, data: bytes) -> bytes:
    """Stray high bytes put in, or a character cut short (whether the result is still UTF-8 is
    for the oracle to find out)."""
    high = [i for i, b in enumerate(data) if b >= 0x80]
    if high and draw(st.booleans()):
        at = draw(st.sampled_from(high))
        return data[:at] + data[at + 1 :]
    at = draw(st.integers(0, len(data)))
    return data[:at] + draw(HIGH_BYTES) + data[at:]


@st.composite
def csv_deliveries(draw: Any) -> CsvDelivery:
    files: dict[str, list[list[list[bytes]]]] = {}
    for table in ENCODED:
        rows: list[list[bytes]] = []
        if table is BORROWERS:
            rows.append([v.encode() for v in ("B1", "張三豐", "110101199003071234", "13800138000", "R1")])
        for i in range(draw(st.integers(2, 6))):
            ids = {"borrower_id": f"BE{i}", "guarantor_id": f"GE{i}", "loan_id": "L1"}
            row = [ids[c].encode() if c in ids else draw(CLEAN_TEXT).encode() for c in table.names]
            # The first row always gets a corruption (nearly always bytes that are not UTF-8).
            for name in draw(st.lists(st.sampled_from(table.names), min_size=int(i == 0), max_size=2, unique=True)):
                at = table.names.index(name)
                row[at] = draw(_corrupted(row[at]))
            rows.append(row)
        # Two files: one may be clean (read as UTF-8, as before) beside a broken one.
        cut = draw(st.integers(1, len(rows) - 1))
        files[table.name] = [rows[:cut], rows[cut:]]
    return CsvDelivery(files, draw(st.sampled_from([b"\n", b"\r\n"])))


def _shown(data: bytes) -> str:
    """The oracle's rendering of a field: UTF-8 as is; otherwise Python's own UTF-8 decoder, each
    byte it cannot place as \\xNN and a delivered backslash doubled."""
    if not _not_utf8(data):
        return data.decode("utf-8")
    return data.replace(b"\\", b"\\\\").decode("utf-8", "backslashreplace")


def _write_csv(landing: Path, delivery: CsvDelivery) -> None:
    for table in ENCODED:
        folder = landing / table.name
        folder.mkdir(parents=True)
        for n, rows in enumerate(delivery.files[table.name]):
            lines = [",".join(table.names).encode(), *(b",".join(row) for row in rows)]
            (folder / f"part-{n}.csv").write_bytes(delivery.newline.join(lines) + delivery.newline)


@settings(SPARK_SETTINGS, max_examples=3)
@given(delivery=csv_deliveries())
def test_csv_row_with_bytes_that_are_not_utf8_is_quarantined_and_shown_safely(
    spark: SparkSession, delivery: CsvDelivery
) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        landing = Path(scratch)
        _write_csv(landing, delivery)
        raw = {t.name: text_frame(spark, t, CSV_BASE.get(t.name, [])) for t in LANDING_TABLES}
        for table in ENCODED:
            raw[table.name] = read_landing(spark, landing, table)
        counted = {t.name: count_landing(spark, landing, t, raw[t.name]) for t in ENCODED}
        result = ingest(raw, "run-bytes", AS_OF, settle)  # never raises
        counts = {t.name: checked_counts(result, t.name) for t in ENCODED}
        refused = {(q["source_table"], q["record_key"]): q for q in result.quarantine().collect()}
        accepted = {t.name: {r[t.key[0]]: r.asDict() for r in result.accepted(t.name).collect()} for t in ENCODED}

    for table in ENCODED:
        rows = [row for part in delivery.files[table.name] for row in part]
        assert counted[table.name] == len(rows)
        expect_refused = 0
        for row in rows:
            fields = dict(zip(table.names, row, strict=True))
            bad = [c for c in table.names if _not_utf8(fields[c])]
            key = _shown(fields[table.key[0]])
            if not bad:
                # Accepted exactly as delivered: nothing replaced (a delivered U+FFFD stays).
                assert accepted[table.name][key] == {c: v.decode("utf-8") for c, v in fields.items()}
                continue
            expect_refused += 1
            assert key not in accepted[table.name]
            q = refused[(table.name, key)]
            # Every column that is not UTF-8, and nothing else: its value is unknown, not wrong.
            assert q["reason_code"] == "INVALID_ENCODING", q
            assert q["reason_detail"] == "; ".join(f"INVALID_ENCODING:{c}" for c in bad), q
            record = json.loads(q["raw_record"])
            for c in table.names:
                shown = _shown(fields[c])
                assert record[c] == (mask_value(c, shown) if table.column(c).pii else shown), (c, fields[c], record)
        assert counts[table.name] == (len(rows) - expect_refused, expect_refused)
    assert len(refused) == sum(q for _, q in counts.values())


# --------------------------------------------------------------------------------------------
# Configuration: garbage values are refused as ConfigError naming the file and the key

GARBAGE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(max_value=-1),
    st.floats(),
    st.sampled_from(["nan", "-inf", "Infinity", "1e999999", "thirty", "", " ", "0x1F", "１２"]),
    st.text(max_size=12),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), min_size=1, max_size=2),
)
SETTINGS_KEYS = [
    ("postloan.yaml", ("delinquency", "fpd_days")),
    ("postloan.yaml", ("delinquency", "tolerance_amount")),
    ("postloan.yaml", ("delinquency", "bucket_count")),
    ("profiles/cbirc_2023.yaml", ("dpd_substandard_above",)),
    ("profiles/cbirc_2023.yaml", ("technical_grace_days",)),
    ("profiles/cbirc_2023.yaml", ("override_keeps_npl_dpd_floor",)),
    ("profiles/cbirc_2023.yaml", ("signal_floors", "LITIGATION")),
    ("spark/local.yaml", ("app_name",)),
    ("inspections.yaml", ("sample_ratio",)),
    ("inspections.yaml", ("sample_due_day",)),
]


def _acceptable(key: str, value: Any) -> bool:
    """Whether a value is a legitimate setting for the key (such draws are not garbage)."""
    if key == "override_keeps_npl_dpd_floor":
        return isinstance(value, bool)
    if key == "app_name":
        return isinstance(value, str)
    if key == "LITIGATION":
        return value in ("NORMAL", "SPECIAL_MENTION", "SUBSTANDARD", "DOUBTFUL", "LOSS")
    if key == "sample_ratio":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1
    if key == "sample_due_day":
        return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 31
    if key == "tolerance_amount":
        if isinstance(value, bool) or value is None or isinstance(value, (list, dict)):
            return False
        try:
            number = Decimal(str(value))
        except InvalidOperation:
            return False
        return number.is_finite() and number >= 0
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


@pytest.mark.parametrize("where", SETTINGS_KEYS, ids=lambda w: ".".join(w[1]))
@settings(max_examples=20, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=GARBAGE)
@example(value=float("nan"))
@example(value=float("inf"))
@example(value="Infinity")
@example(value=2)
@example(value=40)
def test_garbage_setting_is_refused_naming_file_and_key(
    conf_dir: Path, tmp_path: Path, where: tuple[str, tuple[str, ...]], value: Any
) -> None:
    file, path = where
    assume(not _acceptable(path[-1], value))
    with tempfile.TemporaryDirectory(dir=tmp_path) as scratch:
        conf = Path(scratch) / "conf"
        shutil.copytree(conf_dir, conf)
        data = yaml.safe_load((conf / file).read_text(encoding="utf-8"))
        holder = data
        for part in path[:-1]:
            holder = holder[part]
        holder[path[-1]] = value
        (conf / file).write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
        with pytest.raises(ConfigError) as raised:
            load_config(conf)
    dotted = ".".join(path)
    assert raised.value.file.endswith(file)
    # The key is named as ConfigError's key, or (a section's own range checks) in its reason.
    assert raised.value.key in (dotted, "(top level)") or raised.value.key.startswith(dotted + "."), raised.value
    assert path[-1] in str(raised.value)


@settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(junk=st.binary(min_size=1, max_size=64).filter(_not_utf8))
def test_configuration_file_with_broken_encoding_is_refused_naming_the_file(
    conf_dir: Path, tmp_path: Path, junk: bytes
) -> None:
    with tempfile.TemporaryDirectory(dir=tmp_path) as scratch:
        conf = Path(scratch) / "conf"
        shutil.copytree(conf_dir, conf)
        main = conf / "postloan.yaml"
        main.write_bytes(main.read_bytes() + b"\n# " + junk + b"\n")
        with pytest.raises(ConfigError) as raised:
            load_config(conf)
    assert raised.value.file == str(main)
    assert raised.value.key == "(file)"
