"""Expected API figures computed directly from Delta rows, in plain Python with Decimal."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from schemas.lake import BUCKETS, NPL_CLASSES, RISK_CLASSES

GROUP_COLUMN = {
    "HQ": None,
    "TIER1_BRANCH": "tier1_branch_id",
    "TIER2_BRANCH": "tier2_branch_id",
    "BRANCH": "branch_id",
    "PRODUCT": "product_code",
    "CHANNEL": "channel_id",
    "OFFICER": "officer_id",
}
ZERO = Decimal("0.00")


def in_scope(row: dict[str, Any], scope: str | None) -> bool:
    return scope is None or scope in (row["branch_path"] or [])


def group_key(row: dict[str, Any], grouping: str) -> str:
    column = GROUP_COLUMN[grouping]
    if column is None:
        return "HQ"
    return row[column] if row[column] is not None else "NONE"


def ratio(part: Decimal, whole: Decimal) -> float | None:
    if whole == 0:
        return None
    return float((part / whole).quantize(Decimal("0.000001"), rounding=ROUND_HALF_UP))


def portfolio(rows: Iterable[dict[str, Any]], grouping: str) -> dict[str, dict[str, Any]]:
    """key -> figures, as the API's PortfolioRow (money as Decimal)."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[group_key(row, grouping)].append(row)
    out: dict[str, dict[str, Any]] = {}
    for key, members in groups.items():
        balance = sum((r["outstanding_principal"] for r in members), ZERO)
        overdue = [r for r in members if r["dpd"] > 0]
        npl = [r for r in members if r["risk_class"] in NPL_CLASSES]
        overdue_balance = sum((r["outstanding_principal"] for r in overdue), ZERO)
        npl_balance = sum((r["outstanding_principal"] for r in npl), ZERO)
        out[key] = {
            "loanCount": len(members),
            "balance": balance,
            "overdueCount": len(overdue),
            "overdueBalance": overdue_balance,
            "overdueRatio": ratio(overdue_balance, balance),
            "nplCount": len(npl),
            "nplBalance": npl_balance,
            "nplRatio": ratio(npl_balance, balance),
            "byClass": {
                c: (
                    sum(1 for r in members if r["risk_class"] == c),
                    sum((r["outstanding_principal"] for r in members if r["risk_class"] == c), ZERO),
                )
                for c in RISK_CLASSES
            },
            "byBucket": {
                b: (
                    sum(1 for r in members if r["bucket"] == b),
                    sum((r["outstanding_principal"] for r in members if r["bucket"] == b), ZERO),
                )
                for b in BUCKETS
            },
        }
    return out


def metrics_rows(snapshot: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """portfolio_metrics rows (the contract's columns) for the seven API groupings."""
    rows: list[dict[str, Any]] = []
    for grouping in GROUP_COLUMN:
        for key, f in portfolio(snapshot, grouping).items():
            members = [r for r in snapshot if group_key(r, grouping) == key]
            paths = [list(r["branch_path"]) for r in members]
            common: list[str] = []
            for level in zip(*paths, strict=False):
                if len(set(level)) != 1:
                    break
                common.append(level[0])
            row: dict[str, Any] = {
                "grouping": grouping,
                "group_key": key,
                "group_label": f"Name of {key}",
                "branch_id": common[-1] if common else None,
                "product_code": key if grouping == "PRODUCT" else None,
                "tier1_branch_id": None,
                "branch_path": common,
                "loan_count": f["loanCount"],
                "outstanding_balance": f["balance"],
                "overdue_count": f["overdueCount"],
                "overdue_balance": f["overdueBalance"],
                "overdue_ratio": None if f["overdueRatio"] is None else Decimal(str(f["overdueRatio"])),
                "overdue_principal": sum((r["overdue_principal"] for r in members), ZERO),
                "npl_count": f["nplCount"],
                "npl_balance": f["nplBalance"],
                "npl_ratio": None if f["nplRatio"] is None else Decimal(str(f["nplRatio"])),
            }
            for c, (n, b) in f["byClass"].items():
                row[f"{c.lower()}_count"], row[f"{c.lower()}_balance"] = n, b
            for bucket, (n, b) in f["byBucket"].items():
                stem = bucket.lower().replace("+", "plus")
                row[f"{stem}_count"], row[f"{stem}_balance"] = n, b
            rows.append(row)
    return rows


def api_portfolio(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The API's portfolio rows keyed like `portfolio()` (money parsed back to Decimal)."""
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        out[row["key"]] = {
            "loanCount": row["loanCount"],
            "balance": Decimal(row["balance"]),
            "overdueCount": row["overdueCount"],
            "overdueBalance": Decimal(row["overdueBalance"]),
            "overdueRatio": row["overdueRatio"],
            "nplCount": row["nplCount"],
            "nplBalance": Decimal(row["nplBalance"]),
            "nplRatio": row["nplRatio"],
            "byClass": {c["riskClass"]: (c["loanCount"], Decimal(c["balance"])) for c in row["byClass"]},
            "byBucket": {b["bucket"]: (b["loanCount"], Decimal(b["balance"])) for b in row["byBucket"]},
        }
    return out


PORTFOLIO_FIELDS = """
  key label loanCount balance overdueCount overdueBalance overdueRatio nplCount nplBalance nplRatio
  byClass { riskClass loanCount balance } byBucket { bucket loanCount balance }
"""
