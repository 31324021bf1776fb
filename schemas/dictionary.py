"""The data dictionary (docs/data-dictionary.md), generated from the table contracts.

    .venv/bin/python -m schemas.dictionary > docs/data-dictionary.md

A test fails when the committed file and the contracts differ, so the docs cannot drift.
"""

from __future__ import annotations

from schemas.base import Table
from schemas.landing import LANDING_TABLES
from schemas.registry import LAKE_TABLES


def _table(table: Table) -> list[str]:
    lines = [f"### `{table.name}`", "", table.comment, ""]
    facts = []
    if table.key:
        facts.append(f"key: {', '.join(table.key)}")
    if table.partition_by:
        facts.append(f"partitioned by: {', '.join(table.partition_by)}")
    if table.sort_by:
        facts.append(f"sorted within each date by: {', '.join(table.sort_by)}")
    if table.layer == "landing":
        facts.append("optional extract (absent = empty)" if table.optional else "required extract")
    if facts:
        lines += ["*" + "; ".join(facts) + "*", ""]
    lines += ["| column | type | null | description |", "|---|---|---|---|"]
    for c in table.columns:
        notes = c.comment
        if c.allowed:
            notes += f" One of: {', '.join(c.allowed)}."
        if c.pii:
            notes += " **Personal data** (masked outside controlled tables)."
        if c.non_negative:
            notes += " Never negative."
        lines.append(f"| `{c.name}` | {c.dtype.simpleString()} | {'yes' if c.nullable else 'no'} | {notes} |")
    return [*lines, ""]


def render() -> str:
    out = [
        "# Data dictionary",
        "",
        "Generated from `schemas/` by `python -m schemas.dictionary`; do not edit by hand.",
        "",
        "## Landing zone (bank extracts)",
        "",
        "One folder per table under the landing directory: Parquet files, or UTF-8 CSV with a header.",
        "",
    ]
    for table in LANDING_TABLES:
        out += _table(table)
    out += ["## Lake (Delta tables)", "", "Under the lake directory, one Delta table per folder.", ""]
    for table in LAKE_TABLES:
        out += _table(table)
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    print(render(), end="")
